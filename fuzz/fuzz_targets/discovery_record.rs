//! The cached discovery record of the warm-start state (`Sink::check_discovery`) from a real state directory.
//!
//! First byte even: the rest written as the record file as it is (no valid seal: never adopted); odd: the rest
//! sealed with the directory's key under the discovery magic (any record).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api::{StateStore, MAX_CLOCK_SKEW};
use token_vendor_fuzz::{assert_bounded, fresh_state_store, measure, t0};

fn store() -> &'static StateStore {
    static S: OnceLock<StateStore> = OnceLock::new();
    S.get_or_init(|| fresh_state_store("discovery-record"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = store();
    if mode % 2 == 0 {
        let (r, peak) = measure(|| s.check_discovery(rest, t0()));
        assert_bounded("check_discovery", peak, data.len(), 64, 64 * 1024);
        assert!(
            r.is_err(),
            "a discovery record without a valid seal was adopted: {r:?}"
        );
    } else {
        let sealed = s.seal_discovery(rest);
        let (r, peak) = measure(|| s.check_discovery(&sealed, t0()));
        assert_bounded("check_discovery", peak, data.len(), 64, 64 * 1024);
        if let Ok((_, _, fetched_at)) = r {
            assert!(fetched_at <= t0() + MAX_CLOCK_SKEW);
        }
    }
});
