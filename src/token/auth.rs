//! Client authentication (RFC 6749 §2.3): one `ClientAuth` per token that takes its credentials as they are at each request, adds them to it, names the files it reads and every form of them to redact.
//!
//! A new method is a variant here and in `config::raw::RawAuthMethod`, and the compiler then names every match that
//! must decide about it (docs/development.md lists them): `apply` gets the request being built and a `RequestContext`
//! (the token endpoint, the request's time), which is all a signed assertion (`private_key_jwt`) or an assertion read
//! from a file needs.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use secrecy::zeroize::Zeroize;

use super::jws::{Alg, AssertionSigner, KeyError, KeyId, SigningKey, JWT_BEARER};
use crate::credentials::{read_file_bytes, CredentialError, CredentialSource, Credentials};
use crate::fsread::{ReadError, CREDENTIAL_LIMIT, PEM_LIMIT};

/// What a method may need besides its own credentials, known only when a request is made.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// Where the request goes (a signed assertion's audience).
    pub token_url: &'a Url,
    /// When the request is made (a signed assertion's `iat` and `exp`).
    pub now: SystemTime,
}

/// A form field: its value is shown nowhere when it is a secret.
enum Value {
    Plain(String),
    Secret(SecretString),
}

/// One token request as it is put together: the grant and the client authentication add to it, the client sends it.
/// Every secret added is also remembered in the forms in which a server could echo it, for [`Self::redaction_forms`].
#[derive(Default)]
pub struct TokenRequest {
    fields: Vec<(String, Value)>,
    authorization: Option<SecretString>,
    redact: Vec<String>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.fields.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TokenRequest")
            .field("fields", &names)
            .field("authorization", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenRequest {
    /// A form field that is not a secret (`grant_type`, `scope`...).
    pub fn field(&mut self, name: &str, value: &str) {
        self.fields
            .push((name.to_string(), Value::Plain(value.to_string())));
    }

    /// A form field that is a secret or identifies the client (`client_id`, `client_secret`, `client_assertion`...).
    pub(crate) fn secret_field(&mut self, name: &str, value: &SecretString) {
        self.redact(value.expose_secret());
        self.fields
            .push((name.to_string(), Value::Secret(value.clone())));
    }

    /// The `Authorization` header: `scheme credential`; the credential part is redacted as it is.
    pub(crate) fn set_authorization(&mut self, scheme: &str, credential: &str) {
        self.redact.push(credential.to_string());
        self.authorization = Some(SecretString::from(format!("{scheme} {credential}")));
    }

    /// Remembers a secret that went out: as it is, form-encoded (`+` for space) and percent-encoded (`%20`).
    pub(crate) fn redact(&mut self, secret: &str) {
        let form = form_encode(secret);
        self.redact.push(form.replace('+', "%20"));
        self.redact.push(form);
        self.redact.push(secret.to_string());
    }

    pub(crate) fn authorization(&self) -> Option<&SecretString> {
        self.authorization.as_ref()
    }

    /// The `application/x-www-form-urlencoded` body.
    pub fn body(&self) -> String {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            match v {
                Value::Plain(v) => f.append_pair(k, v),
                Value::Secret(v) => f.append_pair(k, v.expose_secret()),
            };
        }
        f.finish()
    }

    /// Every form in which a secret of this request left, longest first, so that no form is left half-replaced by a
    /// shorter one. Forms shorter than 3 characters are left out: replacing them would garble any message.
    pub(crate) fn redaction_forms(&self) -> Vec<String> {
        let mut forms: Vec<String> = self
            .redact
            .iter()
            .filter(|s| s.len() >= 3)
            .cloned()
            .collect();
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        forms.dedup();
        forms
    }
}

/// Why a request could not be authenticated. Permanent until the credentials or config change.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("the client id contains ':' which HTTP Basic cannot carry raw; use auth_method: client_secret_basic")]
    ColonInRawBasicId,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("{}: not a JWT (three base64url parts with a JSON payload); the client assertion file must hold one signed token", path.display())]
    NotAJwt { path: PathBuf },
    #[error("the client assertion in {} expired at {exp} (unix time) and was not rotated; check what writes it (kubelet projects the service-account token)", path.display())]
    AssertionExpired { path: PathBuf, exp: u64 },
}

