//! An OIDC / RFC 8414 metadata document (`Issuer::parse`, `Document::parse`) for fixed issuers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, assert_clean, measure};

/// `token::discovery::MAX_ENDPOINT_CHARS`.
const MAX_ENDPOINT_CHARS: usize = 1024;

/// (issuer, the well-known URL that answered); the first byte of the input picks one.
const ISSUERS: [(&str, &str); 3] = [
    (
        "https://idp.example/realms/r",
        "https://idp.example/realms/r/.well-known/openid-configuration",
    ),
    (
        "http://127.0.0.1:4444",
        "http://127.0.0.1:4444/.well-known/oauth-authorization-server",
    ),
    (
        "https://idp.example",
        "https://idp.example/.well-known/openid-configuration",
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (issuer, source) = ISSUERS[usize::from(sel) % ISSUERS.len()];
    let (r, peak) = measure(|| fuzz_api::discovery_document(body, issuer, source));
    assert_bounded("Document::parse", peak, data.len(), 64, 64 * 1024);
    match r {
        Ok(endpoint) => {
            // Shown as it is in /status and errors: text that sanitize leaves alone.
            assert!(
                endpoint.chars().count() <= MAX_ENDPOINT_CHARS,
                "{endpoint:?}"
            );
            assert_eq!(fuzz_api::sanitize(&endpoint, MAX_ENDPOINT_CHARS), endpoint);
            // https, or plain http to a loopback address only.
            if let Some(rest) = endpoint.strip_prefix("http://") {
                let host = rest.split('/').next().unwrap_or_default();
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                assert!(
                    host.starts_with("127.")
                        || host.starts_with("localhost")
                        || host.starts_with("[::1]"),
                    "{endpoint}"
                );
            } else {
                assert!(endpoint.starts_with("https://"), "{endpoint}");
            }
        }
        Err(e) => assert_clean("Document::parse", &e),
    }
});
