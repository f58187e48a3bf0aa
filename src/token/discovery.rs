//! OIDC discovery and RFC 8414 metadata: where an issuer's token endpoint is, checked against the configured issuer, and which client authentication to use.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, USER_AGENT};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use super::auth::ClientAuth;
use super::error::{sanitize, SERVER_TEXT_MAX};
use super::response::{read_bounded, retry_after, BodyError};
use super::transport::{env_proxy_carries, secure_or_loopback};

/// Metadata documents are a few KiB; anything past this is refused, never buffered.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The longest `token_endpoint` adopted. It is shown as it is (in `/status`, in every error about a request), so it
/// must be text that [`sanitize`] would leave alone within this many characters; real ones are under 200.
const MAX_ENDPOINT_CHARS: usize = 1024;

const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";
const RFC8414_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";

/// OIDC discovery / RFC 8414 for one token (this module does the fetching and checking); `config` builds it from `issuer:` and `auth_method: auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Discovery {
    pub(crate) issuer: Issuer,
    /// `auth_method: auto`: `auth` is the preferred form of the configured credentials, switched to what the
    /// document supports (`client_secret_basic` to `client_secret_post`), or refused when it supports neither.
    pub(crate) auto: bool,
}

/// An issuer identifier exactly as configured (the document must repeat it byte for byte), and its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    text: String,
    url: Url,
}

