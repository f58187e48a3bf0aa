//! Every Prometheus metric, defined once; gauges that depend on "now" are computed from the state at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::State;
use crate::token::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    pub token: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefreshResult {
    success,
    transient_error,
    permanent_error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    token: String,
    result: RefreshResult,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

/// What became of a notification to the app (`crate::notify`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum NotifyResult {
    /// The app was told: a 2xx answer, or the signal was sent.
    success,
    /// An attempt failed (http retries it with backoff).
    error,
    /// No process to signal: the pid file is missing or stale.
    skipped,
    /// A newer token replaced a notification before it was delivered.
    superseded,
}

impl NotifyResult {
    pub const ALL: [NotifyResult; 4] = [
        NotifyResult::success,
        NotifyResult::error,
        NotifyResult::skipped,
        NotifyResult::superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyResult::success => "success",
            NotifyResult::error => "error",
            NotifyResult::skipped => "skipped",
            NotifyResult::superseded => "superseded",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    token: String,
    result: NotifyResult,
}

/// `token_vendor_refresh_errors_total{token, kind}`: every error kind of every token, exported at zero from the start,
/// kept as one array of counters per token rather than a labelled series each (at 1,000 tokens and 26 kinds, a
/// `Family` held 26,000 series of two label strings and a counter each, ~8 MiB of heap).
#[derive(Debug, Default)]
struct ErrorCounters(Mutex<BTreeMap<String, Box<[AtomicU64]>>>);

impl ErrorCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Box<[AtomicU64]>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, token: &str) {
        let mut map = self.lock();
        if !map.contains_key(token) {
            map.insert(token.to_string(), Self::zeros());
        }
    }

    fn zeros() -> Box<[AtomicU64]> {
        ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect()
    }

    fn inc(&self, token: &str, kind: ErrorKind) {
        let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) else {
            return;
        };
        let mut map = self.lock();
        if !map.contains_key(token) {
            map.insert(token.to_string(), Self::zeros());
        }
        if let Some(c) = map.get(token).and_then(|counts| counts.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forget(&self, token: &str) {
        self.lock().remove(token);
    }
}

