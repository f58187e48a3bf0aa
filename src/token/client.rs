//! The RFC 6749 §4.4 client-credentials request, and the classification of every way it can fail into transient or permanent.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use super::token::{parse_token_response, Token};
use crate::config::{AuthMethod, HttpConfig, TokenConfig};
use crate::credentials::Credentials;

/// Token responses are a few hundred bytes; anything past this is refused, never buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const USER_AGENT_VALUE: &str = concat!("token-vendor/", env!("CARGO_PKG_VERSION"));

/// What went wrong, in the words used by `/status`, the logs and the `kind` of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Network,
    Timeout,
    UnknownHost,
    Tls,
    ServerError,
    RateLimited,
    TemporarilyUnavailable,
    InvalidResponse,
    ResponseTooLarge,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidRequest,
    InvalidGrant,
    ClientError,
    Redirect,
    Credentials,
    OutputWrite,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Network => "network",
            Timeout => "timeout",
            UnknownHost => "unknown_host",
            Tls => "tls",
            ServerError => "server_error",
            RateLimited => "rate_limited",
            TemporarilyUnavailable => "temporarily_unavailable",
            InvalidResponse => "invalid_response",
            ResponseTooLarge => "response_too_large",
            InvalidClient => "invalid_client",
            UnauthorizedClient => "unauthorized_client",
            UnsupportedGrantType => "unsupported_grant_type",
            InvalidScope => "invalid_scope",
            InvalidRequest => "invalid_request",
            InvalidGrant => "invalid_grant",
            ClientError => "client_error",
            Redirect => "redirect",
            Credentials => "credentials",
            OutputWrite => "output_write",
        }
    }

    /// Permanent errors will not go away by asking again with the same credentials and config.
    pub fn is_permanent(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            UnknownHost
                | Tls
                | InvalidClient
                | UnauthorizedClient
                | UnsupportedGrantType
                | InvalidScope
                | InvalidRequest
                | InvalidGrant
                | ClientError
                | Redirect
                | Credentials
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed token request. The message names the URL and the cause, never a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub kind: ErrorKind,
    pub message: String,
    /// The server's `Retry-After`, as a delay from when the answer arrived.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FetchError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Builds the HTTP client for one token: rustls, timeouts, extra CA, client certificate, no redirects.
pub fn build_http_client(http: &HttpConfig, url: &Url) -> Result<reqwest::Client, String> {
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
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "ca_file {} is not a PEM certificate bundle: {e}",
                ca.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&http.client_cert_file, &http.client_key_file) {
        let mut pem = std::fs::read(cert)
            .map_err(|e| format!("cannot read client_cert_file {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key)
                .map_err(|e| format!("cannot read client_key_file {}: {e}", key.display()))?,
        );
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            format!("client_cert_file/client_key_file are not a PEM certificate and key: {e}")
        })?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// HTTP clients shared by tokens with the same HTTP settings: one pool and one CA store, not one per token.
#[derive(Default)]
pub struct HttpClients(
    std::sync::Mutex<std::collections::HashMap<(HttpConfig, bool), reqwest::Client>>,
);

impl HttpClients {
    pub fn get(&self, http: &HttpConfig, url: &Url) -> Result<reqwest::Client, String> {
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

/// Vends tokens from one endpoint with one configuration.
pub struct TokenClient {
    http: reqwest::Client,
    url: Url,
    auth_method: AuthMethod,
    fields: Vec<(String, String)>,
    default_lifetime: Duration,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// RFC 6749 §2.3.1: `application/x-www-form-urlencoded` before Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `Authorization: Basic` value for a client id and secret.
pub fn basic_auth(id: &str, secret: &str, raw: bool) -> String {
    let pair = if raw {
        format!("{id}:{secret}")
    } else {
        format!("{}:{}", form_encode(id), form_encode(secret))
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

impl TokenClient {
    pub fn new(cfg: &TokenConfig, clients: &HttpClients) -> Result<Self, String> {
        let mut fields = vec![("grant_type".to_string(), "client_credentials".to_string())];
        if let Some(s) = &cfg.scope {
            fields.push(("scope".into(), s.clone()));
        }
        if let Some(a) = &cfg.audience {
            fields.push(("audience".into(), a.clone()));
        }
        for r in &cfg.resource {
            fields.push(("resource".into(), r.clone()));
        }
        for (k, v) in &cfg.params {
            fields.push((k.clone(), v.clone()));
        }
        Ok(TokenClient {
            http: clients.get(&cfg.http, &cfg.token_url)?,
            url: cfg.token_url.clone(),
            auth_method: cfg.auth_method,
            fields,
            default_lifetime: cfg.default_lifetime,
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The form body for these credentials.
    pub fn body(&self, creds: &Credentials) -> String {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            f.append_pair(k, v);
        }
        if self.auth_method == AuthMethod::ClientSecretPost {
            f.append_pair("client_id", creds.client_id.expose_secret());
            f.append_pair("client_secret", creds.client_secret.expose_secret());
        }
        f.finish()
    }

    /// One token request. `issued_at` is taken before sending, so the token's times err on the early side.
    pub async fn fetch(
        &self,
        creds: &Credentials,
        issued_at: SystemTime,
    ) -> Result<Token, FetchError> {
        let forms = self.sent_forms(creds);
        self.fetch_inner(creds, issued_at, &forms)
            .await
            .map_err(|mut e| {
                // A server may echo what it was sent; it must not reach our logs.
                e.message = redact(&e.message, &forms);
                e
            })
    }

    /// Every form in which the id and secret left in the request: as they are, form-encoded, and as the Basic
    /// credential. Longest first, so that no form is left half-replaced by a shorter one.
    fn sent_forms(&self, creds: &Credentials) -> Vec<String> {
        let (id, secret) = (
            creds.client_id.expose_secret(),
            creds.client_secret.expose_secret(),
        );
        let raw = self.auth_method == AuthMethod::ClientSecretBasicRaw;
        let basic = basic_auth(id, secret, raw);
        let mut forms: Vec<String> = [
            basic.trim_start_matches("Basic ").to_string(),
            form_encode(secret),
            secret.to_string(),
            form_encode(id),
            id.to_string(),
        ]
        .into_iter()
        .filter(|s| s.len() >= 3)
        .collect();
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        forms.dedup();
        forms
    }

    async fn fetch_inner(
        &self,
        creds: &Credentials,
        issued_at: SystemTime,
        forms: &[String],
    ) -> Result<Token, FetchError> {
        let mut req = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(self.body(creds));
        match self.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretBasicRaw => {
                let raw = self.auth_method == AuthMethod::ClientSecretBasicRaw;
                let value = basic_auth(
                    creds.client_id.expose_secret(),
                    creds.client_secret.expose_secret(),
                    raw,
                );
                let mut v = reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| FetchError::new(ErrorKind::Credentials, "the client id or secret contains characters that cannot be sent in a header"))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            AuthMethod::ClientSecretPost => {}
        }
        let mut resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        let is_html = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
        let body = self.read_body(&mut resp).await.map_err(|mut e| {
            e.retry_after = retry_after;
            e
        })?;
        if status.is_success() {
            if is_html || looks_like_html(&body) {
                return Err(FetchError::new(
                    ErrorKind::InvalidResponse,
                    format!("token endpoint {} answered HTTP {}, but the endpoint returned an HTML page instead of a token", self.url, status.as_u16()),
                ));
            }
            return parse_token_response(&body, issued_at, self.default_lifetime).map_err(|e| {
                FetchError::new(
                    ErrorKind::InvalidResponse,
                    format!("token endpoint {}: {e}", self.url),
                )
            });
        }
        let mut err = self.status_error_redacted(status, &body, is_html, forms);
        err.retry_after = retry_after;
        Err(err)
    }

    async fn read_body(&self, resp: &mut reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let too_large = || {
            FetchError::new(
                ErrorKind::ResponseTooLarge,
                format!(
                    "token endpoint {} sent a response larger than {} KiB; refused",
                    self.url,
                    MAX_BODY_BYTES / 1024
                ),
            )
        };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(&e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    #[cfg(test)]
    fn status_error(&self, status: reqwest::StatusCode, body: &[u8], is_html: bool) -> FetchError {
        self.status_error_redacted(status, body, is_html, &[])
    }

    /// The error for a non-2xx answer. Server text is stripped of `forms` before it is shortened, so that no
    /// credential survives even in part.
    fn status_error_redacted(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
        is_html: bool,
        forms: &[String],
    ) -> FetchError {
        let clean = |s: &str| sanitize(&redact(s, forms));
        let code = status.as_u16();
        let json: Option<Map<String, Value>> = if is_html {
            None
        } else {
            serde_json::from_slice(body).ok()
        };
        let error_code = json
            .as_ref()
            .and_then(|m| m.get("error"))
            .and_then(Value::as_str)
            .map(clean);
        let detail = if is_html || (json.is_none() && looks_like_html(body)) {
            "the endpoint returned an HTML page".to_string()
        } else {
            json.as_ref()
                .and_then(error_detail)
                .map(clean)
                .unwrap_or_else(|| {
                    status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_string()
                })
        };
        let kind = match (code, error_code.as_deref()) {
            (_, Some("temporarily_unavailable")) => ErrorKind::TemporarilyUnavailable,
            (429, _) => ErrorKind::RateLimited,
            (500..=599, _) => ErrorKind::ServerError,
            (_, Some("invalid_client")) => ErrorKind::InvalidClient,
            (_, Some("unauthorized_client")) => ErrorKind::UnauthorizedClient,
            (_, Some("unsupported_grant_type")) => ErrorKind::UnsupportedGrantType,
            (_, Some("invalid_scope")) => ErrorKind::InvalidScope,
            (_, Some("invalid_request")) => ErrorKind::InvalidRequest,
            (_, Some("invalid_grant")) => ErrorKind::InvalidGrant,
            (408, _) => ErrorKind::Timeout,
            (401, _) => ErrorKind::InvalidClient,
            (400..=499, _) => ErrorKind::ClientError,
            (300..=399, _) => ErrorKind::Redirect,
            _ => ErrorKind::InvalidResponse,
        };
        let reason = status
            .canonical_reason()
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        let code_part = match &error_code {
            Some(c) if !detail.contains(c.as_str()) => format!("{c}: "),
            _ => String::new(),
        };
        let hint = if kind == ErrorKind::Redirect {
            "; set token_url to the final token endpoint"
        } else {
            ""
        };
        FetchError::new(
            kind,
            format!(
                "token endpoint {} answered HTTP {code}{reason}: {code_part}{detail}{hint}",
                self.url
            ),
        )
    }

    fn transport_error(&self, e: &reqwest::Error) -> FetchError {
        let cause = root_cause(e);
        let (kind, what) = if e.is_timeout() {
            (ErrorKind::Timeout, "timed out".to_string())
        } else if has_rustls_error(e) {
            (ErrorKind::Tls, format!("TLS failed: {cause}"))
        } else if is_unknown_host(e) {
            (ErrorKind::UnknownHost, format!("unknown host: {cause}"))
        } else if e.is_connect() {
            (ErrorKind::Network, format!("could not connect: {cause}"))
        } else {
            (
                ErrorKind::Network,
                format!("the connection failed: {cause}"),
            )
        };
        FetchError::new(
            kind,
            format!("token request to {} failed: {what}", self.url),
        )
    }
}

/// Replaces every occurrence of each of `forms` (longest first) by `(redacted)`.
fn redact(s: &str, forms: &[String]) -> String {
    let mut out = s.to_string();
    for f in forms {
        out = out.replace(f.as_str(), "(redacted)");
    }
    out
}

fn error_detail(m: &Map<String, Value>) -> Option<&str> {
    let s = m
        .get("error_description")
        .and_then(Value::as_str)
        .or_else(|| m.get("message").and_then(Value::as_str))
        .or_else(|| {
            m.get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
        })
        .or_else(|| m.get("error").and_then(Value::as_str))?;
    Some(s)
}

/// Server text goes into logs: keep it short and printable.
fn sanitize(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn looks_like_html(body: &[u8]) -> bool {
    let start: Vec<u8> = body
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(15)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    start.starts_with(b"<!doctype html")
        || start.starts_with(b"<html")
        || start.starts_with(b"<head")
        || start.starts_with(b"<body")
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    sanitize(&cur.to_string())
}

fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn has_rustls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    sources(e).any(|s| {
        if s.is::<rustls::Error>() {
            return true;
        }
        // An io::Error hides what it wraps from source(), and the TLS stack wraps one io::Error in another.
        let mut inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        while let Some(i) = inner {
            if i.is::<rustls::Error>() {
                return true;
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref());
        }
        false
    })
}

fn is_unknown_host(e: &(dyn std::error::Error + 'static)) -> bool {
    // getaddrinfo's EAI_NONAME / EAI_NODATA; EAI_AGAIN ("Temporary failure") stays transient.
    sources(e).any(|s| {
        let m = s.to_string();
        m.contains("Name or service not known")
            || m.contains("No address associated with hostname")
            || m.contains("nodename nor servname")
    })
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(
            secs.min(super::token::MAX_LIFETIME.as_secs()),
        ));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn basic_auth_encodings_differ_only_for_special_characters() {
        let secret = "s3cr+t %/:&=x";
        // RFC 6749 §2.3.1: form-urlencode first (space becomes '+').
        let rfc = basic_auth("my client", secret, false);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rfc.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client:s3cr%2Bt+%25%2F%3A%26%3Dx"
        );
        // The reference client's raw form.
        let raw = basic_auth("my client", secret, true);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my client:s3cr+t %/:&=x"
        );
        // Plain secrets give identical output either way.
        assert_eq!(
            basic_auth("id", "Abc123-_.*", false),
            basic_auth("id", "Abc123-_.*", true)
        );
        assert_eq!(basic_auth("id", "secret", true), "Basic aWQ6c2VjcmV0");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn kinds_split_into_transient_and_permanent() {
        use ErrorKind::*;
        for k in [
            Network,
            Timeout,
            ServerError,
            RateLimited,
            TemporarilyUnavailable,
            InvalidResponse,
            ResponseTooLarge,
            OutputWrite,
        ] {
            assert!(!k.is_permanent(), "{k}");
        }
        for k in [
            InvalidClient,
            UnauthorizedClient,
            UnsupportedGrantType,
            InvalidScope,
            InvalidRequest,
            UnknownHost,
            Tls,
            ClientError,
        ] {
            assert!(k.is_permanent(), "{k}");
        }
    }

    fn client() -> TokenClient {
        let cfg = crate::config::Config::parse(
            "tokens: [{name: t, token_url: 'http://127.0.0.1:9/token', client_id: i, client_secret: s, scope: 'read write', audience: aud, resource: [r1, r2], params: {tenant: 'x y'}, outputs: [{path: /tmp/x}]}]",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        TokenClient::new(&cfg.tokens[0], &HttpClients::default()).unwrap()
    }

    #[test]
    fn status_errors_follow_the_reference_wording() {
        let c = client();
        let s = |code: u16| reqwest::StatusCode::from_u16(code).unwrap();
        let e = c.status_error(
            s(401),
            br#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
            false,
        );
        assert_eq!(e.kind, ErrorKind::InvalidClient);
        assert_eq!(e.message, "token endpoint http://127.0.0.1:9/token answered HTTP 401 Unauthorized: invalid_client: client authentication failed");
        let e = c.status_error(s(400), br#"{"message":"bad thing"}"#, false);
        assert_eq!(
            (e.kind, e.message.ends_with(": bad thing")),
            (ErrorKind::ClientError, true),
            "{}",
            e.message
        );
        let e = c.status_error(s(400), br#"{"error":{"message":"nested"}}"#, false);
        assert!(e.message.ends_with(": nested"), "{}", e.message);
        let e = c.status_error(
            s(500),
            b"<html><body>stack trace secret</body></html>",
            false,
        );
        assert_eq!(e.kind, ErrorKind::ServerError);
        assert!(
            e.message.ends_with("the endpoint returned an HTML page")
                && !e.message.contains("secret"),
            "{}",
            e.message
        );
        let e = c.status_error(s(503), b"", false);
        assert!(
            e.message
                .ends_with("HTTP 503 Service Unavailable: Service Unavailable"),
            "{}",
            e.message
        );
        let e = c.status_error(s(400), br#"{"error":"temporarily_unavailable"}"#, false);
        assert_eq!(e.kind, ErrorKind::TemporarilyUnavailable);
        let e = c.status_error(s(400), br#"{"error":"invalid_scope"}"#, false);
        assert_eq!(e.kind, ErrorKind::InvalidScope);
        assert_eq!(
            c.status_error(s(429), b"", false).kind,
            ErrorKind::RateLimited
        );
        assert_eq!(c.status_error(s(302), b"", false).kind, ErrorKind::Redirect);
    }

    #[test]
    fn a_certificate_error_inside_nested_io_errors_is_tls() {
        // How reqwest reports a refused server certificate: io::Error(Other, io::Error(InvalidData, rustls::Error)).
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, cert));
        assert!(has_rustls_error(&nested));
        assert!(!has_rustls_error(&std::io::Error::other("refused")));
    }

    #[test]
    fn echoed_credentials_are_redacted_in_every_form_even_where_the_text_is_cut() {
        let c = client();
        let creds = Credentials {
            client_id: "my-client".to_string().into(),
            client_secret: "p+w/s3cret".to_string().into(),
        };
        let forms = c.sent_forms(&creds);
        let basic = basic_auth("my-client", "p+w/s3cret", false);
        let b64 = basic.trim_start_matches("Basic ");
        // The credential sits across the 200-character cut of the detail.
        let description = format!(
            "{} got {basic} body client_id=my-client&client_secret={} and {}",
            "x".repeat(170),
            form_encode("p+w/s3cret"),
            "p+w/s3cret"
        );
        let body = serde_json::json!({"error": "invalid_client", "error_description": description});
        let e = c.status_error_redacted(
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
        let c = client();
        let creds = Credentials {
            client_id: "i d".to_string().into(),
            client_secret: "p+w".to_string().into(),
        };
        assert_eq!(
            c.body(&creds),
            "grant_type=client_credentials&scope=read+write&audience=aud&resource=r1&resource=r2&tenant=x+y"
        );
        let mut post = c;
        post.auth_method = AuthMethod::ClientSecretPost;
        assert!(post
            .body(&creds)
            .ends_with("&client_id=i+d&client_secret=p%2Bw"));
    }
}