/// Where a signed assertion's `kid`/`x5t#S256` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIdSource {
    None,
    Kid(String),
    /// `x5t#S256` of this certificate, which must carry the private key's public key.
    Certificate(PathBuf),
}

/// The `aud` of a signed assertion: always one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionAudience {
    TokenEndpoint,
    Literal(String),
}

/// `private_key_jwt` (RFC 7523 §2.2): the key file is looked at for every request, so a rotated key is used at the next.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateKeyJwt {
    pub client_id: CredentialSource,
    pub private_key_file: PathBuf,
    pub alg: Option<Alg>,
    pub key_id: KeyIdSource,
    pub audience: AssertionAudience,
    pub lifetime: Duration,
}

impl PrivateKeyJwt {
    /// The key (and certificate) as they are now ([`read_file_bytes`]); a key content parsed before is reused
    /// ([`SigningKey::from_pem_cached`]); the copy of the PEM bytes used here is wiped once used.
    pub(crate) fn signer(&self) -> Result<AssertionSigner, AuthError> {
        self.signer_from(&mut Reads::new(""))
    }

    fn signer_from(&self, reads: &mut Reads) -> Result<AssertionSigner, AuthError> {
        let key_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthError::Key { path, source }
        };
        let mut pem = reads.file(&self.private_key_file, PEM_LIMIT)?;
        let key = SigningKey::from_pem_cached(&pem);
        pem.zeroize();
        let key = key.map_err(key_err(&self.private_key_file))?;
        let key_id = match &self.key_id {
            KeyIdSource::None => KeyId::None,
            KeyIdSource::Kid(k) => KeyId::Kid(k.clone()),
            KeyIdSource::Certificate(cert) => {
                let pem = reads.file(cert, PEM_LIMIT)?;
                KeyId::from_certificate_pem(&pem, &key).map_err(key_err(cert))?
            }
        };
        AssertionSigner::new(key, self.alg, key_id).map_err(key_err(&self.private_key_file))
    }

    fn audience<'a>(&'a self, ctx: &RequestContext<'a>) -> &'a str {
        match &self.audience {
            AssertionAudience::TokenEndpoint => ctx.token_url.as_str(),
            AssertionAudience::Literal(a) => a,
        }
    }
}

/// Reads a client assertion file (a JWT someone else signed, e.g. the projected service-account token), bounded,
/// and checks that it looks like a JWT; `exp` is the payload's `exp`, read without verifying the signature.
pub(crate) fn read_assertion(path: &Path) -> Result<(SecretString, Option<u64>), AuthError> {
    assertion_of(path, read_file_bytes(path, ASSERTION_LIMIT)?)
}

/// The most bytes a client assertion file may have.
const ASSERTION_LIMIT: u64 = CREDENTIAL_LIMIT;

/// [`read_assertion`] of bytes already read from `path`.
fn assertion_of(path: &Path, mut bytes: Vec<u8>) -> Result<(SecretString, Option<u64>), AuthError> {
    let text = String::from_utf8(std::mem::take(&mut bytes)).map_err(|e| {
        e.into_bytes().zeroize();
        AuthError::NotAJwt {
            path: path.to_path_buf(),
        }
    })?;
    let text = SecretString::from(text);
    let trimmed = text.expose_secret().trim();
    let exp = super::jwt::exp_secs(trimmed).ok_or_else(|| AuthError::NotAJwt {
        path: path.to_path_buf(),
    })?;
    Ok((SecretString::from(trimmed.to_string()), exp))
}

/// The credentials of one request, each read once: what is read is also hashed, in the order read, so the request
/// and the fingerprint that notices a rotation ([`ClientAuth::fingerprint`]) come from the same read.
struct Reads {
    h: std::collections::hash_map::DefaultHasher,
}

impl Reads {
    fn new(method: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        method.hash(&mut h);
        Reads { h }
    }

    fn source(&mut self, src: &CredentialSource) -> Result<SecretString, CredentialError> {
        let value = src.load()?;
        value.expose_secret().hash(&mut self.h);
        Ok(value)
    }

    fn credentials(
        &mut self,
        id: &CredentialSource,
        secret: &CredentialSource,
    ) -> Result<Credentials, CredentialError> {
        Ok(Credentials {
            client_id: self.source(id)?,
            client_secret: self.source(secret)?,
        })
    }