impl Issuer {
    /// An `https` URL (or `http` to a loopback address) without query or fragment (RFC 8414 §2).
    pub fn parse(text: &str) -> Result<Issuer, DiscoveryError> {
        let bad = |reason: &str| DiscoveryError::BadIssuer {
            issuer: sanitize(text, SERVER_TEXT_MAX),
            reason: reason.to_string(),
        };
        let url = Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !secure_or_loopback(&url) {
            return Err(bad("must be https (http only to a loopback address)"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        Ok(Issuer {
            text: text.to_string(),
            url,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// Where to look, in order: the OIDC form (appended to the whole issuer), then RFC 8414's
    /// (inserted after the host). A terminating `/` is dropped first (OIDC Discovery §4).
    fn well_known_urls(&self) -> [Url; 2] {
        let path = self.url.path().trim_end_matches('/');
        let mut oidc = self.url.clone();
        oidc.set_path(&format!("{path}{OIDC_WELL_KNOWN}"));
        let mut rfc8414 = self.url.clone();
        rfc8414.set_path(&format!("{RFC8414_WELL_KNOWN}{path}"));
        [oidc, rfc8414]
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What token-vendor needs from a metadata document; serializable for the warm-start cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub issuer: String,
    #[serde(with = "url_string")]
    pub token_endpoint: Url,
    /// RFC 8414 §2: absent means `["client_secret_basic"]`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Empty when the document does not say.
    token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// `None` when the document does not say (RFC 8414's default is not about client credentials).
    grant_types_supported: Option<Vec<String>>,
    /// The well-known URL that answered.
    #[serde(with = "url_string")]
    pub source: Url,
}

#[derive(Deserialize)]
struct RawDocument {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    grant_types_supported: Option<Vec<String>>,
}

impl Document {
    /// Parses a document fetched from `source`, requiring its `issuer` to equal `issuer` exactly and a usable `token_endpoint`.
    pub(crate) fn parse(
        body: &[u8],
        issuer: &Issuer,
        source: &Url,
    ) -> Result<Document, DiscoveryError> {
        let bad = |reason: String| DiscoveryError::BadDocument {
            url: source.to_string(),
            reason,
        };
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(DiscoveryError::TooLarge {
                url: source.to_string(),
            });
        }
        let raw: RawDocument = serde_json::from_slice(body).map_err(|e| match e.classify() {
            // Not JSON at all: typically a proxy's or a starting server's page, which may pass.
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                DiscoveryError::NotJson {
                    url: source.to_string(),
                    reason: sanitize(&e.to_string(), SERVER_TEXT_MAX),
                }
            }
            // serde's words for a wrong type quote the value: server text.
            _ => bad(format!(
                "not a JSON metadata document: {}",
                sanitize(&e.to_string(), SERVER_TEXT_MAX)
            )),
        })?;
        let found = raw.issuer.ok_or_else(|| bad("it has no `issuer`".into()))?;
        if found != issuer.as_str() {
            return Err(DiscoveryError::IssuerMismatch {
                url: source.to_string(),
                configured: issuer.as_str().to_string(),
                found: sanitize(&found, SERVER_TEXT_MAX),
            });
        }
        let endpoint = raw
            .token_endpoint
            .ok_or_else(|| bad("it has no `token_endpoint`".into()))?;
        let token_endpoint = Url::parse(&endpoint)
            .map_err(|e| bad(format!("`token_endpoint` is not a URL ({e})")))?;
        let doc = Document {
            issuer: found,
            token_endpoint,
            token_endpoint_auth_methods_supported: raw
                .token_endpoint_auth_methods_supported
                .unwrap_or_else(|| vec!["client_secret_basic".to_string()]),
            token_endpoint_auth_signing_alg_values_supported: raw
                .token_endpoint_auth_signing_alg_values_supported
                .unwrap_or_default(),
            grant_types_supported: raw.grant_types_supported,
            source: source.clone(),
        };
        doc.check_transport(issuer)?;
        Ok(doc)
    }

    /// The transport rule for the endpoint this document names, held wherever a document is adopted (fetched,
    /// fetched again after a day, restored from the warm-start state): https, or plain http straight to a loopback
    /// address; plain http never when the issuer is https (a document must not downgrade the credentials to clear
    /// text) and never when a proxy from the environment would carry it (the client credential, or the subject token
    /// of an exchange, would reach the proxy in clear). `allow_insecure_http` is consent for a configured URL and does
    /// not extend to one a server names.
    pub(crate) fn check_transport(&self, issuer: &Issuer) -> Result<(), DiscoveryError> {
        self.transport_rule(issuer, env_proxy_carries)
    }

    /// [`Document::check_transport`] with the proxy question answered by `proxied` (the environment is the process's).
    fn transport_rule(
        &self,
        issuer: &Issuer,
        proxied: impl Fn(&Url) -> bool,
    ) -> Result<(), DiscoveryError> {
        let url = &self.token_endpoint;
        let bad = |reason: String| DiscoveryError::BadDocument {
            url: self.source.to_string(),
            reason,
        };
        // Shown as it is from now on (Url text is printable ASCII): it must be what the one cleaning would show.
        if sanitize(url.as_str(), MAX_ENDPOINT_CHARS) != url.as_str() {
            return Err(bad(format!(
                "`token_endpoint` is longer than {MAX_ENDPOINT_CHARS} characters: {}",
                sanitize(url.as_str(), SERVER_TEXT_MAX)
            )));
        }
        if !secure_or_loopback(url) {
            return Err(bad(format!(
                "`token_endpoint` {url} must be https (http only to a loopback address)"
            )));
        }
        if url.scheme() == "http" && issuer.url().scheme() == "https" {
            return Err(bad(format!(
                "`token_endpoint` {url} is plain http but the issuer is https; a document may not move the credentials to clear text"
            )));
        }
        if url.scheme() == "http" && proxied(url) {
            // The proxy's address is not shown: it may carry a password.
            return Err(bad(format!(
                "`token_endpoint` {url} is plain http and a proxy from the environment (HTTP_PROXY/http_proxy or ALL_PROXY/all_proxy) would carry the credentials to it in clear; add {} to NO_PROXY or serve the token endpoint over https",
                url.host_str().unwrap_or("its host")
            )));
        }
        Ok(())
    }

    /// Whether the server takes assertions signed with `alg`; a document that does not say is taken at its word for any.
    pub fn supports_signing_alg(&self, alg: &str) -> bool {
        let algs = &self.token_endpoint_auth_signing_alg_values_supported;
        algs.is_empty() || algs.iter().any(|a| a == alg)
    }

    /// Whether the server lists `grant` (e.g. `client_credentials`); a document that does not say may support it.
    pub fn supports_grant(&self, grant: &str) -> bool {
        self.grant_types_supported
            .as_ref()
            .is_none_or(|g| g.iter().any(|x| x == grant))
    }
}

/// The client credentials configured, as far as choosing a method goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Configured {
    pub secret: bool,
    pub private_key: bool,
    pub assertion_file: bool,
}

/// A client authentication method `auth_method: auto` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PickedMethod {
    PrivateKeyJwt,
    /// A ready-made assertion (the pod's service-account token); servers list it as `private_key_jwt`.
    ClientAssertionFile,
    ClientSecretBasic,
    ClientSecretPost,
}

/// The best method both sides have: a signed assertion, then a mounted assertion, then Basic, then post.
pub fn pick_auth_method(
    supported: &[String],
    configured: Configured,
) -> Result<PickedMethod, DiscoveryError> {
    let has = |m: &str| supported.iter().any(|s| s == m);
    let order = [
        (
            configured.private_key,
            "private_key_jwt",
            PickedMethod::PrivateKeyJwt,
        ),
        (
            configured.assertion_file,
            "private_key_jwt",
            PickedMethod::ClientAssertionFile,
        ),
        (
            configured.secret,
            "client_secret_basic",
            PickedMethod::ClientSecretBasic,
        ),
        (
            configured.secret,
            "client_secret_post",
            PickedMethod::ClientSecretPost,
        ),
    ];
    order
        .into_iter()
        .find(|(ours, theirs, _)| *ours && has(theirs))
        .map(|(_, _, m)| m)
        .ok_or_else(|| {
            let mut ours = Vec::new();
            if configured.private_key {
                ours.push("a private key (private_key_jwt)");
            }
            if configured.assertion_file {
                ours.push("an assertion file (private_key_jwt)");
            }
            if configured.secret {
                ours.push("a client secret (client_secret_basic, client_secret_post)");
            }
            DiscoveryError::NoCommonAuthMethod {
                supported: sanitize(&supported.join(", "), SERVER_TEXT_MAX),
                configured: if ours.is_empty() {
                    "no client credentials".into()
                } else {
                    ours.join("; ")
                },
            }
        })
}

/// How long a discovered document is used before it is fetched again (a failed refetch keeps the old one).
const REFRESH_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A checked document and when it was fetched: what the warm-start state keeps so that a restart while the
/// identity provider is down still knows the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cached {
    pub(crate) document: Document,
    /// Seconds since the Unix epoch.
    pub(crate) fetched_at: u64,
}

impl Cached {
    pub(crate) fn fetched_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.fetched_at)
    }

