//! Telling the app that its token changed: after each publish, a POST to a loopback URL or a signal to the pid in a pid file, delivered by a task of its own, retried until the next publish supersedes it.
//!
//! The refresher hands a [`Notifier`] the new token's `refresh_time` (never the token) and goes on; a dead, hung or
//! missing app can neither delay a refresh nor change readiness. What peers' users ran into, and what happens here:
//! - a pid file read once goes stale when the app restarts: it is read right before every signal, strictly (a
//!   decimal pid > 1, not ours), and a process that started after the file was last written is not the one that
//!   wrote it (its pid was reused): it is not signalled;
//! - a missing or stale pid file, or an app that does not answer, warned about at every refresh: said once until
//!   the problem changes or the app is reached again;
//! - a hook that blocks renewal: it runs beside the refresher, each POST bounded by its timeout;
//! - a hook skipped at shutdown or in one-shot runs: `once` notifies too (one attempt), and a notification still
//!   undelivered when the refresher stops gets its last chance within [`FINISH_GRACE`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::config::notify::SignalName;
use crate::config::{NotifyConfig, RefreshPolicy, TokenConfig};
use crate::fsread::{self, ReadError};
use crate::metrics::{Metrics, NotifyResult};
use crate::schedule::backoff;
use crate::state::{NotifyStatus, State};
use crate::token::error::{chain, sanitize, SERVER_TEXT_MAX};
use crate::token::http::USER_AGENT_VALUE;
use crate::token::token::rfc3339;

/// How long a stopping refresher waits for a notification still on its way (within the daemon's shutdown grace).
pub(crate) const FINISH_GRACE: Duration = Duration::from_secs(1);

/// The most bytes a pid file may have: a pid and a newline need 11.
const PID_FILE_LIMIT: u64 = 32;

/// A process whose start lies more than this after its pid file's last write did not write that file.
const STALE_SLACK: Duration = Duration::from_secs(1);

/// What the app is told: which token (by name, in the hook) and until when it is valid. Never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notice {
    /// 1 for the first publish of this notifier, then one more for each.
    pub(crate) seq: u64,
    pub(crate) refresh_time: SystemTime,
}

/// Why an attempt did not reach the app. `class` decides whether it is worth a new warning; `detail` is bounded and
/// names the URL or pid file, never a token, a secret or what a file or the app sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Miss {
    pub(crate) class: &'static str,
    pub(crate) detail: String,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    Delivered,
    /// There is no process to tell (the pid file is missing or stale): not retried; an app that starts reads the
    /// token file anyway.
    Skipped(Miss),
    /// The attempt failed: retried with backoff when `retry` (http), else left to the next publish.
    Failed {
        miss: Miss,
        retry: bool,
    },
}

/// One way of telling the app: the POST, the signal, or a scripted one in tests.
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver(&self, notice: Notice) -> impl Future<Output = Attempt> + Send;
}

/// Whether a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The daemon: with the refresh policy's backoff, until delivered or a newer token supersedes it.
    UntilSuperseded,
    /// `once`: one attempt; the process is about to exit.
    Never,
}

/// What a notifier is for: whose hook, how it delivers and how it retries.
pub(crate) struct Hook<D> {
    pub(crate) token: String,
    /// `http` or `signal`, as `/status` and the logs name it.
    pub(crate) kind: &'static str,
    /// The URL, or the signal and the pid file: what a problem is about.
    pub(crate) target: String,
    deliver: D,
    pub(crate) policy: RefreshPolicy,
    pub(crate) retry: Retry,
}

/// A token's notifier: [`publish`](Notifier::publish) never waits; the task behind it delivers.
#[derive(Debug)]
pub(crate) struct Notifier {
    tx: watch::Sender<Option<Notice>>,
    seq: u64,
    task: JoinHandle<()>,
    token: String,
}

impl Notifier {
    /// Starts the delivery task of `hook`. `seed` fixes the backoff jitter (tests).
    pub(crate) fn start<D: Deliver>(
        hook: Hook<D>,
        state: Arc<State>,
        metrics: Arc<Metrics>,
        seed: Option<u64>,
    ) -> Notifier {
        let (tx, rx) = watch::channel(None);
        let token = hook.token.clone();
        let worker = Worker {
            hook,
            state,
            metrics,
            rng: seed.map_or_else(StdRng::from_os_rng, StdRng::seed_from_u64),
            warned: None,
            taken: 0,
        };
        Notifier {
            tx,
            seq: 0,
            task: tokio::spawn(worker.run(rx)),
            token,
        }
    }

