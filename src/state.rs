//! What each token's refresher has published, shared with the admin server; readiness and liveness are computed from it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::token::token::rfc3339;
use crate::token::{FetchError, Token};

/// The times of the token on disk (never the token itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub(crate) issued_at: SystemTime,
    pub(crate) refresh_time: SystemTime,
    pub(crate) expires_at: SystemTime,
    /// `refresh_time` on the monotonic clock: readiness ends here.
    pub(crate) valid_until: Instant,
}

impl Published {
    pub(crate) fn of(token: &Token, clock: &Clock) -> Published {
        Published {
            issued_at: token.issued_at,
            refresh_time: token.refresh_time(),
            expires_at: token.expires_at(),
            valid_until: clock.mono_at(token.refresh_time()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LastError {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl From<&FetchError> for LastError {
    fn from(e: &FetchError) -> Self {
        LastError {
            kind: e.kind.as_str(),
            message: e.message.clone(),
        }
    }
}

/// What `/status` shows of a token's notify hook: never the token, never what the app answered.
#[derive(Debug, Clone)]
pub(crate) struct NotifyStatus {
    /// `http` or `signal`.
    pub(crate) kind: &'static str,
    /// The URL, or the signal and the pid file.
    pub(crate) target: String,
    /// The last attempt's result, as the metric's `result` label says it.
    pub(crate) last_result: Option<&'static str>,
    pub(crate) last_attempt: Option<SystemTime>,
    pub(crate) last_success: Option<SystemTime>,
    /// Why the last attempt did not reach the app (bounded; names the URL or pid file).
    pub(crate) problem: Option<String>,
}

impl NotifyStatus {
    pub(crate) fn new(kind: &'static str, target: String) -> Self {
        NotifyStatus {
            kind,
            target,
            last_result: None,
            last_attempt: None,
            last_success: None,
            problem: None,
        }
    }
}

/// One token's published status.
#[derive(Debug, Clone)]
pub(crate) struct TokenStatus {
    pub(crate) url: String,
    pub(crate) published: Option<Published>,
    pub(crate) next_refresh: Option<SystemTime>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<LastError>,
    pub(crate) last_success: Option<SystemTime>,
    /// The refresher promises to act again by this instant; past it, it has stalled.
    pub(crate) expected_by: Instant,
    pub(crate) alive: bool,
    /// The notify hook's last result; `None` without a hook.
    pub(crate) notify: Option<NotifyStatus>,
}

impl TokenStatus {
    pub(crate) fn new(url: String, now: Instant) -> Self {
        TokenStatus {
            url,
            published: None,
            next_refresh: None,
            consecutive_failures: 0,
            last_error: None,
            last_success: None,
            expected_by: now + Duration::from_secs(60),
            alive: true,
            notify: None,
        }
    }

    pub(crate) fn valid_at(&self, now: Instant) -> bool {
        self.published.is_some_and(|p| now < p.valid_until)
    }

    /// Why the token is not ready, or `None` when it is.
    fn not_ready_reason(&self, now: Instant) -> Option<String> {
        match (&self.published, &self.last_error) {
            (Some(p), _) if now < p.valid_until => None,
            (Some(_), Some(e)) => Some(format!(
                "token reached its refresh_time; last error: {}",
                e.kind
            )),
            (Some(_), None) => {
                Some("token reached its refresh_time; a refresh is in progress".into())
            }
            (None, Some(e)) => Some(format!("no token yet; last error: {}", e.kind)),
            (None, None) => Some("no token yet".into()),
        }
    }
}

/// All tokens' status, keyed by token name.
#[derive(Debug)]
pub(crate) struct State {
    clock: Clock,
    tokens: Mutex<BTreeMap<String, TokenStatus>>,
}

#[derive(Serialize)]
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    pub(crate) tokens: BTreeMap<String, TokenReadiness>,
}

#[derive(Serialize)]
pub(crate) struct TokenReadiness {
    pub(crate) ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Liveness {
    pub(crate) live: bool,
    pub(crate) tokens: BTreeMap<String, TokenReadiness>,
}

#[derive(Serialize)]
pub(crate) struct StatusEntry {
    pub(crate) name: String,
    pub(crate) ready: bool,
    pub(crate) token_url: String,
    pub(crate) issued_at: Option<String>,
    pub(crate) refresh_time: Option<String>,
    pub(crate) expires_at: Option<String>,
    pub(crate) next_refresh: Option<String>,
    pub(crate) last_success: Option<String>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<StatusError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notify: Option<StatusNotify>,
}

#[derive(Serialize)]
pub(crate) struct StatusNotify {
    pub(crate) kind: &'static str,
    pub(crate) target: String,
    pub(crate) last_result: Option<&'static str>,
    pub(crate) last_attempt: Option<String>,
    pub(crate) last_success: Option<String>,
    pub(crate) problem: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct StatusError {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl State {
    pub(crate) fn new(clock: Clock) -> Arc<State> {
        Arc::new(State {
            clock,
            tokens: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, TokenStatus>> {
        // A panic while holding this lock cannot leave a status half-updated in a way that matters; keep serving.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a token, or keeps its entry (and its published token) if it is already there.
    pub(crate) fn register(&self, name: &str, url: String) {
        let now = self.clock.mono();
        let mut t = self.lock();
        let e = t
            .entry(name.to_string())
            .or_insert_with(|| TokenStatus::new(url.clone(), now));
        e.url = url;
        e.alive = true;
        e.expected_by = now + Duration::from_secs(60);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    pub(crate) fn update<R>(&self, name: &str, f: impl FnOnce(&mut TokenStatus) -> R) -> Option<R> {
        self.lock().get_mut(name).map(f)
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, TokenStatus> {
        self.lock().clone()
    }

    /// Whether there are tokens and every one has a published token that is `valid()` now (readiness, without
    /// the reasons).
    pub(crate) fn all_valid(&self) -> bool {
        let now = self.clock.mono();
        let t = self.lock();
        !t.is_empty() && t.values().all(|s| s.valid_at(now))
    }

    /// Ready when every configured token has a published token that is `valid()` now.
    pub(crate) fn readiness(&self) -> Readiness {
        let now = self.clock.mono();
        let t = self.lock();
        let tokens: BTreeMap<String, TokenReadiness> = t
            .iter()
            .map(|(name, s)| {
                let reason = s.not_ready_reason(now);
                (
                    name.clone(),
                    TokenReadiness {
                        ready: reason.is_none(),
                        reason,
                    },
                )
            })
            .collect();
        Readiness {
            ready: !tokens.is_empty() && tokens.values().all(|r| r.ready),
            tokens,
        }
    }

    /// Live while every refresher is running and has acted when it said it would.
    pub(crate) fn liveness(&self) -> Liveness {
        let now = self.clock.mono();
        let t = self.lock();
        let tokens: BTreeMap<String, TokenReadiness> = t
            .iter()
            .map(|(name, s)| {
                let reason = if !s.alive {
                    Some("the refresher task has stopped".to_string())
                } else if now > s.expected_by {
                    Some(format!(
                        "the refresher is {}s overdue",
                        now.duration_since(s.expected_by).as_secs()
                    ))
                } else {
                    None
                };
                (
                    name.clone(),
                    TokenReadiness {
                        ready: reason.is_none(),
                        reason,
                    },
                )
            })
            .collect();
        Liveness {
            live: tokens.values().all(|r| r.ready),
            tokens,
        }
    }

    pub(crate) fn status(&self) -> Vec<StatusEntry> {
        let now = self.clock.mono();
        self.lock()
            .iter()
            .map(|(name, s)| StatusEntry {
                name: name.clone(),
                ready: s.valid_at(now),
                token_url: s.url.clone(),
                issued_at: s.published.map(|p| rfc3339(p.issued_at)),
                refresh_time: s.published.map(|p| rfc3339(p.refresh_time)),
                expires_at: s.published.map(|p| rfc3339(p.expires_at)),
                next_refresh: s.next_refresh.map(rfc3339),
                last_success: s.last_success.map(rfc3339),
                consecutive_failures: s.consecutive_failures,
                last_error: s.last_error.as_ref().map(|e| StatusError {
                    kind: e.kind,
                    message: e.message.clone(),
                }),
                notify: s.notify.as_ref().map(|n| StatusNotify {
                    kind: n.kind,
                    target: n.target.clone(),
                    last_result: n.last_result,
                    last_attempt: n.last_attempt.map(rfc3339),
                    last_success: n.last_success.map(rfc3339),
                    problem: n.problem.clone(),
                }),
            })
            .collect()
    }
}
