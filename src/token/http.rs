//! The HTTP client of a token: its settings, rustls with an extra CA and a client certificate (mutual TLS), no redirects, and clients shared by tokens with the same settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

use crate::fsread::{read_bounded, ReadError, PEM_LIMIT};

pub const USER_AGENT_VALUE: &str = concat!("token-vendor/", env!("CARGO_PKG_VERSION"));

/// A token's HTTP settings, checked by the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpConfig {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
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
    #[error("client_cert_file/client_key_file are not a PEM certificate and key")]
    ClientIdentity(#[source] reqwest::Error),
    #[error("cannot set up the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Builds the HTTP client for one token: rustls, timeouts, extra CA, client certificate, no redirects.
///
/// Reads the PEM files (regular files only, at most PEM_LIMIT bytes each, never blocking on a FIFO): call it off the
/// runtime thread.
pub fn build_http_client(http: &HttpConfig, url: &Url) -> Result<reqwest::Client, HttpClientError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        // Loading the system's CA store costs milliseconds and memory that a plain-HTTP loopback endpoint never needs.
        .tls_built_in_native_certs(url.scheme() == "https")
        .timeout(http.timeout)
        .connect_timeout(http.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1);
    if let Some(ca) = &http.ca_file {
        let pem = read_bounded(ca, PEM_LIMIT, true).map_err(|source| HttpClientError::ReadCa {
            path: ca.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
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
    if let (Some(cert), Some(key)) = (&http.client_cert_file, &http.client_key_file) {
        let read = |key_name: &'static str, path: &PathBuf| {
            read_bounded(path, PEM_LIMIT, true).map_err(|source| {
                HttpClientError::ReadClientIdentity {
                    key: key_name,
                    path: path.clone(),
                    source,
                }
            })
        };
        let mut pem = read("client_cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read("client_key_file", key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(HttpClientError::ClientIdentity)?;
        b = b.identity(id);
    }
    b.build().map_err(HttpClientError::Build)
}

/// HTTP clients shared by tokens with the same HTTP settings: one pool and one CA store, not one per token.
#[derive(Default)]
pub struct HttpClients(Mutex<HashMap<(HttpConfig, bool), reqwest::Client>>);

impl HttpClients {
    pub fn get(&self, http: &HttpConfig, url: &Url) -> Result<reqwest::Client, HttpClientError> {
        let key = (http.clone(), url.scheme() == "https");
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = build_http_client(http, url)?;
        map.insert(key, c.clone());
        Ok(c)
    }
}