    /// Due for a refetch at `now`: a day old, or fetched "in the future" (the clock was set back).
    pub(crate) fn is_stale(&self, now: SystemTime) -> bool {
        match now.duration_since(self.fetched_at()) {
            Ok(age) => age >= REFRESH_EVERY,
            Err(_) => true,
        }
    }
}

/// For `auth_method: auto`: the configured credentials in the form the document supports best
/// (`pick_auth_method`); a secret moves between Basic and post, a key or assertion file stays as it is.
pub(crate) fn choose_auth(
    configured: &ClientAuth,
    doc: &Document,
) -> Result<ClientAuth, DiscoveryError> {
    let secret = configured.shared_secret();
    let have = Configured {
        secret: secret.is_some(),
        private_key: matches!(configured, ClientAuth::PrivateKeyJwt(_)),
        assertion_file: matches!(configured, ClientAuth::ClientAssertionFile { .. }),
    };
    let picked = pick_auth_method(&doc.token_endpoint_auth_methods_supported, have)?;
    Ok(match (picked, secret) {
        (PickedMethod::ClientSecretBasic, Some((client_id, client_secret))) => {
            ClientAuth::SecretBasic {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }
        }
        (PickedMethod::ClientSecretPost, Some((client_id, client_secret))) => {
            ClientAuth::SecretPost {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }
        }
        _ => configured.clone(),
    })
}

/// Why discovery failed. `is_transient` says whether asking again later with the usual backoff can help.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("issuer \"{issuer}\" is not usable: {reason}")]
    BadIssuer { issuer: String, reason: String },
    #[error("discovery request to {url} failed: {cause}")]
    Network { url: String, cause: String },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("no metadata document: {} and {} both answered HTTP 404; is the issuer right?", tried[0], tried[1])]
    NotFound { tried: [String; 2] },
    #[error("the metadata document at {url} is larger than {} KiB; refused", MAX_DOCUMENT_BYTES / 1024)]
    TooLarge { url: String },
    #[error("the answer from {url} is not JSON ({reason}); is something in front of the identity provider?")]
    NotJson { url: String, reason: String },
    #[error("the metadata document at {url} is unusable: {reason}")]
    BadDocument { url: String, reason: String },
    #[error("the metadata document at {url} is for issuer \"{found}\", not the configured \"{configured}\"; set `issuer` to exactly the document's value")]
    IssuerMismatch {
        url: String,
        configured: String,
        found: String,
    },
    #[error("no client authentication method in common: the server supports [{supported}], the config has {configured}")]
    NoCommonAuthMethod {
        supported: String,
        configured: String,
    },
}

