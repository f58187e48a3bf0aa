//! The one reading of a JWT's `exp` (RFC 7519), unverified: for an access token without `expires_in`, a subject token and a client assertion file.

use base64::Engine;
use serde_json::{Map, Value};

/// The longest JWT looked into; longer text is not treated as one.
const MAX_JWT_BYTES: usize = 64 * 1024;

/// `Some(exp)` of a compact JWT (three dot-separated base64url parts, header and payload JSON objects; the signature
/// may be empty, as in an unsecured JWT), `None` inside when the payload has no numeric `exp`; `None` when the text
/// is not a JWT. The signature is not verified: the issuer does that, this only times the token.
pub(crate) fn exp(jwt: &str) -> Option<Option<f64>> {
    if jwt.len() > MAX_JWT_BYTES {
        return None;
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let decode = |p: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<Map<String, Value>>(&bytes).ok()
    };
    decode(header)?;
    let claims = decode(payload)?;
    Some(claims.get("exp").and_then(Value::as_f64))
}

/// [`exp`] in whole seconds, for comparing with the clock: a negative or non-finite `exp` counts as none.
pub(crate) fn exp_secs(jwt: &str) -> Option<Option<u64>> {
    exp(jwt).map(|e| {
        e.filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.min(u64::MAX as f64) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn exp_is_read_from_a_compact_jwt_and_nothing_else() {
        let h = enc(r#"{"alg":"RS256"}"#);
        let jwt = |claims: &str| format!("{h}.{}.sig", enc(claims));
        assert_eq!(exp(&jwt(r#"{"exp":1000}"#)), Some(Some(1000.0)));
        assert_eq!(exp(&jwt(r#"{"exp":1000.5}"#)), Some(Some(1000.5)));
        assert_eq!(exp(&jwt(r#"{"exp":"1000"}"#)), Some(None));
        assert_eq!(exp(&jwt("{}")), Some(None));
        assert_eq!(exp_secs(&jwt(r#"{"exp":-5}"#)), Some(None));
        assert_eq!(exp_secs(&jwt(r#"{"exp":1000.9}"#)), Some(Some(1000)));
        // Unsecured (empty signature) is a JWT; padding is tolerated.
        assert_eq!(
            exp(&format!("{h}.{}.", enc(r#"{"exp":7}"#))),
            Some(Some(7.0))
        );
        for not_jwt in [
            "a.b.c".to_string(),
            "x".to_string(),
            format!("{h}.{}", enc("{}")),
            format!("{}.{}.", enc("[]"), enc("{}")),
            format!("{h}.{}.", enc("[1]")),
            format!("{}.x.y.z", jwt("{}")),
            format!(
                "{h}.{}.s",
                enc(&format!(
                    r#"{{"exp":1,"p":"{}"}}"#,
                    "x".repeat(MAX_JWT_BYTES)
                ))
            ),
        ] {
            assert_eq!(exp(&not_jwt), None, "{not_jwt}");
        }
    }
}
