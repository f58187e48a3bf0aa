//! The token request itself: the grant's and the client authentication's fields, one POST, a bounded read of the answer, and the token or a classified, redacted error.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use secrecy::ExposeSecret;
use url::Url;

use super::auth::{AuthError, ClientAuth, RequestContext, TokenRequest};
use super::discovery::{self, choose_auth, Cached, DiscoveryError};
use super::error::{
    chain, is_oauth_error, looks_like_html, redact, redirect_target, status_error_to,
    transport_error, ErrorKind, FetchError, HTML_PAGE, URL_HINT,
};
use super::grant::Grant;
use super::http::USER_AGENT_VALUE;
use super::response::{read_bounded, retry_after, BodyError};
use super::token::{parse_token_response, Token};

/// Token responses are a few hundred bytes; anything past this is refused, never buffered.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What one token is requested with: where, how the client authenticates, the grant, and the extra form fields.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    pub(crate) url: Url,
    pub(crate) auth: ClientAuth,
    pub(crate) grant: Grant,
    /// `scope`, `audience`, `resource`, `params`, in the order they are sent.
    pub(crate) fields: Vec<(String, String)>,
    /// The lifetime assumed when the response has none (and the token is not a JWT).
    pub(crate) default_lifetime: Duration,
}

/// Vends tokens from one endpoint with one configuration.
pub(crate) struct TokenClient {
    http: reqwest::Client,
    spec: RequestSpec,
    /// The fingerprint of the credentials last sent, to notice a rotation.
    last_used: Mutex<Option<u64>>,
    /// Set with `issuer:`: the endpoint (and the method, for `auto`) comes from the issuer's document. Boxed: it is
    /// ~900 bytes, and most tokens have none.
    discovery: Option<Box<Discovering>>,
}

/// The discovery side of a client: the issuer, and what the last good document said.
struct Discovering {
    config: discovery::Discovery,
    current: Mutex<Option<Resolved>>,
    /// A document fetched since the owner last asked (`take_fetched`), to be saved in the warm-start state.
    fetched: Mutex<Option<Cached>>,
    /// The endpoint answered 404: fetch the document again before the next request.
    moved: std::sync::atomic::AtomicBool,
}

/// Where and how to ask, as a document said.
#[derive(Clone)]
struct Resolved {
    cached: Cached,
    url: Url,
    auth: ClientAuth,
}

fn discovery_error(e: DiscoveryError) -> FetchError {
    let kind = if e.is_transient() {
        ErrorKind::Discovery
    } else {
        ErrorKind::DiscoveryInvalid
    };
    let mut err = FetchError::new(kind, chain(&e));
    err.retry_after = e.retry_after();
    err
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("url", &self.spec.url.as_str())
            .field("auth", &self.spec.auth.name())
            .finish_non_exhaustive()
    }
}

/// A hash of everything a request reads at request time (client credentials, a subject token), to notice a rotation.
/// For a grant that reads nothing it is the client authentication's own fingerprint.
pub(crate) fn credentials_fingerprint(auth: &ClientAuth, grant: &Grant) -> Result<u64, AuthError> {
    Ok(combined(auth.fingerprint()?, grant.fingerprint()?))
}

/// One fingerprint of the client authentication's and the grant's.
fn combined(auth: u64, grant: u64) -> u64 {
    match grant {
        0 => auth,
        g => auth.rotate_left(1) ^ g,
    }
}

fn credentials_error(e: AuthError) -> FetchError {
    FetchError::new(ErrorKind::Credentials, chain(&e))
}

impl TokenClient {
    pub(crate) fn new(spec: RequestSpec, http: reqwest::Client) -> Self {
        TokenClient {
            http,
            spec,
            last_used: Mutex::new(None),
            discovery: None,
        }
    }

