//! A token endpoint's 200 answer: `parse_token_response`, then the `json` record written and read back.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure, t0};

/// Ten years, `token::token::MAX_LIFETIME`.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fuzz_target!(|data: &[u8]| {
    let default = Duration::from_secs(300);
    let (r, peak) = measure(|| fuzz_api::token_response(data, t0(), default));
    // serde_json's Map of Values: a value costs at most ~40 bytes for 2 bytes of input, and a Vec may double.
    assert_bounded("parse_token_response", peak, data.len(), 64, 64 * 1024);
    let Ok(t) = r else { return };
    assert!(!t.secret.is_empty() && t.secret.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert!(
        !t.lifetime.is_zero() && t.lifetime <= MAX_LIFETIME,
        "{:?}",
        t.lifetime
    );
    assert!(t.refresh_time <= t.issued_at + t.lifetime);
    assert_eq!(t.issued_at, t0());
    // Round trip through the record the json output and the warm-start state hold.
    let (t1, back) =
        fuzz_api::token_record_round_trip(data, t0(), default).expect("parsed once, parses again");
    assert_eq!(t1, t);
    let back = back.expect("a record written from a parsed token reads back");
    assert_eq!(back.secret, t.secret);
    assert_eq!(back.scope, t.scope);
    assert_eq!(back.issued_at, t.issued_at);
    // Times are kept to the millisecond.
    let d = back.lifetime.abs_diff(t.lifetime);
    assert!(
        d < Duration::from_millis(1),
        "lifetime {:?} read back as {:?}",
        t.lifetime,
        back.lifetime
    );
});
