//! One refresher per token: vend, publish to the sinks, schedule the next refresh or retry; `run` is the loop (`refresh_once`, one request and its publish, is the step the tests drive).

pub(crate) mod sink;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::RefreshPolicy;
use crate::metrics::{Metrics, RefreshResult};
use crate::schedule::{self, next_refresh, remaining, retry_delay, Failure};
use crate::state::{LastError, Published, State};
use crate::token::discovery::Cached;
use crate::token::token::rfc3339;
use crate::token::{ErrorKind, FetchError, Token, TokenClient};
pub(crate) use sink::Sink;

/// At most this many token requests are in flight at once in one process. A sidecar with many tokens then never
/// opens a connection per token at once: its identity provider sees no start-up burst, and the heap does not grow by
/// ~50 KiB per token for connection buffers that the allocator keeps after the burst (BENCHMARKS.md, 1,000 tokens).
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// How long a request waits for its turn before it goes anyway, so an endpoint that hangs while holding every
/// turn cannot stall the other tokens' refreshers past their liveness promise (patience + request timeout stays
/// within the grace of request timeout + 30 s).
pub(crate) const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(20);

static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_IN_FLIGHT);

/// At most this many refreshers' file jobs (warm start, output and state writes) run at once, each on one of as
/// many file threads. Unbounded, 1,000 tokens starting together made tokio's blocking pool start up to its cap of
/// 512 threads; bounded by a semaphore alone, it still started 10-60, since a thread that has just finished a job is
/// not yet idle when the next job comes: each thread with its stack and glibc heap arena (BENCHMARKS.md, 1,000 tokens).
pub(crate) const MAX_FILE_JOBS: usize = 4;

static FILE_JOBS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_FILE_JOBS);

type Job = Box<dyn FnOnce() + Send>;

/// The file threads' queue. Idle threads wait on the condition variable, so a job wakes exactly one of them (a shared
/// `Mutex<Receiver>` woke two per job: the thread that took the job and the next one waiting for the lock).
struct FileQueue {
    jobs: std::sync::Mutex<std::collections::VecDeque<Job>>,
    ready: std::sync::Condvar,
}

impl FileQueue {
    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
        self.ready.notify_one();
    }

    fn take(&self) -> Job {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = jobs.pop_front() {
                return job;
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The file threads' queue, `None` when not one thread could start; the threads start with the first job and live
/// as long as the process.
static FILE_THREADS: std::sync::OnceLock<Option<Arc<FileQueue>>> = std::sync::OnceLock::new();

fn file_threads() -> Option<&'static Arc<FileQueue>> {
    FILE_THREADS
        .get_or_init(|| {
            let queue = Arc::new(FileQueue {
                jobs: std::sync::Mutex::new(std::collections::VecDeque::new()),
                ready: std::sync::Condvar::new(),
            });
            let mut started = 0;
            for i in 0..MAX_FILE_JOBS {
                let q = queue.clone();
                // A thread that cannot start leaves its jobs to the others (or, with none, to the blocking pool).
                let spawned = std::thread::Builder::new()
                    .name(format!("tv-files-{i}"))
                    // As tokio's blocking threads: only the pages a job touches are resident.
                    .stack_size(2 * 1024 * 1024)
                    .spawn(move || loop {
                        q.take()()
                    });
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then_some(queue)
        })
        .as_ref()
}

/// A file job that did not complete: it panicked (a bug), or no thread could run it.
#[derive(Debug, thiserror::Error)]
#[error("the file job did not complete")]
pub(crate) struct FileJobFailed;

/// Runs `f` on a file thread once one of the [`MAX_FILE_JOBS`] turns is free. After [`IN_FLIGHT_PATIENCE`] without
/// one it runs on tokio's blocking pool instead, so a disk that hangs while holding every turn cannot stall the
/// other tokens past their liveness promise. On a virtual clock (the paused-clock tests) it always does, without
/// waiting for a turn: tokio's paused time advances only while no blocking-pool task runs, and the file threads are
/// invisible to it; and the turns are the whole process's, so a real-clock job elsewhere holding them would make a
/// paused clock jump by the patience.
async fn file_job<T: Send + 'static>(
    clock: Clock,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FileJobFailed> {
    let threads = match clock {
        Clock::Virtual { .. } => None,
        Clock::System => {
            match tokio::time::timeout(IN_FLIGHT_PATIENCE, FILE_JOBS.acquire()).await {
                Ok(Ok(turn)) => file_threads().map(|queue| (queue, turn)),
                _ => None,
            }
        }
    };
    // The turn is held until the job has answered.
    let Some((queue, _turn)) = threads else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| FileJobFailed);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    queue.push(Box::new(move || {
        // A panic drops `tx` (the caller sees FileJobFailed) and leaves the thread running.
        if let Ok(out) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let _ = tx.send(out);
        }
    }));
    rx.await.map_err(|_| FileJobFailed)
}

