//! A PEM private key file for `private_key_jwt` (`SigningKey::from_pem`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure};

fuzz_target!(|data: &[u8]| {
    let (_r, peak) = measure(|| fuzz_api::signing_key(data));
    // The PEM's DER (3/4 of the base64), ring's parsed key; RSA key parsing precomputes a few key-sized numbers.
    assert_bounded("SigningKey::from_pem", peak, data.len(), 16, 64 * 1024);
});
