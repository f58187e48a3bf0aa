//! Signed client assertions for `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): the PKCS#8 key, its JWS algorithm, the key id, and the JWT.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use secrecy::zeroize::Zeroize;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The `client_assertion_type` that goes with every assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Envoy's choice, and long enough for a slow token endpoint; servers reject long-lived assertions.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// Below this an RSA signature is not worth having (NIST SP 800-57); ring refuses smaller keys anyway.
pub(crate) const MIN_RSA_BITS: usize = 2048;

const CONVERT_HINT: &str =
    "convert it with: openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem";

/// The JWS algorithms an assertion can be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    PS256,
    ES256,
    ES384,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Alg, KeyError> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlg(s.chars().take(40).collect()))
    }
}

/// What a private key is, as far as choosing an algorithm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa { bits: usize },
    P256,
    P384,
}

impl KeyType {
    /// The algorithm used when the config names none.
    pub(crate) fn default_alg(self) -> Alg {
        match self {
            KeyType::Rsa { .. } => Alg::RS256,
            KeyType::P256 => Alg::ES256,
            KeyType::P384 => Alg::ES384,
        }
    }

    fn allows(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (KeyType::Rsa { .. }, Alg::RS256 | Alg::PS256)
                | (KeyType::P256, Alg::ES256)
                | (KeyType::P384, Alg::ES384)
        )
    }

    fn allowed(self) -> &'static str {
        match self {
            KeyType::Rsa { .. } => "RS256 or PS256",
            KeyType::P256 => "ES256",
            KeyType::P384 => "ES384",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            KeyType::P256 => f.write_str("EC P-256"),
            KeyType::P384 => f.write_str("EC P-384"),
        }
    }
}