impl DiscoveryError {
    /// Network trouble, 5xx, 429, 408, and an oversized or non-JSON answer (often a proxy page) may pass; the rest
    /// needs a config or server change.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DiscoveryError::Network { .. }
            | DiscoveryError::TooLarge { .. }
            | DiscoveryError::NotJson { .. } => true,
            DiscoveryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DiscoveryError::BadIssuer { .. }
            | DiscoveryError::NotFound { .. }
            | DiscoveryError::BadDocument { .. }
            | DiscoveryError::IssuerMismatch { .. }
            | DiscoveryError::NoCommonAuthMethod { .. } => false,
        }
    }

    /// The server's `Retry-After` in seconds, if it sent one with a 429 or 503.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            DiscoveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Fetches and checks the metadata document: the OIDC URL first, RFC 8414's if that one is 404.
/// The client's own timeouts and redirect policy apply (a redirect is an error, not followed here).
pub async fn fetch(client: &reqwest::Client, issuer: &Issuer) -> Result<Document, DiscoveryError> {
    let urls = issuer.well_known_urls();
    for url in &urls {
        match fetch_one(client, url).await? {
            Some(body) => return Document::parse(&body, issuer, url),
            None => continue,
        }
    }
    Err(DiscoveryError::NotFound {
        tried: urls.map(String::from),
    })
}

/// The body of a 200, `None` for a 404, an error for anything else.
async fn fetch_one(client: &reqwest::Client, url: &Url) -> Result<Option<Vec<u8>>, DiscoveryError> {
    let network = |e: reqwest::Error| DiscoveryError::Network {
        url: url.to_string(),
        cause: super::error::transport_failure(&e).1,
    };
    let resp = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, super::http::USER_AGENT_VALUE)
        .send()
        .await
        .map_err(network)?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status != StatusCode::OK {
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        return Err(DiscoveryError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            retry_after,
        });
    }
    match read_bounded(resp, MAX_DOCUMENT_BYTES).await {
        Ok(body) => Ok(Some(body)),
        Err(BodyError::TooLarge) => Err(DiscoveryError::TooLarge {
            url: url.to_string(),
        }),
        Err(BodyError::Transport(e)) => Err(network(e)),
        Err(BodyError::Other(cause)) => Err(DiscoveryError::Network {
            url: url.to_string(),
            cause,
        }),
    }
}

