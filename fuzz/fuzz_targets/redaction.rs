//! Redaction and cleaning of server text: for any secret and any text, `redact` leaves none of the secret's forms
//! (as sent, form-encoded, `%20` for space, lower-case escapes) nor any `REDACT_RUN`-character run of one, and
//! `sanitize` leaves no control, line-separator or bidi character and keeps to its length.
//!
//! Input: a length byte, that many bytes of secret, the server's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api::{self, REDACT_RUN, SERVER_TEXT_MAX};
use token_vendor_fuzz::{assert_bounded, assert_clean, measure, promised};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let secret = String::from_utf8_lossy(&rest[..n]);
    let text = String::from_utf8_lossy(&rest[n..]);
    let forms = fuzz_api::redaction_forms(&[&secret]);
    let ((redacted, clean), peak) = measure(|| {
        let r = fuzz_api::redact(&text, &forms);
        let c = fuzz_api::sanitize(&r, SERVER_TEXT_MAX);
        (r, c)
    });
    // The mask, the windows of the forms (a form is up to 9x its secret: every byte %XX-encoded, three ways).
    assert_bounded("redact + sanitize", peak, data.len(), 512, 16 * 1024);
    let (promised, runs) = promised(&forms, REDACT_RUN);
    // What the server wrote around the markers; a marker next to server text may spell anything.
    for part in redacted.split("(redacted)") {
        for f in &promised {
            assert!(
                !part.contains(f.as_str()),
                "form {f:?} left in {part:?} (secret {secret:?})"
            );
        }
        for w in &runs {
            assert!(
                !part.contains(w.as_str()),
                "run {w:?} of a form left in {part:?} (secret {secret:?})"
            );
        }
    }
    assert_clean("sanitize", &clean);
    // At most SERVER_TEXT_MAX characters shown, then "… [N more bytes cut]".
    let shown = clean.split("… [").next().unwrap_or_default();
    assert!(shown.chars().count() <= SERVER_TEXT_MAX, "{clean:?}");
    // sanitize alone, at a limit the input picks.
    let limit = usize::from(data.last().copied().unwrap_or(0));
    let c = fuzz_api::sanitize(&text, limit);
    assert_clean("sanitize", &c);
});
