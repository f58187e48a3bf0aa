//! A vended token and the reference client's timing rules: `refresh_time = issued_at + expires_in - clamp(10%, 1 s, 60 s)`, `valid() = now < refresh_time`.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ErrorKind;

/// A lifetime longer than this is treated as unusable, not trusted (and would overflow time arithmetic).
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The reference client's buffer: `max(1, min(60, 0.1 * expires_in))` seconds.
pub fn refresh_buffer(lifetime: Duration) -> Duration {
    lifetime
        .mul_f64(0.1)
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Where the token's lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LifetimeSource {
    ExpiresIn,
    JwtExp,
    Default,
}

/// An access token as issued. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct Token {
    pub(crate) access_token: SecretString,
    pub issued_at: SystemTime,
    pub lifetime: Duration,
    pub(crate) scope: Option<String>,
    pub(crate) lifetime_source: LifetimeSource,
}

impl Token {
    pub fn expires_at(&self) -> SystemTime {
        self.issued_at + self.lifetime
    }

    /// When the reference client would stop using this token.
    pub fn refresh_time(&self) -> SystemTime {
        let end = self.expires_at();
        end.checked_sub(refresh_buffer(self.lifetime))
            .unwrap_or(end)
    }

    /// The reference `valid()`: `now < refresh_time`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now < self.refresh_time()
    }

    /// Time from issue to `refresh_time` (zero when the buffer eats the whole lifetime).
    pub fn usable_span(&self) -> Duration {
        self.refresh_time()
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }

    pub fn secret(&self) -> &str {
        self.access_token.expose_secret()
    }
}

/// Why a 200 response could not be used. Never echoes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Malformed or unusable: another answer may be fine.
    #[error("{0}")]
    Invalid(String),
    /// A token type other than Bearer: the server will keep issuing it, so asking again cannot help.
    #[error("{0}")]
    UnsupportedTokenType(String),
}

impl ResponseError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            ResponseError::Invalid(_) => ErrorKind::InvalidResponse,
            ResponseError::UnsupportedTokenType(_) => ErrorKind::UnsupportedTokenType,
        }
    }
}

/// What the response said about its lifetime, before fallbacks: `Ok(None)` when it gave none that can be used (absent,
/// null, not a number, longer than [`MAX_LIFETIME`]), so the JWT `exp` or `default_lifetime` applies. A lifetime of
/// zero or less is the server saying the token is already expired: an error, never replaced by a default.
fn expires_in_seconds(v: Option<&Value>) -> Result<Option<f64>, ResponseError> {
    let secs = match v {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s <= 0.0 => Err(ResponseError::Invalid(format!(
            "the token response says the token lives {} s (expires_in); a token that is already expired is not served",
            if s == 0.0 { 0.0 } else { s.max(-1e12) }
        ))),
        Some(s) if s.is_finite() && s <= MAX_LIFETIME.as_secs_f64() => Ok(Some(s)),
        _ => Ok(None),
    }
}

/// The JWT `exp` of an access token ([`super::jwt::exp`]) as a time, when it is one a clock can hold.
pub fn jwt_exp(token: &str) -> Option<SystemTime> {
    let exp = super::jwt::exp(token)??;
    (exp.is_finite() && exp > 0.0 && exp < 1e11)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp))
}

/// An access token may only hold visible ASCII: it goes into headers, env files and shells.
fn acceptable_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Parses a successful (HTTP 200) token response, RFC 6749 §5.1.
pub fn parse_token_response(
    body: &[u8],
    issued_at: SystemTime,
    default_lifetime: Duration,
) -> Result<Token, ResponseError> {
    let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Eof => "the JSON ends early",
            serde_json::error::Category::Syntax => "invalid JSON syntax",
            serde_json::error::Category::Data => "the JSON is not an object",
            serde_json::error::Category::Io => "read error",
        };
        ResponseError::Invalid(format!(
            "failed to parse the token response: {kind} at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let access_token = match map.get("access_token") {
        Some(Value::String(s)) if acceptable_token(s) => s.clone(),
        Some(Value::String(_)) => {
            return Err(ResponseError::Invalid(
                "the token response's access_token is empty, too long or has characters outside visible ASCII".into(),
            ))
        }
        Some(_) => return Err(ResponseError::Invalid("the token response's access_token is not a string".into())),
        None => return Err(ResponseError::Invalid("the token response has no access_token".into())),
    };
    match map.get("token_type") {
        // RFC 6749 §5.1: the type is case-insensitive; the reference client wrongly insists on "Bearer".
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            let shown: String = t
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(32)
                .collect();
            return Err(ResponseError::UnsupportedTokenType(format!(
                "the token response has token_type {shown:?}; only Bearer tokens are supported"
            )));
        }
        _ => {
            return Err(ResponseError::Invalid(
                "the token response has no token_type string".into(),
            ))
        }
    }
    let scope = match map.get("scope") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let (lifetime, lifetime_source) = if let Some(secs) = expires_in_seconds(map.get("expires_in"))?
    {
        (Duration::from_secs_f64(secs), LifetimeSource::ExpiresIn)
    } else if let Some(exp) = jwt_exp(&access_token) {
        let left = exp.duration_since(issued_at).map_err(|_| {
            ResponseError::Invalid(
                "the token response has no usable expires_in and the JWT's exp is already past"
                    .into(),
            )
        })?;
        (left.min(MAX_LIFETIME), LifetimeSource::JwtExp)
    } else {
        (default_lifetime, LifetimeSource::Default)
    };
    if lifetime.is_zero() {
        return Err(ResponseError::Invalid(
            "the token has no lifetime left".into(),
        ));
    }
    Ok(Token {
        access_token: SecretString::from(access_token),
        issued_at,
        lifetime,
        scope,
        lifetime_source,
    })
}

