//! A token endpoint's error answer (any status, any body, a `Location`): `redirect_target`, `is_oauth_error` and
//! `status_error_to`. The message is clean server text and carries no form of the client's secrets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, assert_clean, measure, promised, split};

/// Secrets that went out with the request. Each has a `~` (form-encoded `%7E`), which the message's own words and
/// URL never have, so any of their forms (or runs of one) in the message came from the server's text.
const SECRETS: [&str; 2] = ["s3cr3t~Value/+= x", "client~id"];

/// Status codes worth distinguishing: 2xx with an error, redirects, 4xx, 5xx, and odd ones.
const STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 307, 400, 401, 403, 404, 408, 429, 500, 502, 503, 599,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(sel & 0x0f)];
    let is_html = sel & 0x10 != 0;
    let (location, body) = if sel & 0x20 != 0 {
        let (l, b) = split(rest, b'\n');
        (Some(l), b)
    } else {
        (None, rest)
    };
    let forms = fuzz_api::redaction_forms(&SECRETS);
    let (r, peak) = measure(|| fuzz_api::oauth_error(body, status, is_html, &forms, location));
    assert_bounded("status_error_to", peak, data.len(), 64, 64 * 1024);
    let (_, _kind, message) = r.expect("every status here is valid");
    assert_clean("status_error_to", &message);
    let (promised, runs) = promised(&forms, fuzz_api::REDACT_RUN);
    for f in promised.iter().chain(&runs) {
        assert!(
            !message.contains(f.as_str()),
            "secret text {f:?} in {message:?}"
        );
    }
});