    /// With `Some`, the token endpoint is discovered from the issuer before the first request (`spec.url` is then
    /// the issuer's URL and is not posted to).
    pub(crate) fn discovering(mut self, discovery: Option<discovery::Discovery>) -> Self {
        self.discovery = discovery.map(|config| {
            Box::new(Discovering {
                config,
                current: Mutex::new(None),
                fetched: Mutex::new(None),
                moved: std::sync::atomic::AtomicBool::new(false),
            })
        });
        self
    }

    /// Whether the endpoint comes from discovery.
    pub(crate) fn discovers(&self) -> bool {
        self.discovery.is_some()
    }

    /// Adopts a document kept by an earlier run, when it is for this issuer and its method choice still holds.
    /// Used until a fresh one is fetched (at once if it is a day old, and kept if that fetch fails).
    pub(crate) fn restore_discovery(&self, cached: Cached) {
        let Some(d) = &self.discovery else { return };
        if cached.document.issuer != d.config.issuer.as_str() {
            tracing::info!(issuer = %d.config.issuer, "the saved discovery document is for another issuer; not used");
            return;
        }
        match self.resolve(d, cached) {
            Ok(r) => {
                tracing::info!(issuer = %d.config.issuer, token_endpoint = %r.url, fetched_at = %crate::token::token::rfc3339(r.cached.fetched_at()), "using the discovery document saved by the previous run");
                *lock(&d.current) = Some(r);
            }
            Err(e) => {
                tracing::info!(issuer = %d.config.issuer, error = %chain(&e), "the saved discovery document is not usable; discovering again")
            }
        }
    }

