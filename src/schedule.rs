//! When to refresh and when to retry: pure functions of durations and a uniform draw `u` in [0, 1), so they are table-tested without a clock.

use std::time::{Duration, SystemTime};

use crate::config::RefreshPolicy;

const ONE_SECOND: Duration = Duration::from_secs(1);

/// The longest a server's `Retry-After` is obeyed when no valid token is at stake.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// While a valid token remains and half of what remains exceeds `max_backoff`, a retry after the first lands at a
/// uniform point in this span of the remaining validity (the second half of it): a fleet recovering from an outage
/// comes back spread over what each sidecar can afford to wait, not all at once (see BENCHMARKS.md, fleet simulation).
pub(crate) const SPREAD_OF_REMAINING: (f64, f64) = (0.5, 1.0);

/// The last chances of a valid token: a retry never lands later than one second before its `refresh_time`, and if
/// that one fails, a final retry comes this long before it, so a server that recovers in that last second is asked.
pub(crate) const FINAL_CHANCE: Duration = Duration::from_millis(10);

/// Delay from issue to the planned refresh: a fraction drawn from the window of the span from issue to
/// `refresh_time`, never later than one second before `refresh_time` (when the span allows), never sooner than
/// `min_backoff` for a token that is never valid.
pub(crate) fn planned_refresh(usable: Duration, policy: &RefreshPolicy, u: f64) -> Duration {
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

/// Delay from `now` until the planned refresh of a token issued at `issued_at` with `usable` time to its
/// `refresh_time` (zero when that moment has passed). The refresher and the fleet simulator both call this.
pub fn next_refresh(
    issued_at: SystemTime,
    usable: Duration,
    now: SystemTime,
    policy: &RefreshPolicy,
    u: f64,
) -> Duration {
    (issued_at + planned_refresh(usable, policy, u))
        .duration_since(now)
        .unwrap_or_default()
}

/// `delay` (from `now` to a planned refresh), clamped so that the refresh goes out one second before `assertion_exp`,
/// the `exp` of a client assertion someone else signed: if the file is not rotated in time, the refresh is still
/// made with a valid assertion. An assertion already within its last second changes nothing (its request fails
/// with a clear error instead).
pub(crate) fn clamp_to_assertion(
    delay: Duration,
    now: SystemTime,
    assertion_exp: Option<SystemTime>,
) -> Duration {
    match assertion_exp.and_then(|exp| exp.duration_since(now).ok()) {
        Some(left) if left > ONE_SECOND => delay.min(left - ONE_SECOND),
        _ => delay,
    }
}

/// How long a token whose `refresh_time` is given stays `valid()` after `now`; `None` when it is not valid now.
pub fn remaining(refresh_time: SystemTime, now: SystemTime) -> Option<Duration> {
    refresh_time
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
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
/// and honour `Retry-After`; while a token is valid, retries after the first are spread over the second half of
/// the validity left (when that is longer than `max_backoff`), and they always try again before its `refresh_time`:
/// at the latest one second before it, and then once more just before it ([`FINAL_CHANCE`]).
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
        // Plenty of validity left: wait for a share of it, so a recovering fleet does not return at once.
        let (lo, hi) = SPREAD_OF_REMAINING;
        if consecutive_failures > 1 && rem.mul_f64(lo) > policy.max_backoff {
            delay = rem.mul_f64(lo + (hi - lo) * u.clamp(0.0, 1.0));
        }
    }
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(MAX_RETRY_AFTER));
    }
    if let Some(rem) = remaining {
        // The last chances: a second before refresh_time, then just before it.
        let last_chance = if rem > ONE_SECOND {
            rem - ONE_SECOND
        } else {
            rem.saturating_sub(FINAL_CHANCE)
        };
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
    fn with_much_validity_left_retries_spread_over_the_second_half_of_it() {
        let p = policy();
        let transient = Failure::Transient { retry_after: None };
        let rem = s(1200.0);
        assert_eq!(retry_delay(&p, 3, transient, Some(rem), 0.0), s(600.0));
        assert_eq!(retry_delay(&p, 3, transient, Some(rem), 0.5), s(900.0));
        // The top of the span is the last chance, a second before refresh_time.
        assert_eq!(retry_delay(&p, 3, transient, Some(rem), 1.0), s(1199.0));
        // The first retry is always quick.
        assert!(retry_delay(&p, 1, transient, Some(rem), 1.0) <= p.min_backoff);
        // With no more than 2 x max_backoff left, plain backoff: more tries before the token lapses.
        for u in [0.0, 0.5, 1.0] {
            assert_eq!(
                retry_delay(&p, 3, transient, Some(s(120.0)), u),
                backoff(&p, 3, u)
            );
        }
        // Without a valid token, nothing to spread over: backoff, at most max_backoff.
        for n in 1..20 {
            assert!(retry_delay(&p, n, transient, None, 1.0) <= p.max_backoff);
        }
    }

    #[test]
    fn a_failed_last_chance_gets_a_final_one_just_before_refresh_time() {
        let p = policy();
        let transient = Failure::Transient { retry_after: None };
        // 1 s left (the last chance just failed): the final try comes FINAL_CHANCE before refresh_time.
        assert_eq!(
            retry_delay(&p, 5, transient, Some(s(1.0)), 1.0),
            s(1.0) - FINAL_CHANCE
        );
        assert_eq!(
            retry_delay(&p, 5, transient, Some(s(0.5)), 1.0),
            s(0.5) - FINAL_CHANCE
        );
        // Within FINAL_CHANCE of refresh_time there is no chance left: ordinary backoff, never a hot loop.
        for rem in [0.01, 0.005, 0.0] {
            let d = retry_delay(&p, 5, transient, Some(s(rem)), 0.0);
            assert!(d >= p.min_backoff, "{rem}: {d:?}");
        }
        // Against a server that stays down, from any remaining validity: the last attempt before refresh_time
        // comes within FINAL_CHANCE of it, and at most two attempts fall in its last second.
        for rem in [0.5, 1.0, 1.5, 3.0, 61.0, 200.0, 3540.0] {
            for u in [0.0, 0.5, 1.0] {
                let (mut left, mut n, mut last_second) = (s(rem), 1, 0);
                loop {
                    if left <= ONE_SECOND {
                        last_second += 1;
                    }
                    let d = retry_delay(&p, n, transient, Some(left), u);
                    if d >= left {
                        break;
                    }
                    left -= d;
                    n += 1;
                }
                assert!(left <= FINAL_CHANCE, "rem {rem} u {u}: {left:?}");
                assert!(last_second <= 2, "rem {rem} u {u}: {last_second}");
            }
        }
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

    #[test]
    fn a_refresh_is_never_planned_past_the_client_assertion_exp() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let s = Duration::from_secs;
        // (planned delay, assertion exp from now, expected)
        for (delay, exp, want) in [
            (s(600), None, s(600)),
            (s(600), Some(s(3600)), s(600)),
            (s(600), Some(s(300)), s(299)),
            (s(600), Some(s(601)), s(600)),
            (s(600), Some(s(1)), s(600)),
        ] {
            let exp = exp.map(|e| now + e);
            assert_eq!(clamp_to_assertion(delay, now, exp), want, "{exp:?}");
        }
        // An assertion that expired already changes nothing.
        assert_eq!(clamp_to_assertion(s(600), now, Some(now - s(5))), s(600));
    }
}
