//! When to refresh and when to retry: pure functions of durations and a uniform draw `u` in [0, 1), so they are table-tested without a clock.

use std::time::Duration;

use crate::config::RefreshPolicy;

const ONE_SECOND: Duration = Duration::from_secs(1);

/// The longest a server's `Retry-After` is obeyed when no valid token is at stake.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// While a valid token remains, retries are spread over this fraction of its remaining validity
/// (if that is longer than the backoff cap), so a fleet recovering from an outage does not return all at once.
pub const SPREAD_OF_REMAINING: f64 = 0.25;

/// Delay from issue to the planned refresh: a fraction drawn from the window of the span from issue to
/// `refresh_time`, never later than one second before `refresh_time` (when the span allows), never sooner than
/// `min_backoff` for a token that is never valid.
pub fn planned_refresh(usable: Duration, policy: &RefreshPolicy, u: f64) -> Duration {
    if usable.is_zero() {
        return policy.min_backoff;
    }
    let (lo, hi) = policy.window;
    let f = lo + u.clamp(0.0, 1.0) * (hi - lo);
    let planned = usable.mul_f64(f);
    if usable > 2 * ONE_SECOND {
        planned.min(usable - ONE_SECOND)
    } else {
        planned
    }
}

/// Why the last attempt failed, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Transient { retry_after: Option<Duration> },
    Permanent,
}

/// Capped exponential backoff with full jitter over `[min_backoff, cap]`, `cap = min(max_backoff, min_backoff * 2^(n-1))`.
pub fn backoff(policy: &RefreshPolicy, consecutive_failures: u32, u: f64) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(32);
    let cap = policy
        .min_backoff
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(policy.max_backoff)
        .min(policy.max_backoff);
    policy.min_backoff + (cap - policy.min_backoff).mul_f64(u.clamp(0.0, 1.0))
}

