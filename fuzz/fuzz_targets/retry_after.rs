//! A `Retry-After` header value: delay-seconds or an HTTP date (`token::response::retry_after`).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure, t0};

/// One day, `token::response::RETRY_AFTER_MAX`: the cap on delay-seconds.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

fuzz_target!(|data: &[u8]| {
    let (r, peak) = measure(|| fuzz_api::retry_after(data, t0()));
    assert_bounded("retry_after", peak, data.len(), 4, 1024);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secs) = text.trim_matches(|c| c == ' ' || c == '\t').parse::<u64>() {
        if r.is_some() {
            assert_eq!(
                r,
                Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX)),
                "{text:?}"
            );
        }
    }
});