/// Why a key, a certificate or a signature could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file: no -----BEGIN ...----- line found")]
    NotPem,
    #[error("malformed PEM: {0}")]
    BadPem(&'static str),
    #[error("the private key is encrypted (BEGIN ENCRYPTED PRIVATE KEY); an unencrypted PKCS#8 key is needed: {CONVERT_HINT}")]
    Encrypted,
    #[error("the key is in PKCS#1 form (BEGIN RSA PRIVATE KEY); a PKCS#8 key (BEGIN PRIVATE KEY) is needed: {CONVERT_HINT}")]
    Pkcs1,
    #[error("the key is in SEC1 form (BEGIN EC PRIVATE KEY); a PKCS#8 key (BEGIN PRIVATE KEY) is needed: {CONVERT_HINT}")]
    Sec1,
    #[error("no PKCS#8 private key (BEGIN PRIVATE KEY) found; the file has: {found}")]
    NoPrivateKey { found: String },
    #[error("more than one private key in the file; keep exactly one")]
    SeveralKeys,
    #[error("unsupported key type {0}; use RSA (2048-4096 bits) or EC P-256 or P-384")]
    Unsupported(&'static str),
    #[error("the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed")]
    RsaTooSmall { bits: usize },
    #[error("the {key_type} key was rejected: {reason}")]
    Rejected {
        key_type: &'static str,
        reason: String,
    },
    #[error("unknown alg {0:?}; use RS256, PS256, ES256 or ES384")]
    UnknownAlg(String),
    #[error("alg {alg} does not match the {key} key; use {allowed}")]
    AlgMismatch {
        alg: Alg,
        key: KeyType,
        allowed: &'static str,
    },
    #[error("no certificate (BEGIN CERTIFICATE) found in the certificate file")]
    NoCertificate,
    #[error("the certificate is not valid DER: {0}")]
    BadCertificate(&'static str),
    #[error("the certificate's public key is not the private key's: the certificate belongs to another key")]
    CertificateMismatch,
    #[error("signing the assertion failed: {0}")]
    Sign(&'static str),
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key that signs assertions. Its Debug shows the key type only. A clone shares the parsed key.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<Pair>,
    key_type: KeyType,
}

/// At most this many parsed keys are kept by [`SigningKey::from_pem_cached`]; past it the least recently used goes.
pub(crate) const KEY_CACHE_CAPACITY: usize = 32;

/// Parsed keys by the SHA-256 of the PEM file they came from, with the use counter of their last use.
static KEY_CACHE: Mutex<Vec<([u8; 32], u64, SigningKey)>> = Mutex::new(Vec::new());
static KEY_CACHE_USES: AtomicU64 = AtomicU64::new(0);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads one unencrypted PKCS#8 key (RSA, EC P-256 or P-384) from PEM text; the caller reads the file.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let labels = begin_labels(pem_bytes);
        if labels.is_empty() {
            return Err(KeyError::NotPem);
        }
        if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
            return Err(KeyError::Encrypted);
        }
        let mut pkcs8: Option<Vec<u8>> = None;
        let mut several = false;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem_bytes) {
            let (kind, mut der) = match section {
                Ok(s) => s,
                Err(e) => {
                    if let Some(mut k) = pkcs8.take() {
                        k.zeroize();
                    }
                    return Err(KeyError::BadPem(pem_error(&e)));
                }
            };
            if kind == SectionKind::PrivateKey {
                if pkcs8.is_some() {
                    several = true;
                    der.zeroize();
                } else {
                    pkcs8 = Some(der);
                }
            } else {
                der.zeroize();
            }
        }
        let Some(mut der) = pkcs8 else {
            return Err(if labels.iter().any(|l| l == "RSA PRIVATE KEY") {
                KeyError::Pkcs1
            } else if labels.iter().any(|l| l == "EC PRIVATE KEY") {
                KeyError::Sec1
            } else {
                KeyError::NoPrivateKey {
                    found: labels.join(", "),
                }
            });
        };
        let result = if several {
            Err(KeyError::SeveralKeys)
        } else {
            Self::from_pkcs8_der(&der)
        };
        der.zeroize();
        result
    }

    /// [`SigningKey::from_pem`], parsed once per file content: the key file is still looked at for every request
    /// (a rotation is used at once), but a content seen before reuses its parsed key, keyed by the SHA-256 of the bytes
    /// (parsing and validating a 2048-bit RSA key costs ~0.7 ms). The fingerprint is compared, never shown.
    pub(crate) fn from_pem_cached(pem_bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, pem_bytes).as_ref());
        let lock = || KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let used = KEY_CACHE_USES.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = lock().iter_mut().find(|(d, _, _)| *d == digest) {
            entry.1 = used;
            return Ok(entry.2.clone());
        }
        // Parsed outside the lock; a failure is not cached (the next request reads and parses again).
        let key = Self::from_pem(pem_bytes)?;
        let mut cache = lock();
        if !cache.iter().any(|(d, _, _)| *d == digest) {
            if cache.len() >= KEY_CACHE_CAPACITY {
                if let Some(oldest) = (0..cache.len()).min_by_key(|&i| cache[i].1) {
                    cache.swap_remove(oldest);
                }
            }
            cache.push((digest, used, key.clone()));
        }
        Ok(key)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        let info =
            pkcs8_info(der).ok_or(KeyError::BadPem("the PRIVATE KEY block is not PKCS#8"))?;
        match info {
            Pkcs8Kind::Rsa { bits } => {
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::RsaTooSmall { bits });
                }
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| KeyError::Rejected {
                    key_type: "RSA",
                    reason: e.to_string(),
                })?;
                let bits = pair.public().modulus_len() * 8;
                Ok(SigningKey {
                    pair: Arc::new(Pair::Rsa(pair)),
                    key_type: KeyType::Rsa { bits },
                })
            }
            Pkcs8Kind::P256 | Pkcs8Kind::P384 => {
                let (alg, key_type, name) = if info == Pkcs8Kind::P256 {
                    (
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        KeyType::P256,
                        "EC P-256",
                    )
                } else {
                    (
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                        KeyType::P384,
                        "EC P-384",
                    )
                };
                let pair =
                    EcdsaKeyPair::from_pkcs8(alg, der, &SystemRandom::new()).map_err(|e| {
                        KeyError::Rejected {
                            key_type: name,
                            reason: e.to_string(),
                        }
                    })?;
                Ok(SigningKey {
                    pair: Arc::new(Pair::Ec(pair)),
                    key_type,
                })
            }
            Pkcs8Kind::Other(name) => Err(KeyError::Unsupported(name)),
        }
    }

    pub(crate) fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The public key as ring and X.509 carry it: DER RSAPublicKey for RSA, the uncompressed point for EC.
    pub(crate) fn public_key(&self) -> &[u8] {
        match &*self.pair {
            Pair::Rsa(p) => p.public_key().as_ref(),
            Pair::Ec(p) => p.public_key().as_ref(),
        }
    }

    /// `alg` if the key can sign with it, else the default for the key type; an error names both.
    pub(crate) fn resolve_alg(&self, alg: Option<Alg>) -> Result<Alg, KeyError> {
        let alg = alg.unwrap_or(self.key_type.default_alg());
        if self.key_type.allows(alg) {
            Ok(alg)
        } else {
            Err(KeyError::AlgMismatch {
                alg,
                key: self.key_type,
                allowed: self.key_type.allowed(),
            })
        }
    }

    fn sign(&self, alg: Alg, rng: &SystemRandom, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        match (&*self.pair, alg) {
            (Pair::Rsa(p), Alg::RS256 | Alg::PS256) => {
                let padding: &'static dyn signature::RsaEncoding = if alg == Alg::RS256 {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut sig = vec![0u8; p.public().modulus_len()];
                p.sign(padding, rng, msg, &mut sig)
                    .map_err(|_| KeyError::Sign("RSA signing failed"))?;
                Ok(sig)
            }
            (Pair::Ec(p), Alg::ES256 | Alg::ES384) => p
                .sign(rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign("ECDSA signing failed")),
            _ => Err(KeyError::AlgMismatch {
                alg,
                key: self.key_type,
                allowed: self.key_type.allowed(),
            }),
        }
    }
}