    fn file(&mut self, path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
        let bytes = read_file_bytes(path, limit)?;
        bytes.hash(&mut self.h);
        Ok(bytes)
    }

    fn finish(self) -> u64 {
        self.h.finish()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// How the client proves who it is to the token endpoint. `Debug` never shows a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1: id and secret form-urlencoded, then HTTP Basic.
    SecretBasic {
        client_id: CredentialSource,
        client_secret: CredentialSource,
    },
    /// The reference client's HTTP Basic: id and secret as they are.
    SecretBasicRaw {
        client_id: CredentialSource,
        client_secret: CredentialSource,
    },
    /// id and secret in the form body.
    SecretPost {
        client_id: CredentialSource,
        client_secret: CredentialSource,
    },
    /// A public client (RFC 6749 §2.1): no credential, the `client_id` field only when one is given.
    None { client_id: Option<CredentialSource> },
    /// RFC 7523 §2.2: a fresh assertion signed with our key for every request.
    PrivateKeyJwt(Box<PrivateKeyJwt>),
    /// An assertion someone else signed (the projected service-account token), as the file is at each request.
    ClientAssertionFile {
        client_id: CredentialSource,
        path: PathBuf,
    },
}

impl ClientAuth {
    /// The config's `auth_method` value for this method.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic { .. } => "client_secret_basic",
            ClientAuth::SecretBasicRaw { .. } => "client_secret_basic_raw",
            ClientAuth::SecretPost { .. } => "client_secret_post",
            ClientAuth::None { .. } => "none",
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
            ClientAuth::ClientAssertionFile { .. } => "client_assertion_file",
        }
    }

    /// Where the client id comes from, if this method sends one.
    pub(crate) fn client_id(&self) -> Option<&CredentialSource> {
        match self {
            ClientAuth::SecretBasic { client_id, .. }
            | ClientAuth::SecretBasicRaw { client_id, .. }
            | ClientAuth::SecretPost { client_id, .. }
            | ClientAuth::ClientAssertionFile { client_id, .. } => Some(client_id),
            ClientAuth::PrivateKeyJwt(k) => Some(&k.client_id),
            ClientAuth::None { client_id } => client_id.as_ref(),
        }
    }

    /// The id and secret of a shared-secret method (Basic, raw Basic or post): what `auth_method: auto` may move
    /// between Basic and post (`token::discovery::choose_auth`).
    pub(crate) fn shared_secret(&self) -> Option<(&CredentialSource, &CredentialSource)> {
        match self {
            ClientAuth::SecretBasic {
                client_id,
                client_secret,
            }
            | ClientAuth::SecretBasicRaw {
                client_id,
                client_secret,
            }
            | ClientAuth::SecretPost {
                client_id,
                client_secret,
            } => Some((client_id, client_secret)),
            _ => None,
        }
    }

    /// Every credential source this method reads, with the config key it was given under (`client_secret_file`...).
    pub(crate) fn sources(&self) -> Vec<(&'static str, &CredentialSource)> {
        if let Some((client_id, client_secret)) = self.shared_secret() {
            return vec![("client_id", client_id), ("client_secret", client_secret)];
        }
        match self {
            ClientAuth::None { client_id } => client_id.iter().map(|c| ("client_id", c)).collect(),
            ClientAuth::PrivateKeyJwt(k) => vec![("client_id", &k.client_id)],
            ClientAuth::ClientAssertionFile { client_id, .. } => vec![("client_id", client_id)],
            ClientAuth::SecretBasic { .. }
            | ClientAuth::SecretBasicRaw { .. }
            | ClientAuth::SecretPost { .. } => unreachable!("shared_secret() answered above"),
        }
    }

    /// The `exp` of the assertion file as it is now (unverified), for `client_assertion_file`.
    pub(crate) fn assertion_exp(&self) -> Option<SystemTime> {
        match self {
            ClientAuth::ClientAssertionFile { path, .. } => {
                let (_, exp) = read_assertion(path).ok()?;
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp?))
            }
            _ => None,
        }
    }

    /// Files this method reads besides its credential sources, with their config keys.
    pub(crate) fn key_files(&self) -> Vec<(&'static str, &Path)> {
        match self {
            ClientAuth::PrivateKeyJwt(k) => {
                let mut v = vec![("private_key_file", k.private_key_file.as_path())];
                if let KeyIdSource::Certificate(c) = &k.key_id {
                    v.push(("certificate_file", c.as_path()));
                }
                v
            }
            ClientAuth::ClientAssertionFile { path, .. } => {
                vec![("client_assertion_file", path.as_path())]
            }
            _ => Vec::new(),
        }
    }

    /// The files this method reads: their directories are watched, and a change wakes a refresher that failed.
    pub(crate) fn files(&self) -> Vec<&Path> {
        self.sources()
            .into_iter()
            .filter_map(|(_, s)| s.file())
            .chain(self.key_files().into_iter().map(|(_, p)| p))
            .collect()
    }

    /// A hash of the credentials as they are now, to notice a rotation without keeping a second copy of a secret:
    /// what [`Self::apply`] returns for the same files, read as it reads them, without building a request.
    pub(crate) fn fingerprint(&self) -> Result<u64, AuthError> {
        let mut reads = Reads::new(self.name());
        for (_, src) in self.sources() {
            reads.source(src)?;
        }
        for (key, path) in self.key_files() {
            let limit = if key == "client_assertion_file" {
                ASSERTION_LIMIT
            } else {
                PEM_LIMIT
            };
            reads.file(path, limit)?.zeroize();
        }
        Ok(reads.finish())
    }

    /// Reads the credentials now, once, and adds them to `req`: an `Authorization` header and/or form fields.
    /// Returns the fingerprint of what it read ([`Self::fingerprint`]).
    pub fn apply(&self, req: &mut TokenRequest, ctx: &RequestContext) -> Result<u64, AuthError> {
        let mut reads = Reads::new(self.name());
        match self {
            ClientAuth::SecretBasic {
                client_id,
                client_secret,
            } => {
                let c = reads.credentials(client_id, client_secret)?;
                basic(req, &c, false);
            }
            ClientAuth::SecretBasicRaw {
                client_id,
                client_secret,
            } => {
                let c = reads.credentials(client_id, client_secret)?;
                if c.client_id.expose_secret().contains(':') {
                    return Err(AuthError::ColonInRawBasicId);
                }
                basic(req, &c, true);
            }
            ClientAuth::SecretPost {
                client_id,
                client_secret,
            } => {
                let c = reads.credentials(client_id, client_secret)?;
                req.secret_field("client_id", &c.client_id);
                req.secret_field("client_secret", &c.client_secret);
            }
            ClientAuth::None { client_id } => {
                if let Some(id) = client_id {
                    req.secret_field("client_id", &reads.source(id)?);
                }
            }
            ClientAuth::PrivateKeyJwt(k) => {
                let client_id = reads.source(&k.client_id)?;
                let assertion = k
                    .signer_from(&mut reads)?
                    .sign_assertion(
                        client_id.expose_secret(),
                        k.audience(ctx),
                        ctx.now,
                        k.lifetime,
                    )
                    .map_err(|source| AuthError::Key {
                        path: k.private_key_file.clone(),
                        source,
                    })?;
                assertion_fields(req, &client_id, &assertion);
            }
            ClientAuth::ClientAssertionFile { client_id, path } => {
                let client_id = reads.source(client_id)?;
                let (assertion, exp) = assertion_of(path, reads.file(path, ASSERTION_LIMIT)?)?;
                if let Some(exp) = exp.filter(|e| *e <= unix(ctx.now)) {
                    return Err(AuthError::AssertionExpired {
                        path: path.clone(),
                        exp,
                    });
                }
                assertion_fields(req, &client_id, &assertion);
            }
        }
        Ok(reads.finish())
    }
}