/// Delay until the next attempt after a failure.
///
/// `remaining` is how long the published token stays `valid()`, `None` if none is. Transient failures back off
/// and honour `Retry-After`, but while a token is valid they always try once more before its `refresh_time`.
/// Permanent failures wait `max_backoff`: asking again sooner cannot help.
pub fn retry_delay(
    policy: &RefreshPolicy,
    consecutive_failures: u32,
    failure: Failure,
    remaining: Option<Duration>,
    u: f64,
) -> Duration {
    let retry_after = match failure {
        Failure::Permanent => return policy.max_backoff,
        Failure::Transient { retry_after } => retry_after,
    };
    let mut delay = backoff(policy, consecutive_failures, u);
    if let Some(rem) = remaining {
        // Plenty of validity left: spread this retry further, still well before refresh_time.
        let spread = rem.mul_f64(SPREAD_OF_REMAINING);
        if spread > policy.max_backoff && consecutive_failures > 1 {
            delay = policy.min_backoff + (spread - policy.min_backoff).mul_f64(u.clamp(0.0, 1.0));
        }
    }
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(MAX_RETRY_AFTER));
    }
    if let Some(rem) = remaining {
        // One last attempt just before refresh_time, if there is room for it.
        let last_chance = rem.saturating_sub(ONE_SECOND);
        if delay > last_chance && !last_chance.is_zero() {
            delay = last_chance;
        }
    }
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RefreshPolicy {
        RefreshPolicy::default()
    }

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn planned_refresh_is_inside_the_window() {
        let p = policy();
        let usable = s(3540.0); // a 1 h token: refresh_time is 60 s before expiry
        assert_eq!(planned_refresh(usable, &p, 0.0), usable.mul_f64(0.70));
        assert_eq!(planned_refresh(usable, &p, 1.0), usable.mul_f64(0.85));
        let mid = planned_refresh(usable, &p, 0.5);
        assert!(mid > usable.mul_f64(0.70) && mid < usable.mul_f64(0.85));
    }

    #[test]
    fn planned_refresh_is_never_within_a_second_of_refresh_time() {
        let p = RefreshPolicy {
            window: (0.95, 0.99),
            ..policy()
        };
        assert_eq!(planned_refresh(s(5.0), &p, 1.0), s(4.0));
        assert_eq!(planned_refresh(s(10.0), &p, 1.0), s(9.0));
        // A span of 2 s or less cannot keep a second's margin; the window still applies.
        assert_eq!(planned_refresh(s(2.0), &p, 0.0), s(1.9));
    }

    #[test]
    fn a_token_that_is_never_valid_is_not_refreshed_in_a_hot_loop() {
        let p = policy();
        assert_eq!(planned_refresh(Duration::ZERO, &p, 0.3), p.min_backoff);
    }

    #[test]
    fn jitter_spreads_over_the_whole_window() {
        let p = policy();
        let usable = s(1000.0);
        let mut rng = rand::rng();
        let draws: Vec<f64> = (0..10_000)
            .map(|_| planned_refresh(usable, &p, rand::Rng::random::<f64>(&mut rng)).as_secs_f64())
            .collect();
        let (min, max) = draws
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(min >= 700.0 && max <= 850.0, "{min} {max}");
        assert!(
            min < 702.0 && max > 848.0,
            "draws do not reach the window's edges: {min} {max}"
        );
        // Ten equal bins each get close to a tenth of the draws.
        let mut bins = [0u32; 10];
        for x in &draws {
            bins[(((x - 700.0) / 15.0) as usize).min(9)] += 1;
        }
        assert!(bins.iter().all(|&b| (800..1200).contains(&b)), "{bins:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RefreshPolicy {
            min_backoff: s(1.0),
            max_backoff: s(60.0),
            ..policy()
        };
        assert_eq!(backoff(&p, 1, 1.0), s(1.0));
        assert_eq!(backoff(&p, 2, 1.0), s(2.0));
        assert_eq!(backoff(&p, 4, 1.0), s(8.0));
        assert_eq!(backoff(&p, 7, 1.0), s(60.0));
        assert_eq!(backoff(&p, 1000, 1.0), s(60.0));
        for n in 1..50 {
            for u in [0.0, 0.3, 0.999] {
                let d = backoff(&p, n, u);
                assert!(d >= p.min_backoff && d <= p.max_backoff, "{n} {u} {d:?}");
            }
        }
        assert_eq!(backoff(&p, 10, 0.0), p.min_backoff);
    }

    #[test]
    fn retry_after_is_honoured_but_never_past_refresh_time() {
        let p = policy();
        let t = |ra| Failure::Transient {
            retry_after: Some(s(ra)),
        };
        // No token at stake: the server's word wins over a shorter backoff.
        assert_eq!(retry_delay(&p, 1, t(30.0), None, 0.0), s(30.0));
        // But an absurd Retry-After is capped.
        assert_eq!(retry_delay(&p, 1, t(1e7), None, 0.0), MAX_RETRY_AFTER);
        // A valid token with 20 s left: try once more at 19 s rather than obey 30 s.
        assert_eq!(retry_delay(&p, 1, t(30.0), Some(s(20.0)), 0.0), s(19.0));
    }

    #[test]
    fn retries_always_land_before_refresh_time_when_time_allows() {
        let p = policy();
        let transient = Failure::Transient { retry_after: None };
        for rem in [1.5, 2.0, 5.0, 30.0, 59.0, 61.0, 600.0, 3000.0] {
            for n in 1..12 {
                for u in [0.0, 0.5, 1.0] {
                    let d = retry_delay(&p, n, transient, Some(s(rem)), u);
                    assert!(d < s(rem), "rem {rem} n {n} u {u}: {d:?}");
                }
            }
        }
    }

    #[test]
    fn with_much_validity_left_retries_spread_over_a_quarter_of_it() {
        let p = policy();
        let transient = Failure::Transient { retry_after: None };
        let rem = s(1200.0);
        assert_eq!(retry_delay(&p, 3, transient, Some(rem), 1.0), s(300.0));
        assert_eq!(retry_delay(&p, 3, transient, Some(rem), 0.0), p.min_backoff);
        // The first retry is always quick.
        assert!(retry_delay(&p, 1, transient, Some(rem), 1.0) <= p.min_backoff);
    }

    #[test]
    fn permanent_failures_wait_max_backoff() {
        let p = policy();
        for n in [1, 2, 10] {
            assert_eq!(
                retry_delay(&p, n, Failure::Permanent, None, 0.0),
                p.max_backoff
            );
            assert_eq!(
                retry_delay(&p, n, Failure::Permanent, Some(s(5.0)), 0.0),
                p.max_backoff
            );
        }
    }
}