/// Something that vends tokens: the real client, or a scripted one in tests.
pub(crate) trait Vend: Send + Sync + 'static {
    fn vend(&self, issued_at: SystemTime)
        -> impl Future<Output = Result<Token, FetchError>> + Send;
    /// Whether the credentials on disk differ from those last sent (a rotation happened).
    fn credentials_changed(&self) -> bool;
    /// The `exp` of a client assertion read from a file, which no refresh may be planned past.
    fn assertion_exp(&self) -> Option<SystemTime> {
        None
    }
    /// Whether the token endpoint comes from OIDC discovery (then its document is kept in the warm-start state).
    fn discovers(&self) -> bool {
        false
    }
    /// A discovery document saved by an earlier run.
    fn restore_discovery(&self, _cached: Cached) {}
    /// A discovery document fetched since the last call, to be saved.
    fn take_discovered(&self) -> Option<Cached> {
        None
    }
    /// The token endpoint discovery found, shown in `/status` instead of the issuer once known.
    fn discovered_endpoint(&self) -> Option<url::Url> {
        None
    }
}

/// The production vendor: the token client, which takes the credentials as they are at each request.
pub(crate) struct ClientVend {
    pub(crate) client: TokenClient,
}

impl ClientVend {
    pub(crate) fn new(client: TokenClient) -> Self {
        ClientVend { client }
    }
}

impl Vend for ClientVend {
    async fn vend(&self, issued_at: SystemTime) -> Result<Token, FetchError> {
        self.client.fetch(issued_at).await
    }

    fn credentials_changed(&self) -> bool {
        self.client.credentials_changed()
    }

    fn assertion_exp(&self) -> Option<SystemTime> {
        self.client.auth().assertion_exp()
    }

    fn discovers(&self) -> bool {
        self.client.discovers()
    }

    fn restore_discovery(&self, cached: Cached) {
        self.client.restore_discovery(cached)
    }

    fn take_discovered(&self) -> Option<Cached> {
        self.client.take_fetched()
    }

    fn discovered_endpoint(&self) -> Option<url::Url> {
        self.client.discovered_endpoint()
    }
}

/// How the daemon reaches one running refresher: stop it, or wake it to try rotated credentials. One small allocation
/// per token (a `watch` channel for the stop alone was ~340 bytes).
#[derive(Debug, Default)]
pub(crate) struct Remote {
    stopped: AtomicBool,
    stop: Notify,
    wake: Notify,
}

impl Remote {
    /// The refresher stops at its next wait (an in-flight request is dropped, a write in progress finishes).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// The credential files changed: a refresher that failed retries soon.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Completes once [`Self::stop`] was called (before or after this was first polled).
    async fn stopped(&self) {
        // `notify_one` leaves a permit when nobody waits, so a stop between the check and the wait is not missed.
        while !self.stopped.load(Ordering::SeqCst) {
            self.stop.notified().await;
        }
    }
}