/// RFC 7521 §4.2: the client authenticates with the assertion alone; no Authorization header.
fn assertion_fields(req: &mut TokenRequest, client_id: &SecretString, assertion: &SecretString) {
    req.secret_field("client_id", client_id);
    req.field("client_assertion_type", JWT_BEARER);
    req.secret_field("client_assertion", assertion);
    // A server may echo only the signature part; it is a secret too.
    if let Some((_, sig)) = assertion.expose_secret().rsplit_once('.') {
        req.redact(sig);
    }
}

fn basic(req: &mut TokenRequest, c: &Credentials, raw: bool) {
    let (id, secret) = (c.client_id.expose_secret(), c.client_secret.expose_secret());
    req.redact(id);
    req.redact(secret);
    let value = basic_auth(id, secret, raw);
    req.set_authorization("Basic", value.trim_start_matches("Basic "));
}

/// `application/x-www-form-urlencoded`, as a form body has it (space is `+`).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 6749 §2.3.1's encoding before Basic: form-urlencoding, but a space as `%20`, which also servers that skip the
/// `+` rule (Authlib, node oauth2-server) decode right. `+` itself is always `%2B`, so every `+` left is a space.
fn basic_encode(s: &str) -> String {
    form_encode(s).replace('+', "%20")
}

/// The `Authorization: Basic` value for a client id and secret; `raw` is the reference client's unencoded form.
pub fn basic_auth(id: &str, secret: &str, raw: bool) -> String {
    let pair = if raw {
        format!("{id}:{secret}")
    } else {
        format!("{}:{}", basic_encode(id), basic_encode(secret))
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(basic: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD
            .decode(basic.trim_start_matches("Basic "))
            .unwrap();
        String::from_utf8(b).unwrap()
    }

    fn inline(s: &str) -> CredentialSource {
        CredentialSource::inline(s.to_string())
    }

    fn ctx_url() -> Url {
        Url::parse("http://127.0.0.1:9/token").unwrap()
    }

    fn applied(auth: &ClientAuth) -> Result<TokenRequest, AuthError> {
        let url = ctx_url();
        let mut req = TokenRequest::default();
        req.field("grant_type", "client_credentials");
        auth.apply(
            &mut req,
            &RequestContext {
                token_url: &url,
                now: SystemTime::UNIX_EPOCH,
            },
        )?;
        Ok(req)
    }

    #[test]
    fn basic_auth_encodings_differ_only_for_special_characters() {
        // (id, secret, RFC 6749 §2.3.1 form, raw form)
        for (id, secret, rfc, raw) in [
            (
                "my client",
                "s3cr+t %/:&=x",
                "my%20client:s3cr%2Bt%20%25%2F%3A%26%3Dx",
                "my client:s3cr+t %/:&=x",
            ),
            // A space is %20, never '+', so servers that skip the plus rule decode it too.
            ("id", "a b", "id:a%20b", "id:a b"),
            ("id", "a+b", "id:a%2Bb", "id:a+b"),
            ("id", "Abc123-_.*", "id:Abc123-_.*", "id:Abc123-_.*"),
        ] {
            assert_eq!(decoded(&basic_auth(id, secret, false)), rfc, "{secret:?}");
            assert_eq!(decoded(&basic_auth(id, secret, true)), raw, "{secret:?}");
        }
        assert_eq!(basic_auth("id", "secret", true), "Basic aWQ6c2VjcmV0");
        assert_eq!(basic_auth("id", "secret", false), "Basic aWQ6c2VjcmV0");
    }

    #[test]
    fn each_method_puts_the_credentials_where_it_should() {
        let (id, secret) = (inline("i d"), inline("p+w"));
        let basic = applied(&ClientAuth::SecretBasic {
            client_id: id.clone(),
            client_secret: secret.clone(),
        })
        .unwrap();
        assert_eq!(basic.body(), "grant_type=client_credentials");
        assert_eq!(
            basic.authorization().map(|a| a.expose_secret().to_string()),
            Some(basic_auth("i d", "p+w", false))
        );
        let post = applied(&ClientAuth::SecretPost {
            client_id: id.clone(),
            client_secret: secret.clone(),
        })
        .unwrap();
        assert!(post.authorization().is_none());
        assert_eq!(
            post.body(),
            "grant_type=client_credentials&client_id=i+d&client_secret=p%2Bw"
        );
        let public = applied(&ClientAuth::None {
            client_id: Some(id),
        })
        .unwrap();
        assert!(public.authorization().is_none());
        assert_eq!(public.body(), "grant_type=client_credentials&client_id=i+d");
    }

    #[test]
    fn a_colon_in_a_raw_basic_id_read_at_request_time_is_a_credentials_error() {
        let auth = ClientAuth::SecretBasicRaw {
            client_id: inline("tenant:app"),
            client_secret: inline("s"),
        };
        let e = applied(&auth).unwrap_err();
        assert!(matches!(e, AuthError::ColonInRawBasicId), "{e}");
        assert!(e
            .to_string()
            .contains("use auth_method: client_secret_basic"));
        // A colon in the secret is fine: Basic splits at the first one.
        let ok = ClientAuth::SecretBasicRaw {
            client_id: inline("app"),
            client_secret: inline("a:b"),
        };
        assert!(applied(&ok).is_ok());
    }

    #[test]
    fn redaction_forms_cover_every_form_that_left() {
        let req = applied(&ClientAuth::SecretBasic {
            client_id: inline("my client"),
            client_secret: inline("p+w s3cret"),
        })
        .unwrap();
        let forms = req.redaction_forms();
        let b64 = basic_auth("my client", "p+w s3cret", false);
        for want in [
            b64.trim_start_matches("Basic "),
            "p+w s3cret",
            "p%2Bw+s3cret",
            "p%2Bw%20s3cret",
            "my client",
            "my+client",
            "my%20client",
        ] {
            assert!(forms.iter().any(|f| f == want), "{want} not in {forms:?}");
        }
        assert!(forms.windows(2).all(|w| w[0].len() >= w[1].len()));
    }

    #[test]
    fn the_fingerprint_changes_with_the_credentials_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "one").unwrap();
        let auth = ClientAuth::SecretBasic {
            client_id: inline("a"),
            client_secret: CredentialSource::File(p.clone()),
        };
        assert_eq!(auth.files(), vec![p.as_path()]);
        let before = auth.fingerprint().unwrap();
        assert_eq!(auth.fingerprint().unwrap(), before);
        std::fs::write(&p, "two").unwrap();
        assert_ne!(auth.fingerprint().unwrap(), before);
        std::fs::remove_file(&p).unwrap();
        assert!(auth.fingerprint().is_err());
    }

    #[test]
    fn a_request_reports_the_fingerprint_of_what_it_read_the_one_read_apart_gives() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p
        };
        let (id, secret) = (file("id", "app\n"), file("secret", "s3cret"));
        let key = file("key.pem", &p256_pem());
        let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!("{}.{}.c2ln\n", e(r#"{"alg":"RS256"}"#), e(r#"{"exp":100}"#));
        let assertion = file("assertion", &jwt);
        let pair = || {
            (
                CredentialSource::File(id.clone()),
                CredentialSource::File(secret.clone()),
            )
        };
        let (a, b) = (pair(), pair());
        let methods = [
            ClientAuth::SecretBasic {
                client_id: a.0,
                client_secret: a.1,
            },
            ClientAuth::SecretBasicRaw {
                client_id: b.0,
                client_secret: b.1,
            },
            ClientAuth::SecretPost {
                client_id: pair().0,
                client_secret: pair().1,
            },
            ClientAuth::None {
                client_id: Some(pair().0),
            },
            ClientAuth::PrivateKeyJwt(Box::new(PrivateKeyJwt {
                client_id: pair().0,
                private_key_file: key,
                alg: None,
                key_id: KeyIdSource::None,
                audience: AssertionAudience::TokenEndpoint,
                lifetime: Duration::from_secs(60),
            })),
            ClientAuth::ClientAssertionFile {
                client_id: pair().0,
                path: assertion,
            },
        ];
        let url = ctx_url();
        let ctx = RequestContext {
            token_url: &url,
            now: SystemTime::UNIX_EPOCH,
        };
        let mut seen = Vec::new();
        for auth in &methods {
            let applied = auth.apply(&mut TokenRequest::default(), &ctx).unwrap();
            assert_eq!(applied, auth.fingerprint().unwrap(), "{}", auth.name());
            seen.push(applied);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            methods.len(),
            "each method's fingerprint is its own"
        );
        // A rotation changes what the request reads and reports.
        let before = methods[0]
            .apply(&mut TokenRequest::default(), &ctx)
            .unwrap();
        std::fs::write(&secret, "rotated").unwrap();
        let after = methods[0]
            .apply(&mut TokenRequest::default(), &ctx)
            .unwrap();
        assert_ne!(before, after);
        assert_eq!(after, methods[0].fingerprint().unwrap());
    }

    #[test]
    fn debug_shows_no_credential() {
        let auth = ClientAuth::SecretPost {
            client_id: inline("id-x"),
            client_secret: inline("hunter2"),
        };
        let req = applied(&auth).unwrap();
        for dbg in [format!("{auth:?}"), format!("{req:?}")] {
            assert!(!dbg.contains("hunter2") && !dbg.contains("id-x"), "{dbg}");
        }
    }

    /// A PKCS#8 P-256 key made by rcgen (independent of jws.rs's key handling).
    fn p256_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    fn claims(jwt: &str) -> serde_json::Value {
        let part = jwt.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn form(req: &TokenRequest) -> std::collections::HashMap<String, String> {
        url::form_urlencoded::parse(req.body().as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn private_key_jwt_signs_a_fresh_assertion_from_the_key_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, p256_pem()).unwrap();
        let auth = ClientAuth::PrivateKeyJwt(Box::new(PrivateKeyJwt {
            client_id: inline("app"),
            private_key_file: key.clone(),
            alg: None,
            key_id: KeyIdSource::Kid("k1".into()),
            audience: AssertionAudience::TokenEndpoint,
            lifetime: Duration::from_secs(60),
        }));
        assert_eq!(auth.files(), vec![key.as_path()]);
        let req = applied(&auth).unwrap();
        assert!(req.authorization().is_none());
        let f = form(&req);
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["client_id"], "app");
        assert_eq!(f["client_assertion_type"], JWT_BEARER);
        let jwt = &f["client_assertion"];
        let c = claims(jwt);
        assert_eq!(c["aud"], ctx_url().as_str());
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str()),
            (Some("app"), Some("app"))
        );
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
        let forms = req.redaction_forms();
        let sig = jwt.rsplit('.').next().unwrap();
        assert!(forms.iter().any(|x| x == jwt) && forms.iter().any(|x| x == sig));
        // Never reused: a second request has another jti.
        let again = form(&applied(&auth).unwrap());
        assert_ne!(claims(&again["client_assertion"])["jti"], c["jti"]);
        // A rotated key is noticed and used.
        let before = auth.fingerprint().unwrap();
        std::fs::write(&key, p256_pem()).unwrap();
        assert_ne!(auth.fingerprint().unwrap(), before);
        // A broken key is an error naming the file, with no key material.
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = applied(&auth).unwrap_err().to_string();
        assert!(
            e.contains("key.pem") && e.contains("PKCS#1") && !e.contains("AAAA"),
            "{e}"
        );
    }

    #[test]
    fn client_assertion_file_sends_the_file_as_it_is_now_and_refuses_an_expired_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let jwt = |exp: u64| {
            let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            format!(
                "{}.{}.c2ln",
                e(r#"{"alg":"RS256"}"#),
                e(&format!(r#"{{"exp":{exp}}}"#))
            )
        };
        let auth = ClientAuth::ClientAssertionFile {
            client_id: inline("app"),
            path: path.clone(),
        };
        assert_eq!(auth.files(), vec![path.as_path()]);
        // applied() runs at the epoch, so exp 100 is valid, exp 0 expired.
        std::fs::write(&path, format!("{}\n", jwt(100))).unwrap();
        let req = applied(&auth).unwrap();
        assert!(req.authorization().is_none());
        let f = form(&req);
        assert_eq!(f["client_assertion"], jwt(100));
        assert_eq!(f["client_assertion_type"], JWT_BEARER);
        assert_eq!(f["client_id"], "app");
        std::fs::write(&path, jwt(101)).unwrap();
        assert_eq!(form(&applied(&auth).unwrap())["client_assertion"], jwt(101));
        std::fs::write(&path, jwt(0)).unwrap();
        let e = applied(&auth).unwrap_err();
        assert!(
            matches!(e, AuthError::AssertionExpired { exp: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("token") && !e.to_string().contains(&jwt(0)));
        std::fs::write(&path, "not a jwt").unwrap();
        assert!(matches!(
            applied(&auth).unwrap_err(),
            AuthError::NotAJwt { .. }
        ));
    }
}
