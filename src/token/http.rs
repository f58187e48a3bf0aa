//! The HTTP client of a token: its settings, rustls with an extra CA and a client certificate (mutual TLS), no redirects, and clients shared by tokens with the same settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

use crate::fsread::{read_bounded, ReadError, PEM_LIMIT};

pub(crate) const USER_AGENT_VALUE: &str = concat!("token-vendor/", env!("CARGO_PKG_VERSION"));

/// A token's HTTP settings, checked by the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HttpConfig {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert_file: Option<PathBuf>,
    pub(crate) client_key_file: Option<PathBuf>,
    pub(crate) allow_insecure_http: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            allow_insecure_http: false,
        }
    }
}

/// Why an HTTP client could not be built: a file it needs is missing or not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read ca_file {}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("ca_file {} is not a PEM certificate bundle", path.display())]
    CaNotPem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("ca_file {} holds no PEM certificate", path.display())]
    CaEmpty { path: PathBuf },
    #[error("cannot read {key} {}", path.display())]
    ReadClientIdentity {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("client_cert_file {} and client_key_file {} are not a PEM certificate and key", cert.display(), key.display())]
    ClientIdentity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot set up the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// The PEM files of a token's HTTP client as read at one moment: what the client is built from and what its
/// fingerprint is taken of, so the two always agree.
#[derive(Default)]
struct TlsMaterial {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsMaterial {
    /// Reads `ca_file`, `client_cert_file` and `client_key_file` (regular files only, at most PEM_LIMIT bytes each,
    /// never blocking on a FIFO): call it off the runtime thread.
    pub(crate) fn read(http: &HttpConfig) -> Result<TlsMaterial, HttpClientError> {
        let ca = match &http.ca_file {
            Some(path) => Some(read_bounded(path, PEM_LIMIT, true).map_err(|source| {
                HttpClientError::ReadCa {
                    path: path.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let read = |key: &'static str, path: &PathBuf| {
            read_bounded(path, PEM_LIMIT, true).map_err(|source| {
                HttpClientError::ReadClientIdentity {
                    key,
                    path: path.clone(),
                    source,
                }
            })
        };
        let identity = match (&http.client_cert_file, &http.client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("client_cert_file", cert)?,
                read("client_key_file", key)?,
            )),
            _ => None,
        };
        Ok(TlsMaterial { ca, identity })
    }

    /// SHA-256 over every file's length and bytes; `None` when the client reads no file. Compared, never shown: it
    /// tells a rotated certificate or key from the one in use without keeping the key's bytes around.
    pub(crate) fn fingerprint(&self) -> Option<[u8; 32]> {
        if self.ca.is_none() && self.identity.is_none() {
            return None;
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let parts = [
            self.ca.as_deref(),
            self.identity.as_ref().map(|(c, _)| c.as_slice()),
            self.identity.as_ref().map(|(_, k)| k.as_slice()),
        ];
        for part in parts {
            match part {
                Some(bytes) => {
                    ctx.update(&(bytes.len() as u64 + 1).to_be_bytes());
                    ctx.update(bytes);
                }
                None => ctx.update(&0u64.to_be_bytes()),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Some(out)
    }
}

/// Idle connections a client keeps per host, for 30 s. Tokens with the same HTTP settings share one client, so
/// requests that overlap (a reload, a burst of refreshes, retries) each return a reusable connection instead of all
/// but one being closed; with one, about one refresh in five opened a new connection at 130 refreshes/s
/// (BENCHMARKS.md, CPU). At most a few, since an idle connection holds its buffers.
const POOL_IDLE_PER_HOST: usize = 4;

/// Builds the HTTP client for one token: rustls, timeouts, extra CA, client certificate, no redirects.
///
/// Reads the PEM files (see [`TlsMaterial::read`]): call it off the runtime thread.
pub(crate) fn build_http_client(
    http: &HttpConfig,
    url: &Url,
) -> Result<reqwest::Client, HttpClientError> {
    build_from(http, url, &TlsMaterial::read(http)?)
}

fn build_from(
    http: &HttpConfig,
    url: &Url,
    material: &TlsMaterial,
) -> Result<reqwest::Client, HttpClientError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        // Loading the system's CA store costs milliseconds and memory that a plain-HTTP loopback endpoint never needs.
        .tls_built_in_native_certs(url.scheme() == "https")
        .timeout(http.timeout)
        .connect_timeout(http.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST);
    if let (Some(ca), Some(pem)) = (&http.ca_file, &material.ca) {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|source| {
            HttpClientError::CaNotPem {
                path: ca.clone(),
                source,
            }
        })?;
        if certs.is_empty() {
            return Err(HttpClientError::CaEmpty { path: ca.clone() });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some((cert, key)), Some(cert_file), Some(key_file)) = (
        &material.identity,
        &http.client_cert_file,
        &http.client_key_file,
    ) {
        let mut pem = cert.clone();
        pem.push(b'\n');
        pem.extend_from_slice(key);
        let id = reqwest::Identity::from_pem(&pem).map_err(|source| {
            // Names the files, never their bytes: the key must not reach a log line.
            HttpClientError::ClientIdentity {
                cert: cert_file.clone(),
                key: key_file.clone(),
                source,
            }
        })?;
        b = b.identity(id);
    }
    b.build().map_err(HttpClientError::Build)
}

/// A built client and the fingerprint of the TLS material it was built from.
#[derive(Clone)]
pub(crate) struct Built {
    client: reqwest::Client,
    tls: Option<[u8; 32]>,
}

impl Built {
    /// Reads the TLS files once and builds from those bytes, so the fingerprint is of what the client holds.
    fn new(http: &HttpConfig, url: &Url) -> Result<Built, HttpClientError> {
        let material = TlsMaterial::read(http)?;
        Ok(Built {
            client: build_from(http, url, &material)?,
            tls: material.fingerprint(),
        })
    }

    #[cfg(test)]
    pub(crate) fn tls_fingerprint(&self) -> Option<[u8; 32]> {
        self.tls
    }
}

/// What a token's TLS files say compared with the client it runs with.
pub(crate) enum Rotation {
    /// Same content (or no TLS files): nothing to do.
    Same,
    /// New content that makes a client: this one, built from exactly the bytes fingerprinted.
    Changed(Built),
    /// New or unreadable content that does not make a client (a file caught half-written, say): keep the running
    /// client. The error names the file, never its bytes.
    Unusable(HttpClientError),
}

/// HTTP clients shared by tokens with the same HTTP settings: one pool and one CA store, not one per token.
#[derive(Default)]
pub(crate) struct HttpClients(Mutex<HashMap<(HttpConfig, bool), Built>>);

impl HttpClients {
    fn key(http: &HttpConfig, url: &Url) -> (HttpConfig, bool) {
        (http.clone(), url.scheme() == "https")
    }

    pub(crate) fn get(
        &self,
        http: &HttpConfig,
        url: &Url,
    ) -> Result<reqwest::Client, HttpClientError> {
        let key = Self::key(http, url);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(&key) {
            return Ok(b.client.clone());
        }
        let built = Built::new(http, url)?;
        map.insert(key, built.clone());
        Ok(built.client)
    }

    /// The fingerprint of the TLS material the cached client for these settings was built from (`None`: no TLS
    /// files, or no client built yet).
    pub(crate) fn tls_fingerprint(&self, http: &HttpConfig, url: &Url) -> Option<[u8; 32]> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Self::key(http, url)).and_then(|b| b.tls)
    }

    /// Compares the TLS files as they are now with `running` (the fingerprint the token's client was built from)
    /// and builds a new client when they differ. Reads the files: call it off the runtime thread.
    pub(crate) fn rotation(http: &HttpConfig, url: &Url, running: Option<[u8; 32]>) -> Rotation {
        let material = match TlsMaterial::read(http) {
            Ok(m) => m,
            Err(e) => return Rotation::Unusable(e),
        };
        let tls = material.fingerprint();
        if tls == running {
            return Rotation::Same;
        }
        match build_from(http, url, &material) {
            Ok(client) => Rotation::Changed(Built { client, tls }),
            Err(e) => Rotation::Unusable(e),
        }
    }

    /// Caches `built` for these settings in place of the client built from the old files, so the next
    /// [`HttpClients::get`] hands it out; tokens still running with the old client keep it until restarted.
    pub(crate) fn replace(&self, http: &HttpConfig, url: &Url, built: Built) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(Self::key(http, url), built);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn the_fingerprint_follows_every_tls_file_and_is_none_without_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(TlsMaterial::read(&HttpConfig::default())
            .unwrap()
            .fingerprint()
            .is_none());
        let http = HttpConfig {
            ca_file: Some(write(dir.path(), "ca.pem", "ca-1")),
            client_cert_file: Some(write(dir.path(), "tls.crt", "cert-1")),
            client_key_file: Some(write(dir.path(), "tls.key", "key-1")),
            ..HttpConfig::default()
        };
        let fp = || TlsMaterial::read(&http).unwrap().fingerprint().unwrap();
        let first = fp();
        assert_eq!(first, fp(), "same bytes, same fingerprint");
        let mut seen = vec![first];
        for (name, body) in [
            ("ca.pem", "ca-2"),
            ("tls.crt", "cert-2"),
            ("tls.key", "key-2"),
        ] {
            write(dir.path(), name, body);
            let now = fp();
            assert!(
                !seen.contains(&now),
                "{name} changed but the fingerprint did not"
            );
            seen.push(now);
        }
        // Bytes moved from one file to the next are a different set of files, not the same fingerprint.
        write(dir.path(), "tls.crt", "cert-2key");
        write(dir.path(), "tls.key", "-2");
        assert!(!seen.contains(&fp()));
    }

    #[test]
    fn an_unreadable_tls_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let http = HttpConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..HttpConfig::default()
        };
        let e = TlsMaterial::read(&http)
            .err()
            .expect("a missing CA file is an error");
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }

