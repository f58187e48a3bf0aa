//! Why a token request failed: the error kinds, transient or permanent, `Retry-After`, and the wording and redaction of what the server said.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION};
use serde_json::{Map, Value};
use url::Url;

/// One table names each kind, its word in `/status`, logs and metrics, and whether asking again can help; the enum,
/// `ALL` (every counter exported at zero from the start), `as_str` and `is_permanent` are all made from it.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $kind:ident => $word:literal, $class:ident;)*) => {
        /// What went wrong, in the words used by `/status`, the logs and the `kind` of errors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorKind {
            /// Every kind, so each labelled error counter can be exported at zero from the start.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $word,)*
                }
            }

            /// Permanent errors will not go away by asking again with the same credentials and config.
            pub(crate) fn is_permanent(self) -> bool {
                match self {
                    $(ErrorKind::$kind => error_kinds!(@permanent $class),)*
                }
            }
        }
    };
    (@permanent permanent) => { true };
    (@permanent transient) => { false };
}

error_kinds! {
    Network => "network", transient;
    Timeout => "timeout", transient;
    UnknownHost => "unknown_host", permanent;
    Tls => "tls", permanent;
    ServerError => "server_error", transient;
    RateLimited => "rate_limited", transient;
    TemporarilyUnavailable => "temporarily_unavailable", transient;
    InvalidResponse => "invalid_response", transient;
    UnsupportedTokenType => "unsupported_token_type", permanent;
    ResponseTooLarge => "response_too_large", transient;
    InvalidClient => "invalid_client", permanent;
    UnauthorizedClient => "unauthorized_client", permanent;
    UnsupportedGrantType => "unsupported_grant_type", permanent;
    InvalidScope => "invalid_scope", permanent;
    InvalidRequest => "invalid_request", permanent;
    InvalidGrant => "invalid_grant", permanent;
    ClientError => "client_error", permanent;
    Redirect => "redirect", permanent;
    Credentials => "credentials", permanent;
    OutputWrite => "output_write", transient;
    /// The issuer's discovery document could not be had now (unreachable, 5xx, not JSON, too large): retried.
    Discovery => "discovery", transient;
    /// The discovery document is unusable as configured (issuer mismatch, no token endpoint, an endpoint the transport
    /// rule refuses, no common method).
    DiscoveryInvalid => "discovery_invalid", permanent;
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed token request. The message names the URL and the cause, never a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({kind})")]
pub(crate) struct FetchError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The server's `Retry-After`, as a delay from when the answer arrived.
    pub(crate) retry_after: Option<Duration>,
}

impl FetchError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FetchError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// An error and its sources as one line, `outer: inner: root`, for messages that travel as text (logs, `/status`).
/// A source whose words the line already holds (an error that prints its source too) is not said twice.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// The shortest run of a secret's characters that is redacted wherever it appears: a server that echoes part of a
/// credential (a prefix "for reference", a truncated value) must not put that part in a log line.
pub(crate) const REDACT_RUN: usize = 8;