/// What one step did, and how long until the next one.
#[derive(Debug)]
pub(crate) enum Outcome {
    Refreshed { next: Duration },
    Failed { error: FetchError, next: Duration },
}

impl Outcome {
    pub(crate) fn next(&self) -> Duration {
        match self {
            Outcome::Refreshed { next } | Outcome::Failed { next, .. } => *next,
        }
    }
}

/// The refresher of one token.
pub(crate) struct Refresher<V: Vend> {
    name: String,
    vend: V,
    sink: Arc<Sink>,
    policy: RefreshPolicy,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// How long past its promised time a step may take before liveness calls it stalled.
    grace: Duration,
    current: Option<Token>,
    failures: u32,
    logged_kind: Option<ErrorKind>,
    /// The default lifetime was assumed for the current token and that was logged.
    warned_default: bool,
    last_attempt: Option<Instant>,
    /// Jitter for the refresh window and backoff: not a secret, so a 32-byte generator rather than a 320-byte
    /// cryptographic one in each of a thousand refreshers.
    rng: SmallRng,
    /// Told once the warm-start attempt is over, so the admin server's first answer already reflects it.
    started: Option<tokio::sync::oneshot::Sender<()>>,
    /// `once`: no refresh follows a success and no retry follows a permanent error, so neither is announced.
    one_shot: bool,
    /// The first request goes out at once, even after adopting a still-valid token (see [`Refresher::at_once`]).
    at_once: bool,
    /// Tells the app after each publish (`notify:`); never waited for.
    notify: Option<crate::notify::Notifier>,
}

/// Marks the token's refresher dead if it unwinds, so `/livez` fails and the kubelet restarts us.
struct PanicGuard {
    state: Arc<State>,
    name: String,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.state.update(&self.name, |s| s.alive = false);
        }
    }
}