impl Collector for ErrorCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "token_vendor_refresh_errors",
            "Failed token requests and writes by error kind (the kind shown in /status last_error)",
            None,
            MetricType::Counter,
        )?;
        for (token, counts) in self.lock().iter() {
            for (kind, count) in ErrorKind::ALL.iter().zip(counts.iter()) {
                let labels = [("token", token.as_str()), ("kind", kind.as_str())];
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<TokenLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    token_valid: Family<TokenLabel, Gauge>,
    expiry: Family<TokenLabel, FloatGauge>,
    refresh_time: Family<TokenLabel, FloatGauge>,
    refresh_total: Family<RefreshLabels, Counter>,
    refresh_errors: Arc<ErrorCounters>,
    refresh_duration: HistogramFamily,
    last_success: Family<TokenLabel, FloatGauge>,
    write_errors: Family<TokenLabel, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    notify_total: Family<NotifyLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn label(token: &str) -> TokenLabel {
    TokenLabel {
        token: token.to_string(),
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~20 s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            token_valid: Family::default(),
            expiry: Family::default(),
            refresh_time: Family::default(),
            refresh_total: Family::default(),
            refresh_errors: Arc::default(),
            refresh_duration: Family::new_with_constructor(duration_histogram),
            last_success: Family::default(),
            write_errors: Family::default(),
            reloads: Family::default(),
            notify_total: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "token_vendor_token_valid",
            "1 when the published token is valid() now (now < refresh_time), else 0",
            m.token_valid.clone(),
        );
        registry.register(
            "token_vendor_token_expiry_timestamp_seconds",
            "Unix time at which the published token expires",
            m.expiry.clone(),
        );
        registry.register(
            "token_vendor_token_refresh_timestamp_seconds",
            "Unix time of the published token's refresh_time, when it stops being valid()",
            m.refresh_time.clone(),
        );
        registry.register(
            "token_vendor_refresh",
            "Token requests by result",
            m.refresh_total.clone(),
        );
        registry.register_collector(Box::new(m.refresh_errors.clone()));
        registry.register(
            "token_vendor_refresh_duration_seconds",
            "Time taken by token requests",
            m.refresh_duration.clone(),
        );
        registry.register(
            "token_vendor_last_success_timestamp_seconds",
            "Unix time of the last successful refresh",
            m.last_success.clone(),
        );
        registry.register(
            "token_vendor_output_write_errors",
            "Failed writes of output files",
            m.write_errors.clone(),
        );
        registry.register(
            "token_vendor_config_reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        registry.register(
            "token_vendor_notify",
            "Notifications to the app that its token changed (tokens with a notify hook), by result: success, error (a failed attempt; http retries it), skipped (no process to signal), superseded (a newer token came first)",
            m.notify_total.clone(),
        );
        registry.register(
            "token_vendor_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Every labelled counter exists at zero from the start, so `rate()` and `increase()` work from the first scrape.
        for result in [ReloadResult::success, ReloadResult::error] {
            let _ = m.reloads.get_or_create(&ReloadLabels { result });
        }
        Metrics { registry, ..m }
    }

    pub fn refresh(&self, token: &str, result: RefreshResult, took: Duration) {
        self.refresh_total
            .get_or_create(&RefreshLabels {
                token: token.to_string(),
                result,
            })
            .inc();
        self.refresh_duration
            .get_or_create(&label(token))
            .observe(took.as_secs_f64());
    }

    /// Counts one failed refresh under its error kind.
    pub fn refresh_error(&self, token: &str, kind: ErrorKind) {
        self.refresh_errors.inc(token, kind);
    }

    pub fn success(&self, token: &str, at: SystemTime) {
        self.last_success
            .get_or_create(&label(token))
            .set(unix_seconds(at));
    }

    pub fn write_error(&self, token: &str) {
        self.write_errors.get_or_create(&label(token)).inc();
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn notify(&self, token: &str, result: NotifyResult) {
        self.notify_total
            .get_or_create(&NotifyLabels {
                token: token.to_string(),
                result,
            })
            .inc();
    }

    /// Makes a token's notify series exist from the start (only tokens with a hook have them).
    pub fn register_notify(&self, token: &str) {
        for result in NotifyResult::ALL {
            let _ = self.notify_total.get_or_create(&NotifyLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// Drops a token's notify series (its hook was removed, or the token).
    pub fn forget_notify(&self, token: &str) {
        for result in NotifyResult::ALL {
            self.notify_total.remove(&NotifyLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// Makes a token's series exist from the start, so alerts see zeros rather than nothing.
    pub fn register_token(&self, token: &str) {
        let l = label(token);
        let _ = self.write_errors.get_or_create(&l);
        self.refresh_errors.register(token);
        for result in [
            RefreshResult::success,
            RefreshResult::transient_error,
            RefreshResult::permanent_error,
        ] {
            let _ = self.refresh_total.get_or_create(&RefreshLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// Drops every series of a token that is no longer configured.
    pub fn forget_token(&self, token: &str) {
        let l = label(token);
        self.token_valid.remove(&l);
        self.expiry.remove(&l);
        self.refresh_time.remove(&l);
        self.refresh_duration.remove(&l);
        self.last_success.remove(&l);
        self.write_errors.remove(&l);
        self.forget_notify(token);
        self.refresh_errors.forget(token);
        for result in [
            RefreshResult::success,
            RefreshResult::transient_error,
            RefreshResult::permanent_error,
        ] {
            self.refresh_total.remove(&RefreshLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// The Prometheus text exposition, with the time-dependent gauges brought up to date first.
    pub fn encode(&self, state: &State) -> String {
        let now = state.clock().mono();
        for (name, s) in state.snapshot() {
            let l = label(&name);
            self.token_valid
                .get_or_create(&l)
                .set(i64::from(s.valid_at(now)));
            if let Some(p) = s.published {
                self.expiry
                    .get_or_create(&l)
                    .set(unix_seconds(p.expires_at));
                self.refresh_time
                    .get_or_create(&l)
                    .set(unix_seconds(p.refresh_time));
            }
        }
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn errors_are_counted_by_kind_and_forgotten_with_their_token() {
        let m = Metrics::new();
        let state = State::new(Clock::System);
        m.register_token("a");
        m.refresh_error("a", ErrorKind::Timeout);
        m.refresh_error("a", ErrorKind::Timeout);
        m.refresh_error("b", ErrorKind::InvalidClient);
        let text = m.encode(&state);
        for kind in ErrorKind::ALL {
            assert!(
                text.contains(&format!(
                    "token_vendor_refresh_errors_total{{token=\"a\",kind=\"{}\"}} {}",
                    kind.as_str(),
                    if kind.as_str() == "timeout" { 2 } else { 0 }
                )),
                "{kind:?} not exported for a registered token:\n{text}"
            );
        }
        for result in ["success", "error"] {
            assert!(
                text.contains(&format!(
                    "token_vendor_config_reloads_total{{result=\"{result}\"}} 0"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("token_vendor_refresh_errors_total{token=\"a\",kind=\"timeout\"} 2"),
            "{text}"
        );
        m.forget_token("a");
        let text = m.encode(&state);
        assert!(!text.contains("token=\"a\",kind"), "{text}");
        assert!(
            text.contains(
                "token_vendor_refresh_errors_total{token=\"b\",kind=\"invalid_client\"} 1"
            ),
            "{text}"
        );
    }
}