mod url_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;

    pub(crate) fn serialize<S: Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let s = String::deserialize(d)?;
        Url::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn issuer(s: &str) -> Issuer {
        Issuer::parse(s).unwrap()
    }

    #[test]
    fn well_known_urls_for_issuers_with_and_without_paths() {
        for (iss, oidc, rfc8414) in [
            (
                "https://idp.example",
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server",
            ),
            (
                "https://idp.example/",
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server",
            ),
            (
                "https://idp.example/realms/prod",
                "https://idp.example/realms/prod/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server/realms/prod",
            ),
            (
                "https://idp.example/realms/prod/",
                "https://idp.example/realms/prod/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server/realms/prod",
            ),
            (
                "https://idp.example:8443/a/b/c",
                "https://idp.example:8443/a/b/c/.well-known/openid-configuration",
                "https://idp.example:8443/.well-known/oauth-authorization-server/a/b/c",
            ),
            (
                "http://127.0.0.1:9000/tenant",
                "http://127.0.0.1:9000/tenant/.well-known/openid-configuration",
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server/tenant",
            ),
        ] {
            let [a, b] = issuer(iss).well_known_urls();
            assert_eq!((a.as_str(), b.as_str()), (oidc, rfc8414), "{iss}");
        }
    }

    #[test]
    fn issuers_must_be_https_or_loopback_without_query_or_fragment() {
        for ok in [
            "https://idp.example",
            "http://127.0.0.1:1",
            "http://[::1]:8080/x",
            "http://localhost/x",
        ] {
            assert!(Issuer::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://idp.example", "https"),
            ("ftp://idp.example", "https"),
            ("https://idp.example/?tenant=1", "query"),
            ("https://idp.example/#x", "fragment"),
            ("https://u:p@idp.example/", "credentials"),
            ("idp.example", "not a URL"),
        ] {
            let err = Issuer::parse(bad).unwrap_err();
            assert!(!err.is_transient());
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    fn doc(issuer: &str, extra: &str) -> String {
        format!(
            r#"{{"issuer":"{issuer}","token_endpoint":"https://idp.example/oauth/token"{extra}}}"#
        )
    }

    fn src() -> Url {
        Url::parse("https://idp.example/.well-known/openid-configuration").unwrap()
    }

    #[test]
    fn a_document_is_read_with_rfc8414_defaults() {
        let d = Document::parse(
            doc("https://idp.example", "").as_bytes(),
            &issuer("https://idp.example"),
            &src(),
        )
        .unwrap();
        assert_eq!(d.issuer, "https://idp.example");
        assert_eq!(d.token_endpoint.as_str(), "https://idp.example/oauth/token");
        assert_eq!(
            d.token_endpoint_auth_methods_supported,
            ["client_secret_basic"]
        );
        assert!(d
            .token_endpoint_auth_signing_alg_values_supported
            .is_empty());
        assert_eq!(d.grant_types_supported, None);
        assert!(d.supports_signing_alg("ES256") && d.supports_grant("client_credentials"));
        assert_eq!(d.source, src());

        let d = Document::parse(
            doc(
                "https://idp.example",
                r#","token_endpoint_auth_methods_supported":["private_key_jwt","client_secret_post"],
                   "token_endpoint_auth_signing_alg_values_supported":["PS256","ES256"],
                   "grant_types_supported":["authorization_code"],"unknown":{"nested":[1,2]}"#,
            )
            .as_bytes(),
            &issuer("https://idp.example"),
            &src(),
        )
        .unwrap();
        assert_eq!(
            d.token_endpoint_auth_methods_supported,
            ["private_key_jwt", "client_secret_post"]
        );
        assert!(d.supports_signing_alg("PS256") && !d.supports_signing_alg("RS256"));
        assert!(!d.supports_grant("client_credentials"));
    }

    #[test]
    fn the_issuer_must_match_exactly_and_the_error_names_both() {
        for (configured, in_doc) in [
            ("https://a.example/x", "https://a.example/x/"),
            ("https://a.example/x/", "https://a.example/x"),
            ("https://a.example", "https://a.example/"),
            ("https://a.example", "https://A.example"),
            ("https://a.example/realms/a", "https://a.example/realms/b"),
        ] {
            let err = Document::parse(doc(in_doc, "").as_bytes(), &issuer(configured), &src())
                .unwrap_err();
            assert!(
                matches!(err, DiscoveryError::IssuerMismatch { .. }),
                "{err:?}"
            );
            assert!(!err.is_transient());
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{configured:?}")) && msg.contains(&format!("{in_doc:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn unusable_documents_are_permanent_errors_that_say_why_but_non_json_may_pass() {
        let iss = issuer("https://idp.example");
        for body in ["<html>login</html>", "", "{\"issuer\":"] {
            let err = Document::parse(body.as_bytes(), &iss, &src()).unwrap_err();
            assert!(matches!(err, DiscoveryError::NotJson { .. }), "{err}");
            assert!(err.is_transient(), "{err}");
        }
        for (body, why) in [
            ("[]".to_string(), "not a JSON"),
            (
                r#"{"token_endpoint":"https://idp.example/t"}"#.to_string(),
                "no `issuer`",
            ),
            (
                r#"{"issuer":"https://idp.example"}"#.to_string(),
                "no `token_endpoint`",
            ),
            (
                r#"{"issuer":"https://idp.example","token_endpoint":"http://idp.example/t"}"#
                    .to_string(),
                "must be https",
            ),
            (
                r#"{"issuer":"https://idp.example","token_endpoint":"/token"}"#.to_string(),
                "not a URL",
            ),
            (
                doc(
                    "https://idp.example",
                    r#","token_endpoint_auth_methods_supported":"private_key_jwt""#,
                ),
                "not a JSON",
            ),
        ] {
            let err = Document::parse(body.as_bytes(), &iss, &src()).unwrap_err();
            assert!(!err.is_transient(), "{err}");
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
        let big = format!(
            r#"{{"issuer":"https://idp.example","pad":"{}"}}"#,
            " ".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(matches!(
            Document::parse(big.as_bytes(), &iss, &src()),
            Err(DiscoveryError::TooLarge { .. })
        ));
        // http to loopback is fine from a loopback issuer (tests, a local proxy)...
        let local = issuer("http://127.0.0.1:9000");
        let body =
            r#"{"issuer":"http://127.0.0.1:9000","token_endpoint":"http://127.0.0.1:8080/token"}"#;
        assert!(Document::parse(body.as_bytes(), &local, &src()).is_ok());
        // ...but an https issuer's document may not send the credentials to plain http, not even on loopback.
        let body =
            r#"{"issuer":"https://idp.example","token_endpoint":"http://127.0.0.1:8080/token"}"#;
        let err = Document::parse(body.as_bytes(), &iss, &src()).unwrap_err();
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("is plain http but the issuer is https"),
            "{err}"
        );
    }

    #[test]
    fn a_discovered_plain_http_endpoint_is_refused_when_a_proxy_would_carry_it() {
        let local = issuer("http://127.0.0.1:9000");
        let d = Document::parse(
            r#"{"issuer":"http://127.0.0.1:9000","token_endpoint":"http://localhost:8080/token"}"#
                .as_bytes(),
            &local,
            &src(),
        )
        .unwrap();
        assert!(d.transport_rule(&local, |_| false).is_ok());
        let err = d.transport_rule(&local, |_| true).unwrap_err();
        assert!(!err.is_transient());
        let msg = err.to_string();
        assert!(
            msg.contains("a proxy from the environment")
                && msg.contains("add localhost to NO_PROXY"),
            "{msg}"
        );
        // https is never the proxy rule's business.
        let iss = issuer("https://idp.example");
        let d = Document::parse(doc("https://idp.example", "").as_bytes(), &iss, &src()).unwrap();
        assert!(d.transport_rule(&iss, |_| true).is_ok());
    }

    #[test]
    fn server_text_in_discovery_errors_is_cleaned_and_bounded() {
        use serde_json::json;
        let iss = issuer("https://idp.example");
        let nasty = format!(
            "x\r\n{{\"level\":\"ERROR\"}}\u{1b}[31m\u{202e}\u{2028}{}",
            "y".repeat(30_000)
        );
        let ok = "https://idp.example";
        let bodies = [
            json!({"issuer": nasty, "token_endpoint": "https://idp.example/t"}),
            json!({"issuer": ok, "token_endpoint": "https://idp.example/t",
                   "token_endpoint_auth_methods_supported": [nasty, nasty]}),
            json!({"issuer": ok, "token_endpoint": format!("https://idp.example/{}", "t".repeat(2000))}),
            json!({"issuer": ok, "token_endpoint": "https://idp.example/t", "grant_types_supported": nasty}),
            json!({"issuer": ok, "token_endpoint": nasty}),
        ];
        for body in &bodies {
            let err = match Document::parse(body.to_string().as_bytes(), &iss, &src()) {
                Err(e) => e,
                Ok(d) => choose_auth(&ClientAuth::None { client_id: None }, &d)
                    .map(|_| ())
                    .unwrap_err(),
            };
            let msg = err.to_string();
            assert!(msg.len() < 1000, "{} bytes: {msg}", msg.len());
            assert!(
                !msg.chars()
                    .any(|c| c.is_control() || c == '\u{202e}' || c == '\u{2028}'),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn the_document_round_trips_through_serde_for_the_warm_start_cache() {
        let d = Document::parse(
            doc(
                "https://idp.example/t",
                r#","grant_types_supported":["client_credentials"]"#,
            )
            .as_bytes(),
            &issuer("https://idp.example/t"),
            &src(),
        )
        .unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Document>(&json).unwrap(), d);
        let broken = json.replace("https://idp.example/oauth/token", "not a url");
        assert!(serde_json::from_str::<Document>(&broken).is_err());
    }

    fn methods(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_picks_the_best_method_both_sides_have() {
        use PickedMethod::*;
        let all = methods(&[
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
        ]);
        let c = |secret, private_key, assertion_file| Configured {
            secret,
            private_key,
            assertion_file,
        };
        for (supported, configured, want) in [
            (&all, c(true, true, true), PrivateKeyJwt),
            (&all, c(true, false, true), ClientAssertionFile),
            (&all, c(true, false, false), ClientSecretBasic),
            (
                &methods(&["client_secret_post"]),
                c(true, false, false),
                ClientSecretPost,
            ),
            (
                &methods(&["client_secret_post", "client_secret_basic"]),
                c(true, true, false),
                ClientSecretBasic,
            ),
            (
                &methods(&["client_secret_basic"]),
                c(true, false, false),
                ClientSecretBasic,
            ),
            (
                &methods(&["private_key_jwt"]),
                c(false, false, true),
                ClientAssertionFile,
            ),
        ] {
            assert_eq!(
                pick_auth_method(supported, configured).unwrap(),
                want,
                "{supported:?} {configured:?}"
            );
        }
        for (supported, configured, names) in [
            (
                methods(&["client_secret_basic"]),
                c(false, true, false),
                "private key",
            ),
            (
                methods(&["tls_client_auth"]),
                c(true, false, false),
                "client secret",
            ),
            (methods(&[]), c(true, true, true), "assertion file"),
            (all.clone(), c(false, false, false), "no client credentials"),
        ] {
            let err = pick_auth_method(&supported, configured).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(names) && msg.contains(&supported.join(", ")),
                "{msg}"
            );
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn status_errors_are_transient_only_when_asking_again_can_help() {
        let url = src();
        for (status, transient) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (401, false),
            (403, false),
            (302, false),
        ] {
            let e = DiscoveryError::Status {
                url: url.to_string(),
                status,
                retry_after: None,
            };
            assert_eq!(e.is_transient(), transient, "{status}");
        }
        assert!(!DiscoveryError::NotFound {
            tried: [url.to_string(), url.to_string()]
        }
        .is_transient());
        assert!(DiscoveryError::TooLarge {
            url: url.to_string()
        }
        .is_transient());
    }

    /// Path, status, body (`ADDR` becomes the server's address) and extra headers.
    type Route = (String, u16, String, Vec<(String, String)>);

    /// What the loopback metadata server answers on each path, and the paths it saw.
    #[derive(Clone)]
    struct Script {
        routes: Vec<Route>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    /// The loopback server answering `script`; unknown paths get 404.
    async fn serve(script: Script) -> std::net::SocketAddr {
        crate::token::test_http::serve(move |addr, path| {
            script.seen.lock().unwrap().push(path.to_string());
            script
                .routes
                .iter()
                .find(|(p, ..)| *p == path)
                .map(|(_, st, b, h)| (*st, b.replace("ADDR", &addr.to_string()), h.clone()))
                .unwrap_or((404, "{}".into(), vec![]))
        })
        .await
    }

    fn script(routes: &[(&str, u16, &str)]) -> Script {
        Script {
            routes: routes
                .iter()
                .map(|(p, s, b)| (p.to_string(), *s, b.to_string(), vec![]))
                .collect(),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn fetch_tries_oidc_then_rfc8414_and_falls_back_only_after_a_404() {
        let doc = r#"{"issuer":"http://ADDR/tenant","token_endpoint":"http://ADDR/tenant/token"}"#;
        // Both exist: the OIDC form wins and RFC 8414's is never asked.
        let sc = script(&[
            ("/tenant/.well-known/openid-configuration", 200, doc),
            ("/.well-known/oauth-authorization-server/tenant", 500, "{}"),
        ]);
        let addr = serve(sc.clone()).await;
        let d = fetch(&client(), &issuer(&format!("http://{addr}/tenant")))
            .await
            .unwrap();
        assert_eq!(
            d.token_endpoint.as_str(),
            format!("http://{addr}/tenant/token")
        );
        assert_eq!(d.source.path(), "/tenant/.well-known/openid-configuration");
        assert_eq!(
            *sc.seen.lock().unwrap(),
            ["/tenant/.well-known/openid-configuration"]
        );

        // Only the RFC 8414 form exists: 404 first, then that one.
        let sc = script(&[("/.well-known/oauth-authorization-server/tenant", 200, doc)]);
        let addr = serve(sc.clone()).await;
        let d = fetch(&client(), &issuer(&format!("http://{addr}/tenant")))
            .await
            .unwrap();
        assert_eq!(
            d.source.path(),
            "/.well-known/oauth-authorization-server/tenant"
        );
        assert_eq!(
            *sc.seen.lock().unwrap(),
            [
                "/tenant/.well-known/openid-configuration",
                "/.well-known/oauth-authorization-server/tenant"
            ]
        );

        // Neither: a permanent error naming both URLs.
        let sc = script(&[]);
        let addr = serve(sc.clone()).await;
        let err = fetch(&client(), &issuer(&format!("http://{addr}/tenant")))
            .await
            .unwrap_err();
        assert!(matches!(err, DiscoveryError::NotFound { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains("openid-configuration")
                && err
                    .to_string()
                    .contains("oauth-authorization-server/tenant"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn fetch_does_not_fall_back_on_a_server_error_and_classifies_it() {
        let doc = r#"{"issuer":"http://ADDR","token_endpoint":"http://ADDR/token"}"#;
        let mut sc = script(&[
            ("/.well-known/openid-configuration", 503, "{}"),
            ("/.well-known/oauth-authorization-server", 200, doc),
        ]);
        sc.routes[0].3 = vec![("Retry-After".into(), "7".into())];
        let addr = serve(sc.clone()).await;
        let err = fetch(&client(), &issuer(&format!("http://{addr}")))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            sc.seen.lock().unwrap().len(),
            1,
            "a 503 is not a missing document"
        );

        let sc = script(&[("/.well-known/openid-configuration", 429, "{}")]);
        let addr = serve(sc).await;
        assert!(fetch(&client(), &issuer(&format!("http://{addr}")))
            .await
            .unwrap_err()
            .is_transient());

        let sc = script(&[("/.well-known/openid-configuration", 403, "{}")]);
        let addr = serve(sc).await;
        assert!(!fetch(&client(), &issuer(&format!("http://{addr}")))
            .await
            .unwrap_err()
            .is_transient());
    }

    #[tokio::test]
    async fn fetch_checks_the_issuer_caps_the_body_and_calls_a_closed_port_transient() {
        // A trailing slash in the configured issuer is a mismatch, not a normalisation.
        let doc = r#"{"issuer":"http://ADDR/t","token_endpoint":"http://ADDR/t/token"}"#;
        let sc = script(&[("/t/.well-known/openid-configuration", 200, doc)]);
        let addr = serve(sc).await;
        let err = fetch(&client(), &issuer(&format!("http://{addr}/t/")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DiscoveryError::IssuerMismatch { .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());

        let huge = format!(
            r#"{{"issuer":"http://ADDR","pad":"{}"}}"#,
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        let sc = script(&[("/.well-known/openid-configuration", 200, &huge)]);
        let addr = serve(sc).await;
        let err = fetch(&client(), &issuer(&format!("http://{addr}")))
            .await
            .unwrap_err();
        assert!(matches!(err, DiscoveryError::TooLarge { .. }), "{err:?}");

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = fetch(&client(), &issuer(&format!("http://{closed}")))
            .await
            .unwrap_err();
        assert!(matches!(err, DiscoveryError::Network { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    #[test]
    fn a_cached_document_is_refetched_after_a_day_or_when_the_clock_went_back() {
        let d = Document::parse(
            doc("https://idp.example", "").as_bytes(),
            &issuer("https://idp.example"),
            &src(),
        )
        .unwrap();
        let c = Cached {
            document: d,
            fetched_at: 1_000_000,
        };
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert!(!c.is_stale(at(1_000_000)));
        assert!(!c.is_stale(at(1_000_000 + 86_399)));
        assert!(c.is_stale(at(1_000_000 + 86_400)));
        assert!(c.is_stale(at(999_999)));
    }

    #[test]
    fn auto_moves_a_secret_between_basic_and_post_and_keeps_keys() {
        use crate::credentials::CredentialSource;
        let id = || CredentialSource::inline("c".into());
        let basic = ClientAuth::SecretBasic {
            client_id: id(),
            client_secret: id(),
        };
        let with = |m: &str| {
            Document::parse(
                doc(
                    "https://idp.example",
                    &format!(r#","token_endpoint_auth_methods_supported":{m}"#),
                )
                .as_bytes(),
                &issuer("https://idp.example"),
                &src(),
            )
            .unwrap()
        };
        let plain = Document::parse(
            doc("https://idp.example", "").as_bytes(),
            &issuer("https://idp.example"),
            &src(),
        )
        .unwrap();
        assert_eq!(
            choose_auth(&basic, &plain).unwrap().name(),
            "client_secret_basic"
        );
        assert_eq!(
            choose_auth(&basic, &with(r#"["client_secret_post","private_key_jwt"]"#))
                .unwrap()
                .name(),
            "client_secret_post"
        );
        assert_eq!(
            choose_auth(
                &basic,
                &with(r#"["client_secret_post","client_secret_basic"]"#)
            )
            .unwrap()
            .name(),
            "client_secret_basic"
        );
        let err = choose_auth(&basic, &with(r#"["private_key_jwt"]"#)).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("[private_key_jwt]"), "{err}");
        let file = ClientAuth::ClientAssertionFile {
            client_id: id(),
            path: "/sa".into(),
        };
        assert_eq!(
            choose_auth(&file, &with(r#"["private_key_jwt"]"#)).unwrap(),
            file
        );
        assert!(choose_auth(&file, &plain).is_err());
    }
}