/// How the server finds the verification key: nothing (it tries its keys for the alg), `kid`, or `x5t#S256`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyId {
    #[default]
    None,
    Kid(String),
    X5tS256(String),
}

impl KeyId {
    /// `x5t#S256` of the first certificate in `cert_pem` (base64url SHA-256 of its DER), after checking
    /// that the certificate carries `key`'s public key.
    pub(crate) fn from_certificate_pem(
        cert_pem: &[u8],
        key: &SigningKey,
    ) -> Result<KeyId, KeyError> {
        if begin_labels(cert_pem).is_empty() {
            return Err(KeyError::NotPem);
        }
        let mut cert = None;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(cert_pem) {
            let (kind, der) = section.map_err(|e| KeyError::BadPem(pem_error(&e)))?;
            if kind == SectionKind::Certificate {
                cert = Some(der);
                break;
            }
        }
        let der = cert.ok_or(KeyError::NoCertificate)?;
        let spki_key = certificate_public_key(&der)?;
        if spki_key != key.public_key() {
            return Err(KeyError::CertificateMismatch);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        Ok(KeyId::X5tS256(URL_SAFE_NO_PAD.encode(digest.as_ref())))
    }
}

/// Signs a fresh assertion for every request. Debug shows the algorithm and key id, never the key.
#[derive(Debug)]
pub struct AssertionSigner {
    key: SigningKey,
    alg: Alg,
    key_id: KeyId,
    rng: SystemRandom,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl AssertionSigner {
    /// `alg` `None` takes the key type's default; a mismatching `alg` is an error naming both.
    pub fn new(key: SigningKey, alg: Option<Alg>, key_id: KeyId) -> Result<Self, KeyError> {
        let alg = key.resolve_alg(alg)?;
        Ok(AssertionSigner {
            key,
            alg,
            key_id,
            rng: SystemRandom::new(),
        })
    }

    #[cfg(test)]
    pub(crate) fn alg(&self) -> Alg {
        self.alg
    }

    /// A compact JWS with `iss` = `sub` = `client_id`, `aud` = `audience` (one string), `iat` = `now`,
    /// `exp` = `now` + `lifetime` (at least 1 s) and a fresh 128-bit `jti`. Call it right before the request.
    pub fn sign_assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<SecretString, KeyError> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| KeyError::Sign("the system random generator failed"))?;
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (kid, x5t_s256) = match &self.key_id {
            KeyId::None => (None, None),
            KeyId::Kid(k) => (Some(k.as_str()), None),
            KeyId::X5tS256(t) => (None, Some(t.as_str())),
        };
        let header = Header {
            alg: self.alg.as_str(),
            typ: "JWT",
            kid,
            x5t_s256,
        };
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: audience,
            iat,
            exp: iat.saturating_add(lifetime.as_secs().max(1)),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        // Serializing these two structs of strings and integers cannot fail.
        let header = serde_json::to_vec(&header).map_err(|_| KeyError::Sign("header"))?;
        let claims = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign("claims"))?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = self.key.sign(self.alg, &self.rng, jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(SecretString::from(jws))
    }
}

