//! What the token client and discovery read from an HTTP answer, one way each: its body, bounded (`http_body_util::Limited`), and its `Retry-After`.

use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest `Retry-After` taken from a server; the refresher caps the wait further (`schedule`).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`, at most [`RETRY_AFTER_MAX`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs.min(RETRY_AFTER_MAX.as_secs())),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit, by its `Content-Length` or as it arrived.
    TooLarge,
    /// The connection failed or timed out while the body arrived.
    Transport(reqwest::Error),
    /// Anything else the body reported (a reqwest body reports reqwest errors; kept for completeness).
    Other(String),
}

/// The whole body of `resp`, refused once it is longer than `max` bytes: before reading when `Content-Length`
/// says so, otherwise as soon as the bytes received pass `max`.
pub(crate) async fn read_bounded(
    resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(reqwest::Body::from(resp), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => match e.downcast::<reqwest::Error>() {
            Ok(e) => Err(BodyError::Transport(*e)),
            Err(e) => Err(BodyError::Other(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_http_dates_within_its_cap() {
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
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999999999999"));
        assert_eq!(retry_after(&h, now), Some(RETRY_AFTER_MAX));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(10 * 365 * 86400));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&far).unwrap());
        assert_eq!(retry_after(&h, now), Some(RETRY_AFTER_MAX));
    }
}