/// Replaces by `(redacted)` every occurrence of each of `forms`, of the same forms with lower-case percent-encoding
/// (`%2f` for `%2F`), and every run of [`REDACT_RUN`] or more characters taken from a form of that length or longer.
///
/// Works on a mask of `s`, so that one replacement cannot hide or create another; linear in `s` plus the forms.
pub(crate) fn redact(s: &str, forms: &[String]) -> String {
    let mut all: Vec<String> = Vec::with_capacity(forms.len() * 2);
    for f in forms {
        all.push(f.clone());
        let lower = lower_percent(f);
        if lower != *f {
            all.push(lower);
        }
    }
    let mut mask = vec![false; s.len()];
    for f in &all {
        if f.is_empty() {
            continue;
        }
        for (i, _) in s.match_indices(f.as_str()) {
            mask[i..i + f.len()].iter_mut().for_each(|m| *m = true);
        }
    }
    // Every REDACT_RUN-character window of the long forms; a window of `s` found among them is part of a secret.
    let windows: std::collections::HashSet<&str> = all
        .iter()
        .flat_map(|f| char_windows(f).into_iter().map(|(_, w)| w))
        .collect();
    if !windows.is_empty() {
        for (start, w) in char_windows(s) {
            if windows.contains(w) {
                mask[start..start + w.len()]
                    .iter_mut()
                    .for_each(|m| *m = true);
            }
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut in_secret = false;
    for (i, c) in s.char_indices() {
        if mask[i] {
            if !in_secret {
                out.push_str("(redacted)");
                in_secret = true;
            }
        } else {
            in_secret = false;
            out.push(c);
        }
    }
    out
}

/// Every window of exactly REDACT_RUN characters of `s`, with its byte offset (none when `s` is shorter).
fn char_windows(s: &str) -> Vec<(usize, &str)> {
    let bounds: Vec<usize> = s
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()))
        .collect();
    (0..bounds.len().saturating_sub(REDACT_RUN))
        .map(|k| (bounds[k], &s[bounds[k]..bounds[k + REDACT_RUN]]))
        .collect()
}

/// `s` with the hex digits of its percent-escapes in lower case.
fn lower_percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(b[i + 1].to_ascii_lowercase() as char);
            out.push(b[i + 2].to_ascii_lowercase() as char);
            i += 3;
        } else {
            let Some(c) = s[i..].chars().next() else {
                break;
            };
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// What a refused client is told to look at (HTTP 401, `invalid_client`, `unauthorized_client`).
const CLIENT_HINT: &str = "likely causes: a wrong client id, a wrong or rotated client secret (or key), or an auth_method this server does not accept (try client_secret_post or client_secret_basic)";

/// What a 404 or an HTML page from the token endpoint is told to look at.
pub(crate) const URL_HINT: &str =
    "check token_url (or base_url, or issuer): it must name the token endpoint itself";

/// The detail of an answer that is a web page, not JSON.
pub(crate) const HTML_PAGE: &str = "the endpoint returned an HTML page";

/// [`status_error_to`] for an answer with no redirect target: the tests' shorthand.
#[cfg(test)]
pub(crate) fn status_error(
    url: &Url,
    status: reqwest::StatusCode,
    body: &[u8],
    is_html: bool,
    forms: &[String],
) -> FetchError {
    status_error_to(url, status, body, is_html, forms, None)
}

/// Whether a 2xx body is an OAuth error response (RFC 6749 §5.2: an `error` code and no `access_token`): some
/// servers answer errors with 200, and the error says more than "no access_token".
pub(crate) fn is_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(body).is_ok_and(|m| {
        m.get("error").is_some_and(Value::is_string) && !m.contains_key("access_token")
    })
}

/// Where a redirect points, for the message: resolved against `url`, with no user info, query or fragment (they may
/// carry secrets such as a session or a signed parameter). `None` without a usable `Location`.
pub(crate) fn redirect_target(headers: &HeaderMap, url: &Url) -> Option<String> {
    let raw = headers.get(LOCATION)?.to_str().ok()?;
    let mut to = url.join(raw).ok()?;
    let had_query = to.query().is_some();
    to.set_query(None);
    to.set_fragment(None);
    let _ = to.set_username("");
    let _ = to.set_password(None);
    let mut shown = sanitize(to.as_str(), SERVER_TEXT_MAX);
    if had_query {
        shown.push_str(" (query not shown)");
    }
    Some(shown)
}