/// The labels of every `-----BEGIN X-----` line, so that errors can say what the file holds.
fn begin_labels(pem_bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(pem_bytes)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
        })
        .map(|l| l.chars().take(40).collect())
        .collect()
}

/// A fixed description: the parser's own messages may quote a line of the (secret) input.
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no matching END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "unreadable",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pkcs8Kind {
    Rsa { bits: usize },
    P256,
    P384,
    Other(&'static str),
}

// DER contents of the OIDs that decide the key type.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_CONTEXT_0: u8 = 0xa0;

/// One DER TLV: (tag, contents, rest). Enough to read key types and certificate keys, nothing more.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = der_next(input)?;
    (t == tag).then_some((content, rest))
}

/// PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier { OID, params }, OCTET STRING key, ... }
fn pkcs8_info(der: &[u8]) -> Option<Pkcs8Kind> {
    let (info, _) = der_expect(der, TAG_SEQUENCE)?;
    let (_version, rest) = der_expect(info, TAG_INTEGER)?;
    let (alg_id, rest) = der_expect(rest, TAG_SEQUENCE)?;
    let (oid, params) = der_expect(alg_id, TAG_OID)?;
    Some(match oid {
        OID_RSA => {
            let (key, _) = der_expect(rest, TAG_OCTET_STRING)?;
            let (rsa, _) = der_expect(key, TAG_SEQUENCE)?;
            let (_v, rsa) = der_expect(rsa, TAG_INTEGER)?;
            let (modulus, _) = der_expect(rsa, TAG_INTEGER)?;
            Pkcs8Kind::Rsa {
                bits: integer_bits(modulus),
            }
        }
        OID_EC => match der_expect(params, TAG_OID)?.0 {
            OID_P256 => Pkcs8Kind::P256,
            OID_P384 => Pkcs8Kind::P384,
            OID_P521 => Pkcs8Kind::Other("EC P-521"),
            _ => Pkcs8Kind::Other("EC on an unknown curve"),
        },
        OID_RSA_PSS => Pkcs8Kind::Other(
            "RSASSA-PSS-only (made by `genpkey -algorithm RSA-PSS`; a plain RSA key signs PS256 too)",
        ),
        OID_ED25519 => Pkcs8Kind::Other("Ed25519"),
        OID_ED448 => Pkcs8Kind::Other("Ed448"),
        _ => Pkcs8Kind::Other("with an unknown algorithm identifier"),
    })
}

fn integer_bits(int: &[u8]) -> usize {
    let int = match int.iter().position(|&b| b != 0) {
        Some(i) => &int[i..],
        None => return 0,
    };
    int.len() * 8 - int[0].leading_zeros() as usize
}

