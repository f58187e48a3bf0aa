//! The YAML config: `Config::parse`, which runs `fsread::yaml_precheck` (nesting, anchors and aliases) first.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api;
use token_vendor_fuzz::{assert_bounded, measure};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ((pre, parsed), peak) = measure(|| {
        let pre = fuzz_api::yaml_precheck(text);
        (
            pre,
            fuzz_api::config(text, Path::new("/nonexistent/tv-fuzz/config.yaml")),
        )
    });
    // The parser's events and serde's tree: no alias expansion (the pre-check refuses them) and at most 64 levels.
    assert_bounded("Config::parse", peak, data.len(), 256, 1024 * 1024);
    if pre.is_err() {
        assert!(
            parsed.is_err(),
            "the pre-check refused it, yet the config was accepted"
        );
    }
});
