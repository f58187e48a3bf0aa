//! The `exp` of a JWT as read from a client assertion file, a subject token file and an access token.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ((a, s, t), peak) = measure(|| {
        (
            fuzz_api::assertion_exp(text),
            fuzz_api::subject_token_exp(text),
            fuzz_api::access_token_exp(text),
        )
    });
    // base64 decodes to 3/4 of the input, serde_json's Values then cost up to ~20x that.
    assert_bounded("jwt_exp", peak, data.len(), 64, 16 * 1024);
    if let Some(t) = t {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        assert!(
            secs > Duration::ZERO && secs < Duration::from_secs(100_000_000_000),
            "{secs:?}"
        );
    }
    // A client assertion is a JWT with three non-empty parts; whatever it holds, the subject-token reader, which
    // also takes an unsecured JWT, reads the same exp when the header is an object too.
    if let (Some(a), Some(s)) = (a, s) {
        assert_eq!(a, s, "{text:?}");
    }
});