/// The error for a non-2xx answer from `url`, which may carry a redirect target (from [`redirect_target`]), or for a 2xx
/// carrying an OAuth error ([`is_oauth_error`]), which is classified as the same error with a 4xx would be. Server text
/// is stripped of `forms` before it is shortened, so that no credential survives even in part.
pub(crate) fn status_error_to(
    url: &Url,
    status: reqwest::StatusCode,
    body: &[u8],
    is_html: bool,
    forms: &[String],
    location: Option<&str>,
) -> FetchError {
    let clean = |s: &str| sanitize(&redact(s, forms), SERVER_TEXT_MAX);
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
        HTML_PAGE.to_string()
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
        (400..=499, _) | (200..=299, Some(_)) => ErrorKind::ClientError,
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
    let html = detail == HTML_PAGE;
    let hint = match (kind, redact_opt(location, forms)) {
        (ErrorKind::Redirect, Some(to)) => {
            format!(" to {to}; set token_url to the final token endpoint")
        }
        (ErrorKind::Redirect, None) => "; set token_url to the final token endpoint".into(),
        (ErrorKind::InvalidClient | ErrorKind::UnauthorizedClient, _) => {
            format!("; {CLIENT_HINT}")
        }
        _ if code == 404 || html => format!("; {URL_HINT}"),
        _ => String::new(),
    };
    let instead = if status.is_success() {
        " with an error instead of a token"
    } else {
        ""
    };
    FetchError::new(
        kind,
        format!(
            "token endpoint {url} answered HTTP {code}{reason}{instead}: {code_part}{detail}{hint}"
        ),
    )
}

fn redact_opt(s: Option<&str>, forms: &[String]) -> Option<String> {
    s.map(|s| redact(s, forms))
}

/// The error for a request to `url` that got no complete answer.
pub(crate) fn transport_error(url: &Url, e: &reqwest::Error) -> FetchError {
    let (kind, what) = transport_failure(e);
    let hint = if kind == ErrorKind::UnknownHost {
        format!(
            "; check the host name {} in token_url (or base_url, or issuer) and that the pod's DNS can resolve it",
            url.host_str().unwrap_or("the one named")
        )
    } else {
        String::new()
    };
    FetchError::new(kind, format!("token request to {url} failed: {what}{hint}"))
}

/// What went wrong with a request that got no complete answer, in a few cleaned words (the root cause may quote the
/// server: a certificate's names, say).
pub(crate) fn transport_failure(e: &reqwest::Error) -> (ErrorKind, String) {
    let cause = root_cause(e);
    if e.is_timeout() {
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
    }
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

/// The most characters of one piece of server text (an error description, a discovery field) that a message keeps.
pub(crate) const SERVER_TEXT_MAX: usize = 200;

/// The one cleaning that every string a server sent (token and exchange answers, discovery documents, headers, TLS
/// and connection errors) passes before it reaches a log line, `/status`, a metric label, an error or stderr.
///
/// Characters that could forge a log line or change what a reader sees are escaped, never passed on: C0 and C1
/// controls (CR, LF, ESC, DEL, NEL, ...) as `\n`, `\r`, `\t` or `\u{1b}`, and so are the Unicode line and
/// paragraph separators and the bidirectional controls. The result has at most `max_chars` characters before a
/// marker that says how many bytes were cut. Only the part kept is looked at, so a megabyte costs no more than
/// `max_chars` characters.
pub(crate) fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars) + 32);
    let mut shown = 0;
    for (i, c) in s.char_indices() {
        let piece = match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "\\t".to_string(),
            c if must_escape(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        };
        let n = piece.chars().count();
        if shown + n > max_chars {
            out.push_str(&format!("… [{} more bytes cut]", s.len() - i));
            return out;
        }
        shown += n;
        out.push_str(&piece);
    }
    out
}

/// Controls, line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