    /// A self-signed certificate and its key, as PEM.
    fn identity(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_rotation_is_seen_by_content_builds_a_new_client_and_keeps_the_old_one_when_the_new_files_are_bad(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::parse("https://127.0.0.1:1/token").unwrap();
        let (cert, key) = identity("first");
        let http = HttpConfig {
            ca_file: Some(write(dir.path(), "ca.pem", &cert)),
            client_cert_file: Some(write(dir.path(), "tls.crt", &cert)),
            client_key_file: Some(write(dir.path(), "tls.key", &key)),
            ..HttpConfig::default()
        };
        let clients = HttpClients::default();
        clients.get(&http, &url).unwrap();
        let running = clients.tls_fingerprint(&http, &url);
        assert!(running.is_some());
        assert!(matches!(
            HttpClients::rotation(&http, &url, running),
            Rotation::Same
        ));

        // Same paths, new content: a new client, cached in place of the old one.
        let (cert2, key2) = identity("second");
        write(dir.path(), "tls.crt", &cert2);
        write(dir.path(), "tls.key", &key2);
        let Rotation::Changed(built) = HttpClients::rotation(&http, &url, running) else {
            panic!("new certificate and key not seen");
        };
        let rotated = built.tls_fingerprint();
        assert!(rotated.is_some() && rotated != running);
        clients.replace(&http, &url, built);
        assert_eq!(clients.tls_fingerprint(&http, &url), rotated);
        assert!(matches!(
            HttpClients::rotation(&http, &url, rotated),
            Rotation::Same
        ));

        // A key caught half-written, then a missing certificate: unusable, each error names its file and never
        // shows the key's bytes.
        write(dir.path(), "tls.key", &key2[..key2.len() / 2]);
        let Rotation::Unusable(e) = HttpClients::rotation(&http, &url, rotated) else {
            panic!("a half-written key must not make a client");
        };
        let said = crate::token::error::chain(&e);
        assert!(said.contains("tls.key"), "{said}");
        let key_body: String = key2.lines().nth(1).unwrap().to_string();
        assert!(
            !said.contains(&key_body),
            "the key's bytes were shown: {said}"
        );
        std::fs::remove_file(dir.path().join("tls.crt")).unwrap();
        let Rotation::Unusable(e) = HttpClients::rotation(&http, &url, rotated) else {
            panic!("a missing certificate must not make a client");
        };
        assert!(e.to_string().contains("tls.crt"), "{e}");
        // The cached client stays the rotated one until usable files arrive.
        assert_eq!(clients.tls_fingerprint(&http, &url), rotated);
    }
}
