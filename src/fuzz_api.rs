//! The fuzz targets' way in (fuzz/): thin wrappers over the parsers production runs, with only std types in their signatures.
//!
//! Not an API: hidden from the docs, changed together with fuzz/. Every function here calls the production function
//! named in its doc and adds nothing but the conversion of its result to std types, so the parsers can stay
//! `pub(crate)` and still be fuzzed as they are.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

use crate::config::{Config, Format, OutputConfig};
use crate::refresh::sink::{self, Refusal, Sink};
use crate::token::auth::TokenRequest;
use crate::token::discovery::{Cached, Document, Issuer};
use crate::token::error;
use crate::token::jws::{KeyId, SigningKey};
use crate::token::token::{parse_token_response, TokenRecord};
use crate::token::Token;

/// What a parsed token holds, in std types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    pub secret: String,
    pub issued_at: SystemTime,
    pub lifetime: Duration,
    pub refresh_time: SystemTime,
    pub scope: Option<String>,
}

impl TokenView {
    fn of(t: &Token) -> TokenView {
        TokenView {
            secret: t.secret().to_string(),
            issued_at: t.issued_at,
            lifetime: t.lifetime,
            refresh_time: t.refresh_time(),
            scope: t.scope.clone(),
        }
    }
}

/// `token::token::parse_token_response`.
pub fn token_response(
    body: &[u8],
    issued_at: SystemTime,
    default_lifetime: Duration,
) -> Result<TokenView, String> {
    parse_token_response(body, issued_at, default_lifetime)
        .map(|t| TokenView::of(&t))
        .map_err(|e| e.to_string())
}

/// A token response parsed, its `json` record rendered (`output::render_record`, also the warm-start state's
/// record), parsed back and rebuilt (`TokenRecord::into_token`): the token parsed, and the one read back.
pub fn token_record_round_trip(
    body: &[u8],
    issued_at: SystemTime,
    default_lifetime: Duration,
) -> Option<(TokenView, Option<TokenView>)> {
    let t = parse_token_response(body, issued_at, default_lifetime).ok()?;
    let bytes = crate::output::render_record(&TokenRecord::from_token(&t, Some("fp".into())));
    let back = serde_json::from_slice::<TokenRecord>(&bytes)
        .ok()
        .and_then(TokenRecord::into_token)
        .map(|(t, _)| TokenView::of(&t));
    Some((TokenView::of(&t), back))
}

/// A token endpoint's answer as the client reads it: `token::error::redirect_target` of the `Location` header
/// value, then `token::error::is_oauth_error` and `token::error::status_error_to`. The body's classification, the
/// error's kind and message; `None` for a status code HTTP cannot carry.
pub fn oauth_error(
    body: &[u8],
    status: u16,
    is_html: bool,
    forms: &[String],
    location: Option<&[u8]>,
) -> Option<(bool, String, String)> {
    let status = reqwest::StatusCode::from_u16(status).ok()?;
    let url = url::Url::parse("https://idp.test/token").ok()?;
    let mut headers = HeaderMap::new();
    if let Some(v) = location.and_then(|l| HeaderValue::from_bytes(l).ok()) {
        headers.insert(LOCATION, v);
    }
    let to = error::redirect_target(&headers, &url);
    let e = error::status_error_to(&url, status, body, is_html, forms, to.as_deref());
    Some((
        error::is_oauth_error(body),
        e.kind.as_str().to_string(),
        e.message,
    ))
}

/// `token::response::retry_after` for one `Retry-After` header value; `None` also for bytes a header cannot hold.
pub fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_bytes(value).ok()?);
    crate::token::response::retry_after(&h, now)
}

/// `token::error::sanitize`.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    error::sanitize(s, max_chars)
}

/// `token::error::SERVER_TEXT_MAX`.
pub const SERVER_TEXT_MAX: usize = error::SERVER_TEXT_MAX;

/// How far in the future a sealed record's time may lie and still be adopted.
pub const MAX_CLOCK_SKEW: Duration = sink::MAX_CLOCK_SKEW;

/// `token::error::REDACT_RUN`.
pub const REDACT_RUN: usize = error::REDACT_RUN;

/// `token::error::redact`.
pub fn redact(s: &str, forms: &[String]) -> String {
    error::redact(s, forms)
}

/// `TokenRequest::redaction_forms` of a request that sent each of `secrets` (`TokenRequest::redact`).
pub fn redaction_forms(secrets: &[&str]) -> Vec<String> {
    let mut req = TokenRequest::default();
    for s in secrets {
        req.redact(s);
    }
    req.redaction_forms()
}

/// A checked discovery document's token endpoint (`Issuer::parse`, then `Document::parse`).
pub fn discovery_document(body: &[u8], issuer: &str, source: &str) -> Result<String, String> {
    let issuer = Issuer::parse(issuer).map_err(|e| e.to_string())?;
    let source = url::Url::parse(source).map_err(|e| e.to_string())?;
    Document::parse(body, &issuer, &source)
        .map(|d| d.token_endpoint.to_string())
        .map_err(|e| e.to_string())
}