    /// The discovered endpoint answered 404: it may have moved, so the next request fetches the document again
    /// (and keeps this one if that fails).
    fn endpoint_moved(&self) {
        if let Some(d) = &self.discovery {
            d.moved.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The discovered token endpoint in use, `None` before discovery (or without it).
    pub(crate) fn discovered_endpoint(&self) -> Option<Url> {
        let d = self.discovery.as_ref()?;
        lock(&d.current).as_ref().map(|r| r.url.clone())
    }

    /// A document fetched since the last call, for the warm-start state.
    pub(crate) fn take_fetched(&self) -> Option<Cached> {
        self.discovery
            .as_ref()
            .and_then(|d| lock(&d.fetched).take())
    }

    fn resolve(&self, d: &Discovering, cached: Cached) -> Result<Resolved, DiscoveryError> {
        cached.document.check_transport(&d.config.issuer)?;
        let auth = if d.config.auto {
            choose_auth(&self.spec.auth, &cached.document)?
        } else {
            self.spec.auth.clone()
        };
        Ok(Resolved {
            url: cached.document.token_endpoint.clone(),
            cached,
            auth,
        })
    }

    /// Where to post and how to authenticate: the configured endpoint, or the discovered one (fetched when there is
    /// none yet or it is a day old; a failed refetch keeps the one in hand).
    async fn endpoint(&self, now: SystemTime) -> Result<(Url, ClientAuth), FetchError> {
        let Some(d) = &self.discovery else {
            return Ok((self.spec.url.clone(), self.spec.auth.clone()));
        };
        let held = lock(&d.current).clone();
        let moved = d.moved.swap(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = &held {
            if !moved && !r.cached.is_stale(now) {
                return Ok((r.url.clone(), r.auth.clone()));
            }
        }
        let fetched = discovery::fetch(&self.http, &d.config.issuer)
            .await
            .and_then(|document| {
                let secs = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |t| t.as_secs());
                self.resolve(
                    d,
                    Cached {
                        document,
                        fetched_at: secs,
                    },
                )
            });
        match (fetched, held) {
            (Ok(r), held) => {
                let changed = held
                    .as_ref()
                    .is_none_or(|h| h.url != r.url || h.auth.name() != r.auth.name());
                if changed {
                    tracing::info!(issuer = %d.config.issuer, source = %r.cached.document.source, token_endpoint = %r.url, auth_method = r.auth.name(), "discovered the token endpoint");
                }
                *lock(&d.fetched) = Some(r.cached.clone());
                *lock(&d.current) = Some(r.clone());
                Ok((r.url, r.auth))
            }
            (Err(e), Some(h)) => {
                tracing::warn!(issuer = %d.config.issuer, error = %chain(&e), fetched_at = %crate::token::token::rfc3339(h.cached.fetched_at()), "could not refresh the discovery document; using the one in hand");
                Ok((h.url, h.auth))
            }
            (Err(e), None) => Err(discovery_error(e)),
        }
    }

    #[cfg(test)]
    pub(crate) fn url(&self) -> &Url {
        &self.spec.url
    }

    pub(crate) fn auth(&self) -> &ClientAuth {
        &self.spec.auth
    }

    #[cfg(test)]
    /// The request as it would be sent now: credentials read fresh, the grant's and authentication's fields added.
    /// With discovery, `fetch` sends it to the discovered endpoint (and, for `auto`, in the form picked) instead.
    pub(crate) fn request(&self, now: SystemTime) -> Result<TokenRequest, AuthError> {
        Ok(self.request_to(&self.spec.url, &self.spec.auth, now)?.0)
    }

    /// The request, and the [`credentials_fingerprint`] of the credentials in it: every file is read once.
    fn request_to(
        &self,
        url: &Url,
        auth: &ClientAuth,
        now: SystemTime,
    ) -> Result<(TokenRequest, u64), AuthError> {
        let ctx = RequestContext {
            token_url: url,
            now,
        };
        let mut req = TokenRequest::default();
        let grant = self.spec.grant.apply(&mut req, &ctx)?;
        for (k, v) in &self.spec.fields {
            req.field(k, v);
        }
        let auth = auth.apply(&mut req, &ctx)?;
        Ok((req, combined(auth, grant)))
    }

    /// Whether the credentials on disk differ from those last sent (a rotation happened).
    pub(crate) fn credentials_changed(&self) -> bool {
        let last = *lock(&self.last_used);
        // `auto` may have switched the form of the secret; the fingerprint is of the form that was sent.
        let auth = self
            .discovery
            .as_ref()
            .and_then(|d| lock(&d.current).as_ref().map(|r| r.auth.clone()))
            .unwrap_or_else(|| self.spec.auth.clone());
        match (credentials_fingerprint(&auth, &self.spec.grant), last) {
            (Ok(now), Some(last)) => now != last,
            _ => false,
        }
    }

    /// One token request. `issued_at` is taken before sending, so the token's times err on the early side.
    pub(crate) async fn fetch(&self, issued_at: SystemTime) -> Result<Token, FetchError> {
        let (url, auth) = self.endpoint(issued_at).await?;
        let (req, fingerprint) = self
            .request_to(&url, &auth, issued_at)
            .map_err(credentials_error)?;
        *lock(&self.last_used) = Some(fingerprint);
        let forms = req.redaction_forms();
        self.send(&url, &req, issued_at, &forms)
            .await
            .map_err(|mut e| {
                // A server may echo what it was sent; it must not reach our logs.
                e.message = redact(&e.message, &forms);
                e
            })
    }

    async fn send(
        &self,
        url: &Url,
        req: &TokenRequest,
        issued_at: SystemTime,
        forms: &[String],
    ) -> Result<Token, FetchError> {
        let mut out = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(req.body());
        if let Some(value) = req.authorization() {
            let mut v = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                FetchError::new(
                    ErrorKind::Credentials,
                    "the client id or secret contains characters that cannot be sent in a header",
                )
            })?;
            v.set_sensitive(true);
            out = out.header(AUTHORIZATION, v);
        }
        let resp = out.send().await.map_err(|e| transport_error(url, &e))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        let location = redirect_target(resp.headers(), url);
        let is_html = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
        let body = self.read_body(url, resp).await.map_err(|mut e| {
            e.retry_after = retry_after;
            e
        })?;
        if status.is_success() && !is_oauth_error(&body) {
            if is_html || looks_like_html(&body) {
                return Err(FetchError::new(
                    ErrorKind::InvalidResponse,
                    format!("token endpoint {url} answered HTTP {}, but {HTML_PAGE} instead of a token; {URL_HINT}", status.as_u16()),
                ));
            }
            return parse_token_response(&body, issued_at, self.spec.default_lifetime)
                .map_err(|e| FetchError::new(e.kind(), format!("token endpoint {url}: {e}")));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            self.endpoint_moved();
        }
        let mut err = status_error_to(url, status, &body, is_html, forms, location.as_deref());
        err.retry_after = retry_after;
        Err(err)
    }