impl<V: Vend> Refresher<V> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        vend: V,
        sink: Arc<Sink>,
        policy: RefreshPolicy,
        state: Arc<State>,
        metrics: Arc<Metrics>,
        grace: Duration,
        seed: Option<u64>,
    ) -> Self {
        let clock = *state.clock();
        Refresher {
            name,
            vend,
            sink,
            policy,
            state,
            metrics,
            clock,
            grace,
            current: None,
            failures: 0,
            logged_kind: None,
            warned_default: false,
            last_attempt: None,
            rng: seed.map_or_else(SmallRng::from_os_rng, SmallRng::seed_from_u64),
            started: None,
            one_shot: false,
            at_once: false,
            notify: None,
        }
    }

    /// Tells the app through `notifier` after each successful publish.
    pub(crate) fn notifying(mut self, notifier: Option<crate::notify::Notifier>) -> Self {
        self.notify = notifier;
        self
    }

    /// Gives a notification still on its way its last chance (bounded), then stops the notifier.
    pub(crate) async fn finish_notify(&mut self) {
        if let Some(n) = self.notify.take() {
            n.finish(crate::notify::FINISH_GRACE).await;
        }
    }

    /// For `once`: logs say nothing of a next refresh or a retry that will never come.
    pub(crate) fn one_shot(mut self) -> Self {
        self.one_shot = true;
        self
    }

    /// Requests at once instead of at the adopted token's planned refresh: a restart for a change that may fix
    /// what the last attempt failed on (new TLS files) must not wait for a schedule that failure already missed.
    pub(crate) fn at_once(mut self) -> Self {
        self.at_once = true;
        self
    }

    /// `tx` is told when the warm-start attempt is over (adopted or not), before any request is made.
    pub(crate) fn on_started(mut self, tx: tokio::sync::oneshot::Sender<()>) -> Self {
        self.started = Some(tx);
        self
    }

    /// Adopts a still-valid token left by an earlier run; returns the delay to its planned refresh.
    pub(crate) async fn warm_start(&mut self) -> Option<Duration> {
        let now = self.clock.wall();
        // File work runs on the blocking pool: the runtime thread never waits on a disk.
        let sink = self.sink.clone();
        let discovers = self.vend.discovers();
        let (discovered, restored) = file_job(self.clock, move || {
            // Kept apart from the token: an expired token still leaves the endpoint known while the IdP is down.
            let discovered = discovers.then(|| sink.load_discovery(now)).flatten();
            let restored = sink
                .load_warm(now)
                .map(|token| sink.write(&token, true).map(|()| token));
            (discovered, restored)
        })
        .await
        .ok()?;
        if let Some(d) = discovered {
            self.vend.restore_discovery(d);
            self.show_endpoint();
        }
        let restored = restored?;
        let token = match restored {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(token = %self.name, error = %e, "could not restore an output from the saved token; requesting a new one");
                return None;
            }
        };
        let next = self.plan(&token, now);
        tracing::info!(
            token = %self.name,
            refresh_time = %rfc3339(token.refresh_time()),
            next_refresh_in = %humantime::format_duration(round_ms(next)),
            "adopted the still-valid token from the previous run; no request needed"
        );
        self.publish_token(&token);
        self.current = Some(token);
        Some(next)
    }

    /// `/status` names the discovered token endpoint once there is one (the issuer until then).
    fn show_endpoint(&self) {
        if let Some(url) = self.vend.discovered_endpoint() {
            self.state.update(&self.name, |s| s.url = url.to_string());
        }
    }

    /// Delay from `now` to this token's planned refresh, with a fresh draw from the window.
    fn plan(&mut self, token: &Token, now: SystemTime) -> Duration {
        let u = self.rng.random();
        let next = next_refresh(token.issued_at, token.usable_span(), now, &self.policy, u);
        schedule::clamp_to_assertion(next, now, self.vend.assertion_exp())
    }

    /// How long the current token stays `valid()`, if it is valid now.
    fn remaining(&self) -> Option<Duration> {
        remaining(self.current.as_ref()?.refresh_time(), self.clock.wall())
    }

    fn publish_token(&self, token: &Token) {
        let published = Published::of(token, &self.clock);
        self.state.update(&self.name, |s| {
            s.published = Some(published);
        });
    }

    /// The request alone; cancellable (dropping it aborts the request and changes nothing).
    pub(crate) async fn attempt(&mut self) -> (Result<Token, FetchError>, Duration) {
        let _turn = tokio::time::timeout(IN_FLIGHT_PATIENCE, IN_FLIGHT.acquire()).await;
        let started = self.clock.mono();
        self.last_attempt = Some(started);
        let result = self.vend.vend(self.clock.wall()).await;
        (result, self.clock.mono().saturating_duration_since(started))
    }

    /// Publishes an attempt's result: writes the files (never cancelled half-way), updates state and metrics.
    pub(crate) async fn publish(
        &mut self,
        result: Result<Token, FetchError>,
        took: Duration,
    ) -> Outcome {
        if let Some(d) = self.vend.take_discovered() {
            self.show_endpoint();
            // Saved even when the token request then failed: the document itself was good.
            let sink = self.sink.clone();
            match file_job(self.clock, move || sink.save_discovery(&d)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(token = %self.name, error = %e, "could not save the discovery document; a restart while the identity provider is down will wait for it")
                }
                Err(e) => {
                    tracing::warn!(token = %self.name, error = %e, "could not save the discovery document")
                }
            }
        }
        let result = match result {
            Ok(token) => {
                let sink = self.sink.clone();
                let t = token.clone();
                match file_job(self.clock, move || sink.write(&t, false)).await {
                    Ok(Ok(())) => Ok(token),
                    Ok(Err(e)) => {
                        self.metrics.write_error(&self.name);
                        Err(FetchError::new(ErrorKind::OutputWrite, e.to_string()))
                    }
                    Err(e) => {
                        self.metrics.write_error(&self.name);
                        Err(FetchError::new(
                            ErrorKind::OutputWrite,
                            format!("the writer failed: {e}"),
                        ))
                    }
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(token) => self.succeeded(token, took),
            Err(e) => self.failed(e, took),
        }
    }

    #[cfg(test)]
    /// One complete step: request, then publish.
    pub(crate) async fn refresh_once(&mut self) -> Outcome {
        let (result, took) = self.attempt().await;
        self.publish(result, took).await
    }

    fn succeeded(&mut self, token: Token, took: Duration) -> Outcome {
        let now = self.clock.wall();
        let next = self.plan(&token, now);
        if self.failures > 0 {
            tracing::info!(token = %self.name, failures = self.failures, "token endpoint recovered");
        }
        if self.one_shot {
            tracing::info!(
                token = %self.name,
                expires_in = %humantime::format_duration(round_ms(token.lifetime)),
                refresh_time = %rfc3339(token.refresh_time()),
                "token vended and written"
            );
        } else {
            tracing::info!(
                token = %self.name,
                expires_in = %humantime::format_duration(round_ms(token.lifetime)),
                refresh_time = %rfc3339(token.refresh_time()),
                next_refresh_in = %humantime::format_duration(round_ms(next)),
                "token refreshed and written"
            );
        }
        // Said once, not at every refresh; said again if the server starts and then stops sending a lifetime.
        let assumed = token.lifetime_source == crate::token::LifetimeSource::Default;
        if assumed && !self.warned_default {
            tracing::warn!(token = %self.name, "the response has no usable expires_in and the token is not a JWT with exp; assumed default_lifetime");
        }
        self.warned_default = assumed;
        self.metrics
            .refresh(&self.name, RefreshResult::success, took);
        self.metrics.success(&self.name, now);
        self.publish_token(&token);
        self.state.update(&self.name, |s| {
            s.consecutive_failures = 0;
            s.last_success = Some(now);
        });
        if let Some(n) = &mut self.notify {
            n.publish(token.refresh_time());
        }
        self.current = Some(token);
        self.failures = 0;
        self.logged_kind = None;
        Outcome::Refreshed { next }
    }

    fn failed(&mut self, error: FetchError, took: Duration) -> Outcome {
        self.failures += 1;
        let permanent = error.kind.is_permanent();
        self.metrics.refresh(
            &self.name,
            if permanent {
                RefreshResult::permanent_error
            } else {
                RefreshResult::transient_error
            },
            took,
        );
        self.metrics.refresh_error(&self.name, error.kind);
        let remaining = self.remaining();
        let failure = if permanent {
            // A rotated secret may already be on disk: use it at once instead of waiting.
            if self.vend.credentials_changed() {
                Failure::Transient { retry_after: None }
            } else {
                Failure::Permanent
            }
        } else {
            Failure::Transient {
                retry_after: error.retry_after,
            }
        };
        let next = retry_delay(
            &self.policy,
            self.failures,
            failure,
            remaining,
            self.rng.random(),
        );
        let still_valid = remaining.map(|d| humantime::format_duration(round_ms(d)).to_string());
        if self.logged_kind != Some(error.kind) {
            let retry_in = humantime::format_duration(round_ms(next)).to_string();
            if permanent && self.one_shot {
                tracing::error!(token = %self.name, kind = %error.kind, error = %error.message, "token request failed; it will not succeed until the credentials or config change");
            } else if permanent {
                tracing::error!(token = %self.name, kind = %error.kind, error = %error.message, retry_in, valid_for = still_valid.as_deref().unwrap_or("no valid token"), "token refresh failed; it will not succeed until the credentials or config change");
            } else {
                tracing::warn!(token = %self.name, kind = %error.kind, error = %error.message, retry_in, valid_for = still_valid.as_deref().unwrap_or("no valid token"), "token refresh failed; retrying");
            }
            self.logged_kind = Some(error.kind);
        } else {
            tracing::debug!(token = %self.name, kind = %error.kind, failures = self.failures, "token refresh failed again");
        }
        let last = LastError::from(&error);
        let failures = self.failures;
        self.state.update(&self.name, |s| {
            s.consecutive_failures = failures;
            s.last_error = Some(last);
        });
        Outcome::Failed { error, next }
    }

    /// Tells the state when the next step will happen, which is also the liveness promise.
    fn announce(&self, at: Instant) {
        let wall = self.clock.wall() + at.saturating_duration_since(self.clock.mono());
        let expected_by = at + self.grace;
        self.state.update(&self.name, |s| {
            s.next_refresh = Some(wall);
            s.expected_by = expected_by;
            s.alive = true;
        });
    }

    /// Runs until `remote` is stopped; it is woken when credential files change.
    ///
    /// The task's future is allocated once per token and lives as long as the token, mostly asleep: every step
    /// that is not the wait itself (warm start, request, publish, the last notification) is boxed, so it takes
    /// memory only while it runs (~5 KiB a token otherwise; BENCHMARKS.md, 1,000 tokens).
    pub(crate) async fn run(mut self, remote: Arc<Remote>) {
        let _guard = PanicGuard {
            state: self.state.clone(),
            name: self.name.clone(),
        };
        let adopted = Box::pin(self.warm_start()).await.unwrap_or_default();
        let first = if self.at_once {
            Duration::ZERO
        } else {
            adopted
        };
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
        let mut at = self.clock.mono() + first;
        loop {
            self.announce(at);
            tokio::select! {
                biased;
                _ = remote.stopped() => break,
                _ = remote.wake.notified() => {
                    if self.failures > 0 {
                        // New credentials may fix what failed: try soon, but never faster than min_backoff.
                        let soonest = self.last_attempt.map_or(self.clock.mono(), |t| t + self.policy.min_backoff);
                        at = at.min(soonest.max(self.clock.mono()));
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(at) => {}
            }
            let (result, took) = tokio::select! {
                biased;
                _ = remote.stopped() => break,
                r = Box::pin(self.attempt()) => r,
            };
            let outcome = Box::pin(self.publish(result, took)).await;
            at = self.clock.mono() + outcome.next();
        }
        Box::pin(self.finish_notify()).await;
        tracing::debug!(token = %self.name, "refresher stopped");
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A stable fingerprint of what a token was requested with, so a warm start never adopts a token for other settings.
pub(crate) fn fingerprint(cfg: &crate::config::TokenConfig) -> String {
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    feed(cfg.token_url.as_str());
    feed(cfg.auth.name());
    // Fed only with discovery, so that other configs keep the fingerprint they had.
    if let Some(d) = &cfg.discovery {
        feed(d.issuer.as_str());
        feed(if d.auto { "auto" } else { "" });
    }
    feed(cfg.scope.as_deref().unwrap_or(""));
    feed(cfg.audience.as_deref().unwrap_or(""));
    for r in &cfg.resource {
        feed(r);
    }
    for (k, v) in &cfg.params {
        feed(k);
        feed(v);
    }
    // Fed only for token exchange, so that client-credentials configs keep the fingerprint they had.
    if let crate::token::Grant::TokenExchange {
        subject_token_file,
        subject_token_type,
        requested_token_type,
    } = &cfg.grant
    {
        feed(cfg.grant.grant_type());
        feed(&subject_token_file.to_string_lossy());
        feed(subject_token_type);
        feed(requested_token_type.as_deref().unwrap_or(""));
    }
    match cfg.auth.client_id().map(|src| (src, src.load())) {
        Some((_, Ok(id))) => feed(id.expose_secret()),
        Some((src, Err(_))) => feed(&format!("{src:?}")),
        None => feed(""),
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
