//! A PEM certificate for a signed assertion's `x5t#S256` (`KeyId::from_certificate_pem`), against a fixed key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure};

/// A throwaway P-256 key made for this target only (seed corpus: its self-signed certificate).
const KEY: &str = "
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtx9hBw1gbLSNZ+zT
DuRxseAm1GkkBXldiCLN6gnQwaOhRANCAAQri/6DAl4zU9REiHNyGPhrOtW0hWDh
7nKXcGtig66pb0NFTk9Jz+w6rIj6s90/+cXHKZZE0i1vQRNsmITW6skD
-----END PRIVATE KEY-----
";

fuzz_target!(|data: &[u8]| {
    let (r, peak) = measure(|| fuzz_api::certificate_key_id(data, KEY.as_bytes()));
    assert_bounded(
        "KeyId::from_certificate_pem",
        peak,
        data.len(),
        16,
        64 * 1024,
    );
    if let Err(e) = &r {
        assert!(
            !e.contains("is not a private key"),
            "the fixed key must parse: {e}"
        );
    }
});