    async fn read_body(&self, url: &Url, resp: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        read_bounded(resp, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => FetchError::new(
                    ErrorKind::ResponseTooLarge,
                    format!(
                        "token endpoint {url} sent a response larger than {} KiB; refused",
                        MAX_BODY_BYTES / 1024
                    ),
                ),
                BodyError::Transport(e) => transport_error(url, &e),
                BodyError::Other(cause) => FetchError::new(
                    ErrorKind::Network,
                    format!("token endpoint {url}: the response broke off: {cause}"),
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialSource;
    use crate::token::auth::basic_auth;
    use crate::token::error::status_error;

    fn client(auth: ClientAuth) -> TokenClient {
        let spec = RequestSpec {
            url: Url::parse("http://127.0.0.1:9/token").unwrap(),
            auth,
            grant: Grant::ClientCredentials,
            fields: vec![
                ("scope".into(), "read write".into()),
                ("audience".into(), "aud".into()),
                ("resource".into(), "r1".into()),
                ("resource".into(), "r2".into()),
                ("tenant".into(), "x y".into()),
            ],
            default_lifetime: Duration::from_secs(300),
        };
        TokenClient::new(spec, reqwest::Client::new())
    }

    fn secret_pair(id: &str, secret: &str) -> (CredentialSource, CredentialSource) {
        (
            CredentialSource::inline(id.to_string()),
            CredentialSource::inline(secret.to_string()),
        )
    }

    #[test]
    fn echoed_credentials_are_redacted_in_every_form_even_where_the_text_is_cut() {
        let (client_id, client_secret) = secret_pair("my-client", "p+w/s3cret");
        let c = client(ClientAuth::SecretBasic {
            client_id,
            client_secret,
        });
        let forms = c.request(SystemTime::UNIX_EPOCH).unwrap().redaction_forms();
        let basic = basic_auth("my-client", "p+w/s3cret", false);
        let b64 = basic.trim_start_matches("Basic ");
        // The credential sits across the 200-character cut of the detail.
        let description = format!(
            "{} got {basic} body client_id=my-client&client_secret={} and {}",
            "x".repeat(170),
            "p%2Bw%2Fs3cret",
            "p+w/s3cret"
        );
        let body = serde_json::json!({"error": "invalid_client", "error_description": description});
        let e = status_error(
            c.url(),
            reqwest::StatusCode::UNAUTHORIZED,
            body.to_string().as_bytes(),
            false,
            &forms,
        );
        assert_eq!(e.kind, ErrorKind::InvalidClient);
        for leak in [&b64[..12], "p+w", "p%2Bw", "my-client"] {
            assert!(!e.message.contains(leak), "{leak} in {}", e.message);
        }
        assert!(e.message.contains("(redacted)"), "{}", e.message);
    }

    #[test]
    fn body_carries_every_field_and_post_credentials_only_for_post() {
        let (client_id, client_secret) = secret_pair("i d", "p+w");
        let basic = client(ClientAuth::SecretBasic {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
        });
        assert_eq!(
            basic.request(SystemTime::UNIX_EPOCH).unwrap().body(),
            "grant_type=client_credentials&scope=read+write&audience=aud&resource=r1&resource=r2&tenant=x+y"
        );
        let post = client(ClientAuth::SecretPost {
            client_id,
            client_secret,
        });
        assert!(post
            .request(SystemTime::UNIX_EPOCH)
            .unwrap()
            .body()
            .ends_with("&tenant=x+y&client_id=i+d&client_secret=p%2Bw"));
    }

    /// A loopback server whose answers (by path) can change between requests; records the paths asked for.
    #[derive(Clone, Default)]
    struct Routes(std::sync::Arc<Mutex<(Vec<Route>, Vec<String>)>>);

    /// Path, status, body.
    type Route = (String, u16, String);

    impl Routes {
        fn set(&self, path: &str, status: u16, body: &str) {
            let mut g = self.0.lock().unwrap();
            g.0.retain(|(p, ..)| p != path);
            g.0.push((path.into(), status, body.into()));
        }
        fn take_seen(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap().1)
        }
    }

    async fn serve(routes: Routes) -> std::net::SocketAddr {
        crate::token::test_http::serve(move |_, path| {
            let mut g = routes.0.lock().unwrap();
            g.1.push(path.to_string());
            g.0.iter()
                .find(|(p, ..)| *p == path)
                .map(|(_, st, b)| (*st, b.clone(), vec![]))
                .unwrap_or((404, "{}".into(), vec![]))
        })
        .await
    }

    #[tokio::test]
    async fn the_discovered_endpoint_is_kept_for_a_day_kept_when_a_refetch_fails_and_refetched_after_a_404(
    ) {
        let routes = Routes::default();
        let addr = serve(routes.clone()).await;
        let issuer = format!("http://{addr}/r");
        let wk = "/r/.well-known/openid-configuration";
        let good_doc =
            format!(r#"{{"issuer":"{issuer}","token_endpoint":"http://{addr}/r/token"}}"#);
        routes.set(wk, 200, &good_doc);
        routes.set(
            "/r/token",
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":300}"#,
        );
        let discovery = || {
            Some(discovery::Discovery {
                issuer: discovery::Issuer::parse(&issuer).unwrap(),
                auto: false,
            })
        };
        let c = client(ClientAuth::SecretPost {
            client_id: CredentialSource::inline("c".into()),
            client_secret: CredentialSource::inline("s".into()),
        })
        .discovering(discovery());
        let t0 = SystemTime::now();
        let h = Duration::from_secs(3600);

        c.fetch(t0).await.unwrap();
        assert_eq!(routes.take_seen(), [wk, "/r/token"]);
        let saved = c.take_fetched().expect("a document to save");
        assert_eq!(saved.document.token_endpoint.path(), "/r/token");
        assert!(c.take_fetched().is_none());

        // Within a day: no discovery request.
        c.fetch(t0 + 23 * h).await.unwrap();
        assert_eq!(routes.take_seen(), ["/r/token"]);

        // A day on, the IdP's discovery is failing: the document in hand is used, nothing new to save.
        routes.set(wk, 503, "{}");
        c.fetch(t0 + 25 * h).await.unwrap();
        assert_eq!(routes.take_seen(), [wk, "/r/token"]);
        assert!(c.take_fetched().is_none());

        // The endpoint answers 404: the next request fetches the document first, even within the day.
        routes.set(wk, 200, &good_doc);
        let t1 = t0 + 25 * h;
        c.fetch(t1).await.unwrap();
        assert_eq!(routes.take_seen(), [wk, "/r/token"]);
        routes.set("/r/token", 404, "{}");
        assert!(c.fetch(t1).await.is_err());
        assert_eq!(routes.take_seen(), ["/r/token"]);
        routes.set(
            "/r/token",
            200,
            r#"{"access_token":"at-2","token_type":"Bearer","expires_in":300}"#,
        );
        c.fetch(t1).await.unwrap();
        assert_eq!(routes.take_seen(), [wk, "/r/token"]);

        // Without a document in hand, a discovery failure is the request's error, transient for a 503.
        let fresh = client(ClientAuth::None { client_id: None }).discovering(discovery());
        routes.set(wk, 503, "{}");
        let e = fresh.fetch(t1).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Discovery, "{e}");
        assert!(!e.kind.is_permanent());
    }
}
