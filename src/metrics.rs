//! Every Prometheus metric, defined once; gauges that depend on "now" are computed from the state at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::State;
use crate::token::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabel {
    pub(crate) token: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RefreshResult {
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
pub(crate) enum ReloadResult {
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
pub(crate) enum NotifyResult {
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
    pub(crate) const ALL: [NotifyResult; 4] = [
        NotifyResult::success,
        NotifyResult::error,
        NotifyResult::skipped,
        NotifyResult::superseded,
    ];

    pub(crate) fn as_str(self) -> &'static str {
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

/// The number of error kinds, each a counter of every token.
const KINDS: usize = ErrorKind::ALL.len();

/// How many finite upper bounds `token_vendor_refresh_duration_seconds` has (5 ms .. ~20 s); +Inf follows.
const DURATION_BOUNDS: usize = 13;

/// The bucket bounds, as `Histogram::new(exponential_buckets(0.005, 2.0, 13))` has them.
fn duration_bounds() -> [f64; DURATION_BOUNDS + 1] {
    let mut b = [f64::INFINITY; DURATION_BOUNDS + 1];
    for (slot, bound) in b
        .iter_mut()
        .zip(exponential_buckets(0.005, 2.0, DURATION_BOUNDS as u16))
    {
        *slot = bound;
    }
    b
}

const RESULTS: [RefreshResult; 3] = [
    RefreshResult::success,
    RefreshResult::transient_error,
    RefreshResult::permanent_error,
];

/// A token's refresh durations: the classic histogram's sum, count and per-bucket counts.
#[derive(Debug, Default)]
struct Durations {
    sum: f64,
    count: u64,
    buckets: [u64; DURATION_BOUNDS + 1],
}

/// Every per-token counter series of one token, kept together. As labelled `Family` series (a label string and an
/// allocation or two per series, in hash tables per metric) they cost ~1.2 KiB a token; 26,000 error series alone
/// once held ~8 MiB at 1,000 tokens.
#[derive(Debug)]
struct Series {
    /// By [`RESULTS`].
    refresh: [u64; 3],
    /// By [`ErrorKind::ALL`]; every kind is exported at zero from the start.
    errors: [u64; KINDS],
    write_errors: u64,
    /// Exported once the token has succeeded.
    last_success: Option<f64>,
    /// Exported once the token has made a request.
    durations: Option<Box<Durations>>,
}

impl Series {
    fn new() -> Box<Series> {
        Box::new(Series {
            refresh: [0; 3],
            errors: [0; KINDS],
            write_errors: 0,
            last_success: None,
            durations: None,
        })
    }
}

/// `token_vendor_refresh_total`, `token_vendor_refresh_errors_total`, `token_vendor_refresh_duration_seconds`,
/// `token_vendor_last_success_timestamp_seconds` and `token_vendor_output_write_errors_total`, by token.
#[derive(Debug, Default)]
struct TokenSeries(Mutex<BTreeMap<String, Box<Series>>>);

impl TokenSeries {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Box<Series>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes a token's series, making them (at zero) if the token has none yet.
    fn update(&self, token: &str, f: impl FnOnce(&mut Series)) {
        let mut map = self.lock();
        match map.get_mut(token) {
            Some(s) => f(s),
            None => {
                let mut s = Series::new();
                f(&mut s);
                map.insert(token.to_string(), s);
            }
        }
    }

    fn forget(&self, token: &str) {
        self.lock().remove(token);
    }
}

impl Collector for TokenSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.lock();
        if !map.is_empty() {
            let mut family = encoder.encode_descriptor(
                "token_vendor_refresh",
                "Token requests by result.",
                None,
                MetricType::Counter,
            )?;
            for (token, s) in map.iter() {
                for (result, n) in RESULTS.iter().zip(s.refresh) {
                    let labels = RefreshLabels {
                        token: token.clone(),
                        result: *result,
                    };
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        // Exported even with no token, as it always was. (The registry ends registered metrics' help with a period, as
        // above; this one was always a collector's, without.)
        let mut family = encoder.encode_descriptor(
            "token_vendor_refresh_errors",
            "Failed token requests and writes by error kind (the kind shown in /status last_error)",
            None,
            MetricType::Counter,
        )?;
        for (token, s) in map.iter() {
            for (kind, n) in ErrorKind::ALL.iter().zip(s.errors) {
                let labels = [("token", token.as_str()), ("kind", kind.as_str())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        if map.values().any(|s| s.durations.is_some()) {
            let mut family = encoder.encode_descriptor(
                "token_vendor_refresh_duration_seconds",
                "Time taken by token requests.",
                None,
                MetricType::Histogram,
            )?;
            for (token, s) in map.iter() {
                let Some(d) = &s.durations else { continue };
                let buckets: Vec<(f64, u64)> =
                    duration_bounds().into_iter().zip(d.buckets).collect();
                family
                    .encode_family(&[("token", token.as_str())])?
                    .encode_histogram::<NoLabelSet>(d.sum, d.count, &buckets, None)?;
            }
        }
        if map.values().any(|s| s.last_success.is_some()) {
            let mut family = encoder.encode_descriptor(
                "token_vendor_last_success_timestamp_seconds",
                "Unix time of the last successful refresh.",
                None,
                MetricType::Gauge,
            )?;
            for (token, s) in map.iter() {
                let Some(at) = s.last_success else { continue };
                ConstGauge::new(at).encode(family.encode_family(&[("token", token.as_str())])?)?;
            }
        }
        if !map.is_empty() {
            let mut family = encoder.encode_descriptor(
                "token_vendor_output_write_errors",
                "Failed writes of output files.",
                None,
                MetricType::Counter,
            )?;
            for (token, s) in map.iter() {
                ConstCounter::new(s.write_errors)
                    .encode(family.encode_family(&[("token", token.as_str())])?)?;
            }
        }
        Ok(())
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub(crate) struct Metrics {
    registry: Registry,
    token_valid: Family<TokenLabel, Gauge>,
    expiry: Family<TokenLabel, FloatGauge>,
    refresh_time: Family<TokenLabel, FloatGauge>,
    tokens: Arc<TokenSeries>,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            token_valid: Family::default(),
            expiry: Family::default(),
            refresh_time: Family::default(),
            tokens: Arc::default(),
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
        registry.register_collector(Box::new(m.tokens.clone()));
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

    pub(crate) fn refresh(&self, token: &str, result: RefreshResult, took: Duration) {
        let secs = took.as_secs_f64();
        self.tokens.update(token, |s| {
            if let Some(i) = RESULTS.iter().position(|r| *r == result) {
                s.refresh[i] += 1;
            }
            let d = s.durations.get_or_insert_with(Box::default);
            d.sum += secs;
            d.count += 1;
            // The first bucket whose upper bound holds it (+Inf holds everything, NaN included).
            let i = duration_bounds()
                .iter()
                .position(|b| *b >= secs)
                .unwrap_or(DURATION_BOUNDS);
            d.buckets[i] += 1;
        });
    }

    /// Counts one failed refresh under its error kind.
    pub(crate) fn refresh_error(&self, token: &str, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.tokens.update(token, |s| s.errors[i] += 1);
        }
    }

    pub(crate) fn success(&self, token: &str, at: SystemTime) {
        self.tokens
            .update(token, |s| s.last_success = Some(unix_seconds(at)));
    }

    pub(crate) fn write_error(&self, token: &str) {
        self.tokens.update(token, |s| s.write_errors += 1);
    }

    pub(crate) fn reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub(crate) fn notify(&self, token: &str, result: NotifyResult) {
        self.notify_total
            .get_or_create(&NotifyLabels {
                token: token.to_string(),
                result,
            })
            .inc();
    }

    /// Makes a token's notify series exist from the start (only tokens with a hook have them).
    pub(crate) fn register_notify(&self, token: &str) {
        for result in NotifyResult::ALL {
            let _ = self.notify_total.get_or_create(&NotifyLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// Drops a token's notify series (its hook was removed, or the token).
    pub(crate) fn forget_notify(&self, token: &str) {
        for result in NotifyResult::ALL {
            self.notify_total.remove(&NotifyLabels {
                token: token.to_string(),
                result,
            });
        }
    }

    /// Makes a token's series exist from the start, so alerts see zeros rather than nothing.
    pub(crate) fn register_token(&self, token: &str) {
        self.tokens.update(token, |_| {});
    }

    /// Drops every series of a token that is no longer configured.
    pub(crate) fn forget_token(&self, token: &str) {
        let l = label(token);
        self.token_valid.remove(&l);
        self.expiry.remove(&l);
        self.refresh_time.remove(&l);
        self.forget_notify(token);
        self.tokens.forget(token);
    }

    /// The Prometheus text exposition, with the time-dependent gauges brought up to date first.
    pub(crate) fn encode(&self, state: &State) -> String {
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

    /// The per-token series print exactly as the prometheus-client metrics they replaced.
    #[test]
    fn the_compact_series_print_as_the_library_s_families_did() {
        use prometheus_client::metrics::histogram::Histogram;
        let m = Metrics::new();
        let state = State::new(Clock::System);
        let (mut lib, refresh, durations, last, writes) = (
            Registry::default(),
            Family::<RefreshLabels, Counter>::default(),
            Family::<TokenLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            }),
            Family::<TokenLabel, FloatGauge>::default(),
            Family::<TokenLabel, Counter>::default(),
        );
        lib.register(
            "token_vendor_refresh",
            "Token requests by result",
            refresh.clone(),
        );
        lib.register(
            "token_vendor_refresh_duration_seconds",
            "Time taken by token requests",
            durations.clone(),
        );
        lib.register(
            "token_vendor_last_success_timestamp_seconds",
            "Unix time of the last successful refresh",
            last.clone(),
        );
        lib.register(
            "token_vendor_output_write_errors",
            "Failed writes of output files",
            writes.clone(),
        );
        m.register_token("a");
        for result in RESULTS {
            let _ = refresh.get_or_create(&RefreshLabels {
                token: "a".into(),
                result,
            });
        }
        let _ = writes.get_or_create(&label("a"));
        for (ms, result) in [
            (1, RefreshResult::success),
            (5, RefreshResult::success),
            (30, RefreshResult::transient_error),
            (1_000, RefreshResult::permanent_error),
            (100_000, RefreshResult::success),
        ] {
            let took = Duration::from_millis(ms);
            m.refresh("a", result, took);
            refresh
                .get_or_create(&RefreshLabels {
                    token: "a".into(),
                    result,
                })
                .inc();
            durations
                .get_or_create(&label("a"))
                .observe(took.as_secs_f64());
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_500);
        m.success("a", at);
        last.get_or_create(&label("a")).set(unix_seconds(at));
        m.write_error("a");
        writes.get_or_create(&label("a")).inc();
        let ours = m.encode(&state);
        let mut theirs = String::new();
        prometheus_client::encoding::text::encode(&mut theirs, &lib).unwrap();
        let theirs: Vec<&str> = theirs.lines().filter(|l| *l != "# EOF").collect();
        assert!(theirs.len() > 20, "{theirs:?}");
        for line in &theirs {
            assert!(
                ours.lines().any(|l| l == *line),
                "missing {line:?} in:\n{ours}"
            );
        }
        // Nothing of a forgotten token is left.
        m.forget_token("a");
        let text = m.encode(&state);
        assert!(!text.contains("token=\"a\""), "{text}");
    }

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