    /// A new token was published: the app is to be told, replacing any notification not yet delivered.
    pub(crate) fn publish(&mut self, refresh_time: SystemTime) {
        self.seq += 1;
        self.tx.send_replace(Some(Notice {
            seq: self.seq,
            refresh_time,
        }));
    }

    /// Stops the task: a notification not yet delivered gets one last attempt (an attempt in flight may finish),
    /// for at most `grace`.
    pub(crate) async fn finish(self, grace: Duration) {
        let Notifier {
            tx,
            mut task,
            token,
            ..
        } = self;
        drop(tx);
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(token = %token, grace = %humantime::format_duration(grace), "stopped before the app was told of the last token");
        }
    }
}

struct Worker<D> {
    hook: Hook<D>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    rng: StdRng,
    /// The class of problem last warned about; a warning is repeated only when the class changes.
    warned: Option<&'static str>,
    /// The `seq` of the last notice taken from the channel.
    taken: u64,
}

/// What ended one attempt's wait.
enum Ended {
    Attempt(Attempt),
    Superseded,
}

impl<D: Deliver> Worker<D> {
    async fn run(mut self, mut rx: watch::Receiver<Option<Notice>>) {
        let mut pending: Option<Notice> = None;
        let mut failures = 0u32;
        // The refresher has stopped: deliver what is pending once more, then end.
        let mut closed = false;
        loop {
            let Some(notice) = pending else {
                if closed || rx.changed().await.is_err() {
                    return;
                }
                pending = self.take(&rx, None);
                failures = 0;
                continue;
            };
            let ended = {
                let attempt = self.hook.deliver.deliver(notice);
                tokio::pin!(attempt);
                loop {
                    if closed {
                        break Ended::Attempt((&mut attempt).await);
                    }
                    tokio::select! {
                        biased;
                        a = &mut attempt => break Ended::Attempt(a),
                        r = rx.changed() => match r {
                            Ok(()) => break Ended::Superseded,
                            Err(_) => closed = true,
                        },
                    }
                }
            };
            let result = match ended {
                Ended::Superseded => {
                    // The attempt in flight is dropped (its connection closed): the newer token is what counts. An
                    // app that never answers is worth its warning too, though no attempt of it ever ends; one that
                    // already failed in a way warned about was merely caught mid-retry (`show` keeps that warning).
                    let miss = Miss {
                        class: "unanswered",
                        detail: format!(
                            "{}: no answer before a newer token came",
                            self.hook.target
                        ),
                    };
                    self.show(NotifyResult::superseded, Some(miss), false);
                    pending = self.take(&rx, Some(notice));
                    failures = 0;
                    continue;
                }
                Ended::Attempt(a) => a,
            };
            let again = self.record(result);
            if !again || closed || self.hook.retry == Retry::Never {
                pending = None;
                continue;
            }
            failures += 1;
            let delay = backoff(&self.hook.policy, failures, self.rng.random());
            tokio::select! {
                biased;
                r = rx.changed() => match r {
                    Ok(()) => {
                        pending = self.take(&rx, Some(notice));
                        failures = 0;
                    }
                    // Stopping while backing off: the last attempt goes out now.
                    Err(_) => closed = true,
                },
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The newest notice; every one published since the last taken, and `undelivered`, counts as superseded.
    fn take(
        &mut self,
        rx: &watch::Receiver<Option<Notice>>,
        undelivered: Option<Notice>,
    ) -> Option<Notice> {
        let newest = *rx.borrow();
        let Some(n) = newest else {
            return undelivered;
        };
        let skipped = n.seq.saturating_sub(self.taken + 1) + u64::from(undelivered.is_some());
        for _ in 0..skipped {
            self.metrics
                .notify(&self.hook.token, NotifyResult::superseded);
        }
        if skipped > 0 {
            tracing::debug!(token = %self.hook.token, superseded = skipped, "a newer token replaced a notification not yet delivered");
        }
        self.taken = n.seq;
        Some(n)
    }

    /// Counts, shows and logs one attempt's result; true when it is worth trying again.
    fn record(&mut self, a: Attempt) -> bool {
        let (result, miss, again) = match a {
            Attempt::Delivered => (NotifyResult::success, None, false),
            Attempt::Skipped(m) => (NotifyResult::skipped, Some(m), false),
            Attempt::Failed { miss, retry } => (NotifyResult::error, Some(miss), retry),
        };
        self.metrics.notify(&self.hook.token, result);
        self.show(result, miss, again);
        again
    }

    /// Shows a result in `/status` and logs it: a problem once per class, the first success after it once. An attempt
    /// cut short by a newer token after a problem was warned about keeps that problem (the attempt was one more retry,
    /// caught in flight, not news). True when it logged a warning.
    fn show(&mut self, result: NotifyResult, miss: Option<Miss>, again: bool) -> bool {
        let now = self.state.clock().wall();
        let cut_short = result == NotifyResult::superseded && self.warned.is_some();
        let problem = miss.as_ref().map(|m| m.detail.clone());
        self.state.update(&self.hook.token, |s| {
            if let Some(n) = &mut s.notify {
                n.last_result = Some(result.as_str());
                n.last_attempt = Some(now);
                if result == NotifyResult::success {
                    n.last_success = Some(now);
                }
                if !cut_short {
                    n.problem = problem;
                }
            }
        });
        let Some(m) = miss else {
            if self.warned.take().is_some() {
                tracing::info!(token = %self.hook.token, kind = self.hook.kind, "the app was told that its token changed; it is reachable again");
            } else {
                tracing::debug!(token = %self.hook.token, kind = self.hook.kind, "the app was told that its token changed");
            }
            return false;
        };
        if cut_short || self.warned == Some(m.class) {
            tracing::debug!(token = %self.hook.token, kind = self.hook.kind, problem = %m.detail, "could not tell the app again");
            return false;
        }
        self.warned = Some(m.class);
        let then = match (result, again && self.hook.retry == Retry::UntilSuperseded) {
            (NotifyResult::skipped, _) => {
                "nothing to signal; an app that starts reads the token file anyway"
            }
            (NotifyResult::superseded, _) => "it is told of the newer token instead",
            (_, true) => {
                "retrying with backoff until it is told or a newer token replaces this one"
            }
            (_, false) => "not retried",
        };
        tracing::warn!(token = %self.hook.token, kind = self.hook.kind, problem = %m.detail, "could not tell the app that its token changed: {then}; said once until this changes");
        true
    }
}

/// The notifier of a token with a `notify` block, started; `None` without one, and then the token shows no notify
/// status and exports no notify series (a restart may have removed the block).
pub(crate) fn attach(
    cfg: &TokenConfig,
    policy: RefreshPolicy,
    retry: Retry,
    state: &Arc<State>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Notifier>, reqwest::Error> {
    let Some(config) = &cfg.notify else {
        state.update(&cfg.name, |s| s.notify = None);
        metrics.forget_notify(&cfg.name);
        return Ok(None);
    };
    let kind = config.kind();
    let target = match config {
        NotifyConfig::Http { url, .. } => url.to_string(),
        NotifyConfig::Signal { pid_file, signal } => {
            format!("{} to the pid in {}", signal.name, pid_file.display())
        }
    };
    metrics.register_notify(&cfg.name);
    // A restart with the same hook keeps what /status said of the last attempt.
    state.update(&cfg.name, |s| {
        if !s
            .notify
            .as_ref()
            .is_some_and(|n| n.kind == kind && n.target == target)
        {
            s.notify = Some(NotifyStatus::new(kind, target.clone()));
        }
    });
    let deliver = match config {
        NotifyConfig::Http { url, timeout } => {
            Delivery::Http(HttpHook::new(&cfg.name, url, *timeout)?)
        }
        NotifyConfig::Signal { pid_file, signal } => {
            protect_process();
            Delivery::Signal(SignalHook {
                pid_file: pid_file.clone(),
                signal: *signal,
            })
        }
    };
    let hook = Hook {
        token: cfg.name.clone(),
        kind,
        target,
        deliver,
        policy,
        retry,
    };
    Ok(Some(Notifier::start(
        hook,
        state.clone(),
        metrics.clone(),
        None,
    )))
}

/// The configured way of telling the app.
enum Delivery {
    Http(HttpHook),
    Signal(SignalHook),
}

impl Deliver for Delivery {
    async fn deliver(&self, notice: Notice) -> Attempt {
        match self {
            Delivery::Http(h) => h.deliver(notice).await,
            Delivery::Signal(s) => s.deliver(notice).await,
        }
    }
}

/// A signal hook needs a shared process namespace, where the app (running as our uid, the only way an unprivileged
/// sidecar may signal it) could otherwise read our memory, environment and files through `/proc/<pid>/`. A
/// non-dumpable process is out of reach of every process without CAP_SYS_PTRACE; sending signals is unaffected.
fn protect_process() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes a flag of this process and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make the process non-dumpable; with a shared process namespace an app of the same uid can read its memory");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// http: a POST to the app on loopback.
// ---------------------------------------------------------------------------------------------------------------

/// `POST <url>` with `{"token": <name>, "refresh_time": <RFC 3339>}`; any 2xx answer is delivery.
struct HttpHook {
    client: reqwest::Client,
    url: Url,
    token: String,
    timeout: Duration,
}

impl HttpHook {
    /// A client for the app: no proxy (the environment's would carry loopback traffic out of the pod), no
    /// redirects (one could lead off loopback), no TLS roots, no kept connections; `localhost` is 127.0.0.1
    /// without a name lookup, so the name cannot be pointed elsewhere.
    pub(crate) fn new(
        token: &str,
        url: &Url,
        timeout: Duration,
    ) -> Result<HttpHook, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_native_certs(false)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(USER_AGENT_VALUE)
            .pool_max_idle_per_host(0);
        if let Some(url::Host::Domain(d)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            b = b.resolve(d, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        Ok(HttpHook {
            client: b.build()?,
            url: url.clone(),
            token: token.to_string(),
            timeout,
        })
    }

    /// The request body: the token's name and `refresh_time`, nothing else.
    pub(crate) fn body(token: &str, notice: Notice) -> String {
        serde_json::json!({
            "token": token,
            "refresh_time": rfc3339(notice.refresh_time),
        })
        .to_string()
    }
}

impl Deliver for HttpHook {
    async fn deliver(&self, notice: Notice) -> Attempt {
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Self::body(&self.token, notice))
            .send()
            .await;
        let miss = |class, detail: String| Attempt::Failed {
            miss: Miss { class, detail },
            retry: true,
        };
        match sent {
            // The answer's body is never read: nothing in it matters, and the app need not be trusted with a buffer.
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) => miss(
                "status",
                format!("POST {} answered HTTP {}", self.url, r.status().as_u16()),
            ),
            Err(e) if e.is_timeout() => miss(
                "timeout",
                format!(
                    "POST {}: no answer within {}",
                    self.url,
                    humantime::format_duration(self.timeout)
                ),
            ),
            Err(e) if e.is_connect() => miss(
                "connect",
                format!(
                    "POST {}: cannot connect: {}",
                    self.url,
                    sanitize(&chain(&e), SERVER_TEXT_MAX)
                ),
            ),
            Err(e) => miss(
                "request",
                format!(
                    "POST {} failed: {}",
                    self.url,
                    sanitize(&chain(&e), SERVER_TEXT_MAX)
                ),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// signal: to the pid in a pid file, read right before each send.
// ---------------------------------------------------------------------------------------------------------------

/// Sends `signal` to the process named by `pid_file`, read fresh for every notice.
struct SignalHook {
    pub(crate) pid_file: PathBuf,
    pub(crate) signal: SignalName,
}

impl Deliver for SignalHook {
    async fn deliver(&self, _notice: Notice) -> Attempt {
        let (file, signal) = (self.pid_file.clone(), self.signal);
        // Reading the pid file and /proc is file work: off the runtime thread.
        match tokio::task::spawn_blocking(move || signal_pid_file(&file, signal)).await {
            Ok(a) => a,
            Err(e) => Attempt::Failed {
                miss: Miss {
                    class: "task",
                    detail: format!("the signalling task failed: {e}"),
                },
                retry: false,
            },
        }
    }
}

/// A pid file as read: the pid and when the file was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidFile {
    pub(crate) pid: i32,
    pub(crate) written: SystemTime,
}

/// Why a pid file names no process to signal. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PidFileError {
    #[error("pid file {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error(transparent)]
    Unreadable(ReadError),
    #[error("pid file {}: {why}", path.display())]
    Invalid { path: PathBuf, why: BadPid },
}

/// What is wrong with a pid file's content, in words that never repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadPid {
    #[error("is empty (the app writes its process id there once it runs)")]
    Empty,
    #[error("does not hold a process id: want decimal digits and at most one newline")]
    NotDigits,
    #[error("holds a number with a leading zero, not a process id")]
    LeadingZero,
    #[error("holds a number too large for a process id")]
    TooLarge,
    #[error("names pid {0}, which is never signalled (1 is the pod's first process, the pause container when the process namespace is shared)")]
    NeverSignalled(i32),
}

impl PidFileError {
    fn class(&self) -> &'static str {
        match self {
            PidFileError::Missing(_) => "missing",
            PidFileError::Unreadable(_) => "unreadable",
            PidFileError::Invalid { .. } => "invalid",
        }
    }
}

/// Reads a pid file with the project's bounded reader: a regular file (a FIFO or device is refused without
/// blocking, a symlink is refused: a pid file is written, not linked) of at most [`PID_FILE_LIMIT`] bytes.
/// Blocking: call it off the runtime thread.
pub(crate) fn read_pid_file(path: &Path) -> Result<PidFile, PidFileError> {
    let file = fsread::open_regular(path, false).map_err(|e| match &e {
        ReadError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PidFileError::Missing(path.to_path_buf())
        }
        _ => PidFileError::Unreadable(e),
    })?;
    let written = file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|source| {
            PidFileError::Unreadable(ReadError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
    let bytes =
        fsread::read_counted(file, path, PID_FILE_LIMIT).map_err(PidFileError::Unreadable)?;
    let pid = parse_pid(&bytes).map_err(|why| PidFileError::Invalid {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(PidFile { pid, written })
}

/// A pid as a pid file holds it: decimal digits without sign or leading zero, then at most one newline; greater
/// than 1 (0 would signal our process group, -1 every process we may signal, and 1 is the pod's first process).
/// The error never repeats the content.
fn parse_pid(bytes: &[u8]) -> Result<i32, BadPid> {
    let digits = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if digits.is_empty() {
        return Err(BadPid::Empty);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(BadPid::NotDigits);
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(BadPid::LeadingZero);
    }
    let pid: i32 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BadPid::TooLarge)?;
    if pid <= 1 {
        return Err(BadPid::NeverSignalled(pid));
    }
    Ok(pid)
}

/// Whether a pid file `file_age` old can have been written by (or for) a process `process_age` old: a pid is known
/// only once its process exists, so a file older than the process (beyond [`STALE_SLACK`]) names an earlier process
/// whose pid was reused.
fn file_predates_process(file_age: Duration, process_age: Duration) -> bool {
    file_age > process_age + STALE_SLACK
}

/// The start of process `pid` in clock ticks after boot: field 22 of `/proc/<pid>/stat`, counted after the last `)`
/// (the command name in parentheses may hold spaces and parentheses).
fn start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")": field 3 (state) is the first; field 22 is the twentieth.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// How long process `pid` has been running; `None` when `/proc` does not say (it is gone, or `/proc` is hidden).
fn process_age(pid: i32) -> Option<Duration> {
    let stat = fsread::read_bounded(Path::new(&format!("/proc/{pid}/stat")), 4096, true).ok()?;
    let ticks = start_ticks(&stat)?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    let started =
        Duration::from_secs(ticks / hz) + Duration::from_nanos(ticks % hz * 1_000_000_000 / hz);
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let now = Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    );
    Some(now.saturating_sub(started))
}

/// One signal to the process the pid file names now. Blocking (file and `/proc` reads).
fn signal_pid_file(pid_file: &Path, signal: SignalName) -> Attempt {
    let skipped = |class, detail| Attempt::Skipped(Miss { class, detail });
    let failed = |class, detail| Attempt::Failed {
        miss: Miss { class, detail },
        retry: false,
    };
    let PidFile { pid, written } = match read_pid_file(pid_file) {
        Ok(p) => p,
        Err(e @ PidFileError::Missing(_)) => return skipped(e.class(), e.to_string()),
        Err(e) => return failed(e.class(), chain(&e)),
    };
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return failed(
            "self",
            format!(
                "pid file {} names token-vendor itself (pid {pid})",
                pid_file.display()
            ),
        );
    }
    let file_age = SystemTime::now()
        .duration_since(written)
        .unwrap_or_default();
    if process_age(pid).is_some_and(|age| file_predates_process(file_age, age)) {
        return skipped(
            "stale",
            format!(
                "pid file {} is stale: pid {pid} belongs to a process that started after the file was written",
                pid_file.display()
            ),
        );
    }
    // SAFETY: kill(2) with a pid > 1 that is not ours and a signal from the allowed list; it touches no memory.
    if unsafe { libc::kill(pid, signal.number) } == 0 {
        return Attempt::Delivered;
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => skipped(
            "stale",
            format!("pid file {} is stale: no process {pid}", pid_file.display()),
        ),
        Some(libc::EPERM) => failed(
            "permission",
            format!(
                "not permitted to send {} to pid {pid} (from {}): the app must run as token-vendor's uid ({}), the only processes a sidecar without capabilities may signal",
                signal.name,
                pid_file.display(),
                // SAFETY: geteuid cannot fail.
                unsafe { libc::geteuid() }
            ),
        ),
        _ => failed(
            "signal",
            format!("cannot send {} to pid {pid}: {e}", signal.name),
        ),
    }
}

#[cfg(test)]
mod tests;