pub(crate) fn looks_like_html(body: &[u8]) -> bool {
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
    sanitize(&cur.to_string(), SERVER_TEXT_MAX)
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

#[cfg(test)]
mod tests {
    #[test]
    fn redaction_covers_lower_case_escapes_and_echoed_runs() {
        use super::redact;
        let forms = vec![
            "s3cr3t%2Fvalue%3D%3D".to_string(),
            "s3cr3t/value==".to_string(),
        ];
        for echoed in [
            "got s3cr3t%2fvalue%3d%3d here",
            "got s3cr3t%2Fvalue%3D%3D here",
            "got s3cr3t/value== here",
            "got 3cr3t/val here",
            "got t%2fvalue here",
        ] {
            let out = redact(echoed, &forms);
            assert_eq!(out, "got (redacted) here", "{echoed}");
        }
        // Seven characters of it are not enough to say it is the secret.
        assert_eq!(redact("got s3cr3t/ here", &forms), "got s3cr3t/ here");
        assert_eq!(redact("plain text", &forms), "plain text");
        // Multi-byte characters do not split.
        let f = vec!["ünïcødé-sécret".to_string()];
        assert_eq!(redact("x ïcødé-sé y", &f), "x (redacted) y");
    }

    use super::*;

    #[test]
    fn server_text_is_escaped_and_cut_with_a_marker() {
        let s = "a\r\nb\u{1b}[31mc\u{7f}d\u{85}e\u{2028}f\u{202e}g\u{2067}h\tі✓";
        assert_eq!(
            sanitize(s, SERVER_TEXT_MAX),
            r"a\r\nb\u{1b}[31mc\u{7f}d\u{85}e\u{2028}f\u{202e}g\u{2067}h\tі✓"
        );
        assert_eq!(sanitize("plain text", SERVER_TEXT_MAX), "plain text");
        // Cut at the limit, counting what is shown (escapes included), never inside a character.
        assert_eq!(sanitize("ééééé", 3), "ééé… [4 more bytes cut]");
        assert_eq!(sanitize("ab\ncd", 3), "ab… [3 more bytes cut]");
        assert_eq!(sanitize("abc", 3), "abc");
        // A megabyte of hostile text gives as short a line as anything else.
        let mb = "\n\u{1b}x".repeat(350_000);
        let out = sanitize(&mb, SERVER_TEXT_MAX);
        assert!(out.chars().count() <= SERVER_TEXT_MAX + 30, "{out}");
        assert!(out.ends_with(" more bytes cut]") && !out.chars().any(char::is_control));
    }

    #[test]
    fn an_error_description_cannot_forge_a_log_line() {
        let forged = format!(
            "{{\"error\":\"invalid_client\",\"error_description\":\"bad\\r\\n2026-01-01T00:00:00Z ERROR forged\\u001b[2K{}\"}}",
            "z".repeat(60_000)
        );
        let e = status(401, forged.as_bytes());
        assert!(!e.message.chars().any(char::is_control), "{e}");
        assert!(e.message.contains(r"bad\r\n2026") && e.message.contains("more bytes cut]"));
        assert!(
            e.message.len() < 400 + CLIENT_HINT.len(),
            "{}",
            e.message.len()
        );
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
            UnsupportedTokenType,
        ] {
            assert!(k.is_permanent(), "{k}");
        }
    }

    fn status(code: u16, body: &[u8]) -> FetchError {
        let url = Url::parse("http://127.0.0.1:9/token").unwrap();
        let s = reqwest::StatusCode::from_u16(code).unwrap();
        status_error(&url, s, body, false, &[])
    }

    #[test]
    fn status_errors_follow_the_reference_wording() {
        let e = status(
            401,
            br#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
        );
        assert_eq!(e.kind, ErrorKind::InvalidClient);
        assert_eq!(e.message, format!("token endpoint http://127.0.0.1:9/token answered HTTP 401 Unauthorized: invalid_client: client authentication failed; {CLIENT_HINT}"));
        assert!(
            CLIENT_HINT.contains("client id")
                && CLIENT_HINT.contains("secret")
                && CLIENT_HINT.contains("auth_method")
        );
        let e = status(401, b"");
        assert!(
            e.message
                .ends_with(&format!("Unauthorized: Unauthorized; {CLIENT_HINT}")),
            "{}",
            e.message
        );
        let e = status(400, br#"{"error":"unauthorized_client"}"#);
        assert!(e.message.ends_with(CLIENT_HINT), "{}", e.message);
        let e = status(404, br#"{"message":"no route"}"#);
        assert!(
            e.message
                .ends_with(&format!("Not Found: no route; {URL_HINT}")),
            "{}",
            e.message
        );
        assert!(URL_HINT.contains("token_url") && URL_HINT.contains("base_url"));
        let e = status(403, br#"{"message":"forbidden by policy"}"#);
        assert!(
            e.message.ends_with(": forbidden by policy"),
            "no hint that would mislead: {}",
            e.message
        );
        let e = status(400, br#"{"message":"bad thing"}"#);
        assert_eq!(
            (e.kind, e.message.ends_with(": bad thing")),
            (ErrorKind::ClientError, true),
            "{}",
            e.message
        );
        let e = status(400, br#"{"error":{"message":"nested"}}"#);
        assert!(e.message.ends_with(": nested"), "{}", e.message);
        let e = status(500, b"<html><body>stack trace secret</body></html>");
        assert_eq!(e.kind, ErrorKind::ServerError);
        assert!(
            e.message
                .ends_with(&format!("the endpoint returned an HTML page; {URL_HINT}"))
                && !e.message.contains("secret"),
            "{}",
            e.message
        );
        let e = status(503, b"");
        assert!(
            e.message
                .ends_with("HTTP 503 Service Unavailable: Service Unavailable"),
            "{}",
            e.message
        );
        let e = status(400, br#"{"error":"temporarily_unavailable"}"#);
        assert_eq!(e.kind, ErrorKind::TemporarilyUnavailable);
        let e = status(400, br#"{"error":"invalid_scope"}"#);
        assert_eq!(e.kind, ErrorKind::InvalidScope);
        assert_eq!(status(429, b"").kind, ErrorKind::RateLimited);
        assert_eq!(status(302, b"").kind, ErrorKind::Redirect);
    }

    #[test]
    fn an_oauth_error_in_a_200_is_classified_as_with_a_4xx() {
        for (code, transient) in [
            ("invalid_client", false),
            ("invalid_grant", false),
            ("invalid_scope", false),
            ("temporarily_unavailable", true),
            ("something_new", false),
        ] {
            let body = format!(r#"{{"error":"{code}"}}"#);
            assert!(is_oauth_error(body.as_bytes()));
            let (ok, bad) = (status(200, body.as_bytes()), status(400, body.as_bytes()));
            assert_eq!(ok.kind, bad.kind, "{code}");
            assert_eq!(ok.kind.is_permanent(), !transient, "{code}");
            assert!(
                ok.message
                    .contains("HTTP 200 OK with an error instead of a token"),
                "{}",
                ok.message
            );
        }
        assert!(!is_oauth_error(br#"{"access_token":"a","error":"x"}"#));
        assert!(!is_oauth_error(br#"{"access_token":"a"}"#));
        assert!(!is_oauth_error(b"not json"));
    }

    #[test]
    fn a_redirect_target_is_resolved_and_loses_credentials_query_and_fragment() {
        let url = Url::parse("https://idp.example/oauth/token").unwrap();
        let at = |loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(LOCATION, loc.parse().unwrap());
            redirect_target(&h, &url)
        };
        assert_eq!(
            at("https://u:p@other.example/t?sig=abc#f").as_deref(),
            Some("https://other.example/t (query not shown)")
        );
        assert_eq!(
            at("../v2/token").as_deref(),
            Some("https://idp.example/v2/token")
        );
        assert_eq!(redirect_target(&HeaderMap::new(), &url), None);
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
    fn chain_joins_every_source() {
        let inner = std::io::Error::other("root cause");
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(chain(&Outer(inner)), "outer: root cause");
    }

    #[test]
    fn chain_says_a_source_the_message_already_holds_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open /x: {0}")]
        struct Open(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read /x: {0}")]
        struct Read(#[source] Open);
        let e = Read(Open(std::io::Error::other("No such file or directory")));
        assert_eq!(
            chain(&e),
            "cannot read /x: cannot open /x: No such file or directory"
        );
    }
}