/// `token::jwt::exp_secs`, as a client assertion file's `exp` is read (`Some(None)` without one).
pub fn assertion_exp(jwt: &str) -> Option<Option<u64>> {
    crate::token::jwt::exp_secs(jwt)
}

/// `token::jwt::exp_secs`, as a subject token file's `exp` is read (`Some(None)` without one).
pub fn subject_token_exp(jwt: &str) -> Option<Option<u64>> {
    crate::token::jwt::exp_secs(jwt)
}

/// `token::token::jwt_exp`: the `exp` of an access token, the lifetime's fallback.
pub fn access_token_exp(token: &str) -> Option<SystemTime> {
    crate::token::token::jwt_exp(token)
}

/// `SigningKey::from_pem`: the key's type (`RS256`...) or why the PEM is refused.
pub fn signing_key(pem: &[u8]) -> Result<String, String> {
    SigningKey::from_pem(pem)
        .map(|k| format!("{:?}", k.key_type()))
        .map_err(|e| e.to_string())
}

/// `KeyId::from_certificate_pem` for the key in `key_pem` (which must parse).
pub fn certificate_key_id(cert_pem: &[u8], key_pem: &[u8]) -> Result<String, String> {
    let key = SigningKey::from_pem(key_pem).map_err(|e| e.to_string())?;
    KeyId::from_certificate_pem(cert_pem, &key)
        .map(|id| format!("{id:?}"))
        .map_err(|e| e.to_string())
}

/// `fsread::yaml_precheck` with the config's depth.
pub fn yaml_precheck(text: &str) -> Result<(), String> {
    crate::fsread::yaml_precheck(text, crate::fsread::YAML_MAX_DEPTH).map_err(|e| e.to_string())
}

/// `Config::parse` (the pre-check, then the YAML parser and validation): the number of tokens or the problems.
pub fn config(text: &str, file: &Path) -> Result<usize, String> {
    Config::parse(text, file)
        .map(|c| c.tokens.len())
        .map_err(|e| e.to_string())
}

/// A token's warm-start state and discovery record in `dir` (`refresh::sink::Sink` with `state_dir`), fingerprint
/// `"fp"`: the files are written here as given, then read the way a restart reads them.
pub struct StateStore {
    sink: Sink,
    key: ring::hmac::Key,
    state: PathBuf,
    discovery: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Result<StateStore, String> {
        let out = OutputConfig {
            path: dir.join("out/token"),
            format: Format::Raw,
            mode: 0o600,
            uid: None,
            gid: None,
        };
        let state_dir = dir.join("state");
        let sink = Sink::new("fz", vec![out], "fp".into(), Some(&state_dir));
        let state = sink
            .state_file()
            .ok_or("warm start is off in this directory")?
            .to_path_buf();
        let key_bytes = std::fs::read(state_dir.join(sink::KEY_FILE)).map_err(|e| e.to_string())?;
        Ok(StateStore {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
            discovery: sink::discovery_file_for(&state),
            state,
            sink,
        })
    }

    /// `record` sealed as a state file with this store's key (`refresh::sink::seal`).
    pub fn seal_state(&self, record: &[u8]) -> Vec<u8> {
        sink::seal(&self.key, "fp", record)
    }

    /// `record` sealed as a discovery record with this store's key.
    pub fn seal_discovery(&self, record: &[u8]) -> Vec<u8> {
        sink::seal_discovery(&self.key, "fp", record)
    }

    /// Writes `bytes` as the state file, then `Sink::check_warm`: the token adopted, or why not.
    pub fn check_warm(&self, bytes: &[u8], now: SystemTime) -> Result<TokenView, String> {
        put(&self.state, bytes)?;
        self.sink
            .check_warm(now)
            .map(|t| TokenView::of(&t))
            .map_err(refusal)
    }

    /// `Sink::write` of a parsed token response (outputs and state), then `Sink::check_warm` at `now`.
    pub fn write_then_check(
        &self,
        body: &[u8],
        issued_at: SystemTime,
        now: SystemTime,
    ) -> Option<(TokenView, Result<TokenView, String>)> {
        let t = parse_token_response(body, issued_at, Duration::from_secs(300)).ok()?;
        self.sink.write(&t, false).ok()?;
        Some((
            TokenView::of(&t),
            self.sink
                .check_warm(now)
                .map(|t| TokenView::of(&t))
                .map_err(refusal),
        ))
    }

    /// Writes `bytes` as the discovery record, then `Sink::check_discovery`: the cached document's issuer, token
    /// endpoint and fetch time, or why it is not adopted.
    pub fn check_discovery(
        &self,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<(String, String, SystemTime), String> {
        put(&self.discovery, bytes)?;
        self.sink
            .check_discovery(now)
            .map(|c: Cached| {
                (
                    c.document.issuer.clone(),
                    c.document.token_endpoint.to_string(),
                    c.fetched_at(),
                )
            })
            .map_err(refusal)
    }
}

fn refusal(r: Refusal) -> String {
    format!("{r:?}")
}

/// Replaces `path` by `bytes`, mode 0600, as the sidecar would have left it.
fn put(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("fuzz-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