/// The `json` output format, also the warm-start state: RFC 3339 UTC times.
#[derive(Serialize, Deserialize)]
pub struct TokenRecord {
    pub(crate) access_token: String,
    pub(crate) token_type: String,
    #[serde(serialize_with = "whole_as_integer")]
    pub(crate) expires_in: f64,
    pub(crate) issued_at: String,
    pub(crate) refresh_time: String,
    pub(crate) expires_at: String,
    pub(crate) scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fingerprint: Option<String>,
}

/// `3600`, not `3600.0`: typed readers (Rust, Go) refuse a float where servers send an integer. A lifetime that is
/// not whole seconds (a fractional `expires_in`, a JWT `exp` fallback) keeps its fraction.
fn whole_as_integer<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl TokenRecord {
    pub fn from_token(t: &Token, fingerprint: Option<String>) -> Self {
        TokenRecord {
            access_token: t.secret().to_string(),
            token_type: "Bearer".into(),
            expires_in: (t.lifetime.as_secs_f64() * 1000.0).round() / 1000.0,
            issued_at: rfc3339(t.issued_at),
            refresh_time: rfc3339(t.refresh_time()),
            expires_at: rfc3339(t.expires_at()),
            scope: t.scope.clone(),
            fingerprint,
        }
    }

    /// Rebuilds a token from a record written by us; `None` when anything does not add up.
    pub fn into_token(self) -> Option<(Token, Option<String>)> {
        let issued_at = humantime::parse_rfc3339(&self.issued_at).ok()?;
        let expires_at = humantime::parse_rfc3339(&self.expires_at).ok()?;
        let lifetime = expires_at.duration_since(issued_at).ok()?;
        if !acceptable_token(&self.access_token) || lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return None;
        }
        let token = Token {
            access_token: SecretString::from(self.access_token),
            issued_at,
            lifetime,
            scope: self.scope,
            lifetime_source: LifetimeSource::ExpiresIn,
        };
        Some((token, self.fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn parse(body: &str) -> Result<Token, ResponseError> {
        parse_token_response(body.as_bytes(), t0(), Duration::from_secs(300))
    }

    #[test]
    fn refresh_time_matches_the_reference_at_the_clamp_edges() {
        // (expires_in, buffer): max(1, min(60, 0.1 * expires_in))
        for (expires_in, buffer) in [
            (5, 1.0),
            (10, 1.0),
            (300, 30.0),
            (600, 60.0),
            (3600, 60.0),
            (15, 1.5),
            (601, 60.0),
        ] {
            let body = format!(
                r#"{{"access_token":"a","token_type":"Bearer","expires_in":{expires_in}}}"#
            );
            let t = parse(&body).unwrap();
            let want = t0() + Duration::from_secs(expires_in) - Duration::from_secs_f64(buffer);
            assert_eq!(t.refresh_time(), want, "expires_in {expires_in}");
            assert_eq!(t.expires_at(), t0() + Duration::from_secs(expires_in));
            // valid() is a strict `now < refresh_time`.
            assert!(t.valid_at(want - Duration::from_nanos(1)));
            assert!(!t.valid_at(want));
        }
    }

    #[test]
    fn a_one_second_token_is_never_valid_like_the_reference() {
        let t = parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":1}"#).unwrap();
        assert!(!t.valid_at(t0()));
        assert_eq!(t.usable_span(), Duration::ZERO);
    }

    #[test]
    fn expires_in_may_be_a_numeric_string_or_fractional() {
        let t = parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600"}"#).unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(3600));
        let t = parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":2.5}"#).unwrap();
        assert_eq!(t.lifetime, Duration::from_millis(2500));
    }
    #[test]
    fn token_json_keeps_whole_lifetimes_integer_and_fractions_fractional() {
        for (body, want) in [
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":3600}"#,
                "3600",
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#,
                "60",
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":2.5}"#,
                "2.5",
            ),
        ] {
            let t = parse(body).unwrap();
            let json = serde_json::to_string(&TokenRecord::from_token(&t, None)).unwrap();
            assert!(json.contains(&format!(r#""expires_in":{want},"#)), "{json}");
        }
    }

    fn jwt(exp: u64) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            enc(r#"{"alg":"none"}"#),
            enc(&format!(r#"{{"sub":"x","exp":{exp}}}"#))
        )
    }

    #[test]
    fn unusable_expires_in_falls_back_to_jwt_exp_then_default() {
        let exp = 1_800_000_000 + 900;
        for bad in [
            "",
            r#","expires_in":"soon""#,
            r#","expires_in":1e300"#,
            r#","expires_in":null"#,
        ] {
            let body = format!(
                r#"{{"access_token":"{}","token_type":"Bearer"{bad}}}"#,
                jwt(exp)
            );
            let t = parse(&body).unwrap();
            assert_eq!(
                (t.lifetime, t.lifetime_source),
                (Duration::from_secs(900), LifetimeSource::JwtExp),
                "{bad}"
            );
            let body = format!(r#"{{"access_token":"opaque","token_type":"Bearer"{bad}}}"#);
            let t = parse(&body).unwrap();
            assert_eq!(
                (t.lifetime, t.lifetime_source),
                (Duration::from_secs(300), LifetimeSource::Default),
                "{bad}"
            );
        }
        let body = format!(
            r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
            jwt(1_800_000_000 - 10)
        );
        assert!(parse(&body)
            .unwrap_err()
            .to_string()
            .contains("already past"));
    }

    #[test]
    fn a_lifetime_of_zero_or_less_is_an_invalid_response_even_with_a_jwt_exp() {
        for (expires_in, says) in [
            ("0", "lives 0 s"),
            ("-5", "lives -5 s"),
            (r#""0""#, "lives 0 s"),
            (r#"" -30 ""#, "lives -30 s"),
            ("-0.0", "lives 0 s"),
            (r#""-inf""#, "lives -1000000000000 s"),
        ] {
            for token in [jwt(1_800_000_000 + 900), "opaque".to_string()] {
                let body = format!(
                    r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#
                );
                let e = parse(&body).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidResponse, "{expires_in}");
                assert!(!e.kind().is_permanent());
                assert!(e.to_string().contains(says), "{expires_in}: {e}");
            }
        }
    }

    #[test]
    fn token_type_is_case_insensitive_bearer_only() {
        for ok in ["Bearer", "bearer", "BEARER"] {
            assert!(parse(&format!(
                r#"{{"access_token":"a","token_type":"{ok}","expires_in":60}}"#
            ))
            .is_ok());
        }
        let e = parse(r#"{"access_token":"a","token_type":"mac","expires_in":60}"#).unwrap_err();
        assert!(
            e.to_string().contains("\"mac\"") && e.to_string().contains("only Bearer"),
            "{e}"
        );
        // The server will keep issuing that type: asking again cannot help.
        assert_eq!(e.kind(), ErrorKind::UnsupportedTokenType);
        assert!(e.kind().is_permanent());
        assert!(parse(r#"{"access_token":"a","expires_in":60}"#)
            .unwrap_err()
            .to_string()
            .contains("no token_type"));
    }

    #[test]
    fn bad_bodies_are_described_without_echoing_them() {
        let cases = [
            (
                "<html><body>login secret-page</body></html>",
                "invalid JSON syntax",
            ),
            (
                r#"{"access_token":"tok-secret-value","token_type":"Bearer""#,
                "ends early",
            ),
            (r#"["tok-secret-value"]"#, "not an object"),
            (r#"{"token_type":"Bearer"}"#, "no access_token"),
            (
                r#"{"access_token":42,"token_type":"Bearer"}"#,
                "not a string",
            ),
            (
                r#"{"access_token":"has space","token_type":"Bearer"}"#,
                "visible ASCII",
            ),
            (r#"{"access_token":"","token_type":"Bearer"}"#, "empty"),
        ];
        for (body, want) in cases {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn record_round_trips() {
        let t = parse(
            r#"{"access_token":"abc","token_type":"bearer","expires_in":120,"scope":"read"}"#,
        )
        .unwrap();
        let rec = TokenRecord::from_token(&t, Some("fp".into()));
        assert_eq!(rec.token_type, "Bearer");
        assert_eq!(rec.refresh_time, "2027-01-15T08:01:48.000Z");
        let json = serde_json::to_string(&rec).unwrap();
        let back: TokenRecord = serde_json::from_str(&json).unwrap();
        let (t2, fp) = back.into_token().unwrap();
        assert_eq!(
            (t2.issued_at, t2.lifetime, t2.secret(), fp.as_deref()),
            (t.issued_at, t.lifetime, "abc", Some("fp"))
        );
        assert!(!format!("{t:?}").contains("abc"));
    }
}