/// The subjectPublicKey bits of an X.509 certificate: Certificate { tbs { [0] version?, serial,
/// signature, issuer, validity, subject, SubjectPublicKeyInfo { algorithm, BIT STRING } ... } ... }.
fn certificate_public_key(der: &[u8]) -> Result<&[u8], KeyError> {
    let bad = KeyError::BadCertificate;
    let (cert, _) = der_expect(der, TAG_SEQUENCE).ok_or(bad("not a SEQUENCE"))?;
    let (tbs, _) = der_expect(cert, TAG_SEQUENCE).ok_or(bad("no tbsCertificate"))?;
    let mut rest = tbs;
    if let Some((TAG_CONTEXT_0, _, r)) = der_next(rest) {
        rest = r;
    }
    let (_serial, r) = der_expect(rest, TAG_INTEGER).ok_or(bad("no serial number"))?;
    rest = r;
    for what in [
        "no signature algorithm",
        "no issuer",
        "no validity",
        "no subject",
    ] {
        let (_, r) = der_expect(rest, TAG_SEQUENCE).ok_or(bad(what))?;
        rest = r;
    }
    let (spki, _) = der_expect(rest, TAG_SEQUENCE).ok_or(bad("no subjectPublicKeyInfo"))?;
    let (_alg, r) = der_expect(spki, TAG_SEQUENCE).ok_or(bad("no key algorithm"))?;
    let (bits, _) = der_expect(r, TAG_BIT_STRING).ok_or(bad("no subjectPublicKey"))?;
    match bits.split_first() {
        Some((0, key)) => Ok(key),
        _ => Err(bad("subjectPublicKey has unused bits")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::Value;
    use std::collections::HashSet;

    /// A fixed test key made once by openssl (`testdata/make-keys.sh`), independently of this module.
    struct TestKey {
        pkcs8: &'static str,
        /// The public key in ring's verification format, exported by openssl, not derived by this module.
        public: &'static [u8],
    }

    fn key(name: &str) -> TestKey {
        macro_rules! testdata {
            ($name:literal) => {
                TestKey {
                    pkcs8: include_str!(concat!("testdata/", $name, ".pem")),
                    public: include_bytes!(concat!("testdata/", $name, ".public")),
                }
            };
        }
        match name {
            "rsa" => testdata!("rsa"),
            "rsa-other" => testdata!("rsa-other"),
            "p256" => testdata!("p256"),
            "p384" => testdata!("p384"),
            _ => unreachable!("no test key {name}"),
        }
    }

    fn verify_alg(alg: Alg) -> &'static dyn signature::VerificationAlgorithm {
        match alg {
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    }

    /// Splits a JWS, checks its signature with `public`, and returns (header, claims).
    fn verified(jws: &str, alg: Alg, public: &[u8]) -> (Value, Value) {
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3, "compact JWS has three parts");
        let signed = format!("{}.{}", parts[0], parts[1]);
        let sig = URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("signature base64url");
        signature::UnparsedPublicKey::new(verify_alg(alg), public)
            .verify(signed.as_bytes(), &sig)
            .unwrap_or_else(|_| panic!("{alg} signature does not verify"));
        (decode_part(parts[0]), decode_part(parts[1]))
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn every_alg_signs_an_assertion_that_verifies_with_the_independently_exported_public_key() {
        for (name, alg, key_type) in [
            ("rsa", Alg::RS256, "RSA 2048-bit"),
            ("rsa", Alg::PS256, "RSA 2048-bit"),
            ("p256", Alg::ES256, "EC P-256"),
            ("p384", Alg::ES384, "EC P-384"),
        ] {
            let k = key(name);
            let signing = SigningKey::from_pem(k.pkcs8.as_bytes()).expect("key loads");
            assert_eq!(signing.key_type().to_string(), key_type);
            assert_eq!(signing.public_key(), k.public);
            let signer = AssertionSigner::new(signing, Some(alg), KeyId::None).expect("alg fits");
            let jws = signer
                .sign_assertion(
                    "my-client",
                    "https://idp.example/token",
                    at(1_700_000_000),
                    DEFAULT_LIFETIME,
                )
                .expect("signs");
            let (header, claims) = verified(jws.expose_secret(), alg, k.public);
            assert_eq!(
                header,
                serde_json::json!({"alg": alg.as_str(), "typ": "JWT"})
            );
            assert_eq!(claims["iss"], "my-client");
            assert_eq!(claims["sub"], "my-client");
            assert_eq!(claims["aud"], "https://idp.example/token", "one string");
            assert_eq!(claims["iat"], 1_700_000_000u64);
            assert_eq!(claims["exp"], 1_700_000_060u64);
            let keys: HashSet<&str> = claims
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                HashSet::from(["iss", "sub", "aud", "iat", "exp", "jti"])
            );
        }
    }

    #[test]
    fn a_signature_from_another_key_does_not_verify() {
        // Guards the verification helper itself: it must be able to say no.
        let signer = AssertionSigner::new(
            SigningKey::from_pem(key("rsa").pkcs8.as_bytes()).unwrap(),
            None,
            KeyId::None,
        )
        .unwrap();
        let jws = signer
            .sign_assertion("c", "a", at(1), DEFAULT_LIFETIME)
            .unwrap();
        let parts: Vec<&str> = jws.expose_secret().split('.').collect();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let other = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            key("rsa-other").public,
        );
        assert!(other
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .is_err());
    }

    #[test]
    fn default_alg_follows_the_key_type() {
        for (name, alg) in [
            ("rsa", Alg::RS256),
            ("p256", Alg::ES256),
            ("p384", Alg::ES384),
        ] {
            let k = SigningKey::from_pem(key(name).pkcs8.as_bytes()).unwrap();
            let signer = AssertionSigner::new(k, None, KeyId::None).unwrap();
            assert_eq!(signer.alg(), alg);
            let jws = signer
                .sign_assertion("c", "a", at(10), DEFAULT_LIFETIME)
                .unwrap();
            let (header, _) = verified(jws.expose_secret(), alg, key(name).public);
            assert_eq!(header["alg"], alg.as_str());
        }
    }

    #[test]
    fn an_alg_that_does_not_fit_the_key_is_an_error_naming_both() {
        for (name, alg, key_text, allowed) in [
            ("rsa", Alg::ES256, "RSA 2048-bit", "RS256 or PS256"),
            ("p256", Alg::RS256, "EC P-256", "ES256"),
            ("p256", Alg::ES384, "EC P-256", "ES256"),
            ("p384", Alg::ES256, "EC P-384", "ES384"),
            ("p384", Alg::PS256, "EC P-384", "ES384"),
        ] {
            let k = SigningKey::from_pem(key(name).pkcs8.as_bytes()).unwrap();
            let err = AssertionSigner::new(k, Some(alg), KeyId::None).unwrap_err();
            assert!(matches!(err, KeyError::AlgMismatch { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(alg.as_str()) && msg.contains(key_text) && msg.contains(allowed),
                "{msg}"
            );
        }
    }

    #[test]
    fn alg_names_parse_exactly() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>().unwrap(), alg);
        }
        for bad in ["rs256", "HS256", "none", "", "ES512"] {
            assert!(bad.parse::<Alg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn jti_is_fresh_128_bit_base64url_every_call() {
        let signer = AssertionSigner::new(
            SigningKey::from_pem(key("p256").pkcs8.as_bytes()).unwrap(),
            None,
            KeyId::None,
        )
        .unwrap();
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let jws = signer
                .sign_assertion("c", "a", at(1_700_000_000), DEFAULT_LIFETIME)
                .unwrap();
            let claims = decode_part(jws.expose_secret().split('.').nth(1).unwrap());
            let jti = claims["jti"].as_str().unwrap().to_string();
            let raw = URL_SAFE_NO_PAD.decode(&jti).expect("jti is base64url");
            assert!(raw.len() * 8 >= 128, "jti has {} bits", raw.len() * 8);
            assert!(seen.insert(jti), "a jti repeated");
        }
    }

    #[test]
    fn lifetime_sets_exp_and_never_drops_below_one_second() {
        let signer = AssertionSigner::new(
            SigningKey::from_pem(key("p256").pkcs8.as_bytes()).unwrap(),
            None,
            KeyId::None,
        )
        .unwrap();
        for (lifetime, exp) in [
            (Duration::from_secs(300), 1300),
            (Duration::from_millis(1500), 1001),
            (Duration::ZERO, 1001),
        ] {
            let jws = signer.sign_assertion("c", "a", at(1000), lifetime).unwrap();
            let claims = decode_part(jws.expose_secret().split('.').nth(1).unwrap());
            assert_eq!(claims["iat"], 1000);
            assert_eq!(claims["exp"], exp, "{lifetime:?}");
        }
    }

    #[test]
    fn a_key_content_is_parsed_once_and_a_new_content_is_parsed_anew() {
        let pem = key("rsa").pkcs8.as_bytes();
        let first = SigningKey::from_pem_cached(pem).unwrap();
        let again = SigningKey::from_pem_cached(pem).unwrap();
        assert!(
            Arc::ptr_eq(&first.pair, &again.pair),
            "the same bytes were parsed again"
        );
        // A rotated key (other bytes at the same path) is parsed, never served from the cache.
        let other = SigningKey::from_pem_cached(key("rsa-other").pkcs8.as_bytes()).unwrap();
        assert!(!Arc::ptr_eq(&first.pair, &other.pair));
        assert_ne!(first.public_key(), other.public_key());
        // A key that does not parse is an error each time, and its failure is not kept.
        let half = &pem[..pem.len() / 2];
        assert!(SigningKey::from_pem_cached(half).is_err());
        assert!(SigningKey::from_pem_cached(half).is_err());
        let back = SigningKey::from_pem_cached(pem).unwrap();
        assert_eq!(back.public_key(), first.public_key());
    }

    #[test]
    fn kid_goes_into_the_header() {
        let signer = AssertionSigner::new(
            SigningKey::from_pem(key("p384").pkcs8.as_bytes()).unwrap(),
            None,
            KeyId::Kid("key-2026".into()),
        )
        .unwrap();
        let jws = signer
            .sign_assertion("c", "a", at(1), DEFAULT_LIFETIME)
            .unwrap();
        let (header, _) = verified(jws.expose_secret(), Alg::ES384, key("p384").public);
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES384", "typ": "JWT", "kid": "key-2026"})
        );
    }

    fn self_signed(pem: &str, alg: &'static rcgen::SignatureAlgorithm) -> rcgen::Certificate {
        let kp = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(pem, alg).expect("rcgen key");
        rcgen::CertificateParams::new(vec!["client.example".to_string()])
            .unwrap()
            .self_signed(&kp)
            .expect("self-signed")
    }

    #[test]
    fn x5t_s256_is_the_certificate_der_digest_and_goes_into_the_header() {
        for (name, rc_alg, alg) in [
            ("rsa", &rcgen::PKCS_RSA_SHA256, Alg::PS256),
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256, Alg::ES256),
            ("p384", &rcgen::PKCS_ECDSA_P384_SHA384, Alg::ES384),
        ] {
            let cert = self_signed(key(name).pkcs8, rc_alg);
            let signing = SigningKey::from_pem(key(name).pkcs8.as_bytes()).unwrap();
            let id = KeyId::from_certificate_pem(cert.pem().as_bytes(), &signing).expect("matches");
            let want = URL_SAFE_NO_PAD
                .encode(ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref());
            assert_eq!(id, KeyId::X5tS256(want.clone()));
            assert_eq!(want.len(), 43, "SHA-256 in base64url");
            let signer = AssertionSigner::new(signing, Some(alg), id).unwrap();
            let jws = signer
                .sign_assertion("c", "a", at(1), DEFAULT_LIFETIME)
                .unwrap();
            let (header, _) = verified(jws.expose_secret(), alg, key(name).public);
            assert_eq!(
                header,
                serde_json::json!({"alg": alg.as_str(), "typ": "JWT", "x5t#S256": want})
            );
        }
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let cert = self_signed(key("p256").pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256);
        for other in ["rsa", "p384"] {
            let signing = SigningKey::from_pem(key(other).pkcs8.as_bytes()).unwrap();
            let err = KeyId::from_certificate_pem(cert.pem().as_bytes(), &signing).unwrap_err();
            assert!(matches!(err, KeyError::CertificateMismatch), "{err:?}");
        }
        let rsa_cert = self_signed(key("rsa").pkcs8, &rcgen::PKCS_RSA_SHA256);
        let other_rsa = SigningKey::from_pem(key("rsa-other").pkcs8.as_bytes()).unwrap();
        assert!(matches!(
            KeyId::from_certificate_pem(rsa_cert.pem().as_bytes(), &other_rsa),
            Err(KeyError::CertificateMismatch)
        ));
        let signing = SigningKey::from_pem(key("p256").pkcs8.as_bytes()).unwrap();
        assert!(matches!(
            KeyId::from_certificate_pem(key("p256").pkcs8.as_bytes(), &signing),
            Err(KeyError::NoCertificate)
        ));
        assert!(matches!(
            KeyId::from_certificate_pem(b"garbage", &signing),
            Err(KeyError::NotPem)
        ));
    }

    #[test]
    fn bad_pems_get_errors_that_say_what_to_do() {
        let cases: Vec<(String, &str)> = vec![
            ("just text\n".into(), "not a PEM file"),
            (String::new(), "not a PEM file"),
            (
                include_str!("testdata/rsa-encrypted.pem").into(),
                "encrypted",
            ),
            (include_str!("testdata/rsa-pkcs1.pem").into(), "PKCS#1"),
            (include_str!("testdata/p256-sec1.pem").into(), "SEC1"),
            (
                self_signed(key("p256").pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256).pem(),
                "the file has: CERTIFICATE",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nnot*base64\n-----END PRIVATE KEY-----\n".into(),
                "not valid base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIB\n".into(),
                "no matching END line",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n".into(),
                "not PKCS#8",
            ),
            (
                format!("{}{}", key("p256").pkcs8, key("p384").pkcs8),
                "more than one",
            ),
        ];
        for (pem, want) in cases {
            let err = SigningKey::from_pem(pem.as_bytes()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
            if want == "encrypted" || want == "PKCS#1" || want == "SEC1" {
                assert!(msg.contains("openssl pkcs8 -topk8 -nocrypt"), "{msg}");
            }
        }
    }

    #[test]
    fn small_rsa_and_unsupported_key_types_are_refused() {
        let err = SigningKey::from_pem(include_bytes!("testdata/rsa-1024.pem")).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaTooSmall { bits: 1024 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1024 bits"), "{err}");

        let err = SigningKey::from_pem(include_bytes!("testdata/p521.pem")).unwrap_err();
        assert!(err.to_string().contains("P-521"), "{err}");

        let err = SigningKey::from_pem(include_bytes!("testdata/ed25519.pem")).unwrap_err();
        assert!(err.to_string().contains("Ed25519"), "{err}");
    }

    #[test]
    fn nothing_secret_in_debug_or_errors() {
        let k = key("rsa");
        let signing = SigningKey::from_pem(k.pkcs8.as_bytes()).unwrap();
        let debug = format!("{signing:?}");
        assert_eq!(debug, "SigningKey { type: Rsa { bits: 2048 }, .. }");
        let signer = AssertionSigner::new(signing, None, KeyId::Kid("k1".into())).unwrap();
        let jws = signer
            .sign_assertion("c", "a", at(1), DEFAULT_LIFETIME)
            .unwrap();
        let debug = format!("{signer:?} {jws:?}");
        let body: String = k
            .pkcs8
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for part in jws.expose_secret().split('.') {
            assert!(!debug.contains(part), "{debug}");
        }
        for chunk in body.as_bytes().chunks(16) {
            assert!(
                !debug.contains(std::str::from_utf8(chunk).unwrap()),
                "{debug}"
            );
        }
        // A corrupted key: the error text must not quote any of it.
        let broken = k.pkcs8.replacen("MII", "M*I", 1);
        let err = SigningKey::from_pem(broken.as_bytes()).unwrap_err();
        let text = format!("{err} {err:?}");
        for chunk in body.as_bytes().chunks(16) {
            assert!(
                !text.contains(std::str::from_utf8(chunk).unwrap()),
                "{text}"
            );
        }
    }

    #[test]
    fn der_reader_handles_long_lengths_and_refuses_truncation() {
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        let (tag, content, rest) = der_next(&long).unwrap();
        assert_eq!((tag, content.len(), rest.len()), (0x04, 256, 0));
        assert!(der_next(&long[..100]).is_none());
        assert!(der_next(&[0x30, 0x80]).is_none(), "indefinite length");
        assert_eq!(integer_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(integer_bits(&[0x01]), 1);
    }
}
