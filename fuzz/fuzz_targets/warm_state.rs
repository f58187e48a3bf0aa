//! The sealed warm-start state, read the way a restart reads it (`Sink::check_warm`) from a real state directory.
//!
//! First byte: 0 mod 3, the rest written as the state file as it is (no valid seal: never adopted); 1, the rest
//! sealed with the directory's key (any record); 2, the rest parsed as a token response, written by `Sink::write`
//! and read back (the round trip: the same token, adopted at the time it was issued).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_vendor::fuzz_api::{StateStore, MAX_CLOCK_SKEW};
use token_vendor_fuzz::{assert_bounded, fresh_state_store, measure, t0};

fn store() -> &'static StateStore {
    static S: OnceLock<StateStore> = OnceLock::new();
    S.get_or_init(|| fresh_state_store("warm-state"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = store();
    match mode % 3 {
        0 => {
            let (r, peak) = measure(|| s.check_warm(rest, t0()));
            assert_bounded("check_warm", peak, data.len(), 64, 64 * 1024);
            assert!(
                r.is_err(),
                "a state file without a valid seal was adopted: {r:?}"
            );
        }
        1 => {
            let sealed = s.seal_state(rest);
            let (r, peak) = measure(|| s.check_warm(&sealed, t0()));
            assert_bounded("check_warm", peak, data.len(), 64, 64 * 1024);
            if let Ok(t) = r {
                assert!(t.issued_at <= t0() + MAX_CLOCK_SKEW);
                assert!(t.refresh_time > t0(), "adopted a token already due: {t:?}");
                assert!(
                    !t.secret.is_empty() && t.secret.bytes().all(|b| (0x21..=0x7e).contains(&b))
                );
            }
        }
        _ => {
            let Some((t, back)) = s.write_then_check(rest, t0(), t0()) else {
                return;
            };
            if t.lifetime >= Duration::from_secs(2) {
                let back = back
                    .unwrap_or_else(|e| panic!("a state written by Sink::write was refused: {e}"));
                assert_eq!(back.secret, t.secret);
                assert_eq!(back.scope, t.scope);
                assert_eq!(back.issued_at, t.issued_at);
                assert!(
                    back.lifetime.abs_diff(t.lifetime) < Duration::from_millis(1),
                    "{t:?} {back:?}"
                );
            }
        }
    }
});
