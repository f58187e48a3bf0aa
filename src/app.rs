//! The three ways to run the pipeline: `run` (the daemon with reload and shutdown), `once` (vend, write, exit), and `check` (validate only).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, OnExit, RefreshPolicy, TokenConfig};
use crate::metrics::{Metrics, ReloadResult};
use crate::notify::{Notifier, Retry};
use crate::refresh::{fingerprint, ClientVend, Outcome, Refresher, Remote, Sink};
use crate::state::State;
use crate::token::error::{chain, ErrorKind};
use crate::token::http::{HttpClientError, HttpClients, HttpConfig, Rotation};
use crate::token::{RequestSpec, TokenClient};
use crate::watch::{watched_dirs, DirWatch};

/// How long shutdown waits for in-flight writes before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Events the daemon reacts to; `main` turns signals into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    Reload,
}

/// What [`Error::NotSent`] adds to its problems.
pub const NOT_SENT: &str =
    "no request was sent and nothing was written; `token-vendor check` reports the same problems";

/// Why a command could not do its work. `main` prints it with its causes and picks the exit code from it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A token's HTTP client cannot be built (an unreadable CA file, say).
    #[error("token {token}")]
    Client {
        token: String,
        #[source]
        source: HttpClientError,
    },
    /// The daemon could not start a token; a runtime failure, as it has always been for `run`.
    #[error(transparent)]
    Start(Box<Error>),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("a token task failed")]
    Task(#[source] tokio::task::JoinError),
    /// `once` could not vend these tokens.
    #[error("{} token(s) FAILED", .0.len())]
    TokensFailed(Vec<OnceFailure>),
    /// `once` found what `check` finds (a credential file missing, an output directory not writable): it sent no
    /// request and wrote nothing.
    #[error("{0}\n{NOT_SENT}")]
    NotSent(ConfigError),
    #[error("cannot start the demo endpoint")]
    DemoEndpoint(#[source] std::io::Error),
    /// The demo's admin port is taken, most likely by a demo already running; checked before anything is written.
    #[error("port {port} is in use (is another demo running?); pass --listen 127.0.0.1:0 or another port")]
    DemoPortInUse { port: u16 },
    #[error("another demo is running with --dir {}; stop it first, or pass another --dir", dir.display())]
    DemoDirBusy { dir: PathBuf },
    #[error("cannot write {}", path.display())]
    DemoConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// 0 ok, 1 runtime failure, 2 usage or config error (the codes of `--help`). A problem with the files and
    /// variables the config names is a config error, as in `check`, also when `once` meets it only at request time.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Client { .. } | Error::Task(_) | Error::NotSent(_) => 2,
            Error::TokensFailed(f) if f.iter().any(|f| f.unsent) => 2,
            Error::Start(_)
            | Error::Listen { .. }
            | Error::Signals(_)
            | Error::Runtime(_)
            | Error::TokensFailed(_)
            | Error::DemoEndpoint(_)
            | Error::DemoPortInUse { .. }
            | Error::DemoDirBusy { .. }
            | Error::DemoConfig { .. } => 1,
        }
    }
}

/// What a token is requested with, from its config.
pub(crate) fn request_spec(cfg: &TokenConfig) -> RequestSpec {
    let mut fields = Vec::new();
    if let Some(s) = &cfg.scope {
        fields.push(("scope".to_string(), s.clone()));
    }
    if let Some(a) = &cfg.audience {
        fields.push(("audience".to_string(), a.clone()));
    }
    for r in &cfg.resource {
        fields.push(("resource".to_string(), r.clone()));
    }
    for (k, v) in &cfg.params {
        fields.push((k.clone(), v.clone()));
    }
    RequestSpec {
        url: cfg.token_url.clone(),
        auth: cfg.auth.clone(),
        grant: cfg.grant.clone(),
        fields,
        default_lifetime: cfg.default_lifetime,
    }
}

/// The token client of one configured token, on a shared HTTP client.
pub(crate) fn token_client(cfg: &TokenConfig, clients: &HttpClients) -> Result<TokenClient, Error> {
    let http = clients
        .get(&cfg.http, &cfg.token_url)
        .map_err(|source| Error::Client {
            token: cfg.name.clone(),
            source,
        })?;
    Ok(TokenClient::new(request_spec(cfg), http).discovering(cfg.discovery.clone()))
}

/// Builds every token's HTTP client (reading CA and certificate files); blocking. Errors name the token.
fn build_clients_blocking(tokens: &[TokenConfig]) -> Result<HttpClients, Box<Error>> {
    let clients = HttpClients::default();
    for t in tokens {
        token_client(t, &clients)?;
    }
    Ok(clients)
}

/// [`build_clients_blocking`] on the blocking pool; hands the tokens back.
async fn build_clients(tokens: Vec<TokenConfig>) -> Result<(HttpClients, Vec<TokenConfig>), Error> {
    match tokio::task::spawn_blocking(move || build_clients_blocking(&tokens).map(|c| (c, tokens)))
        .await
    {
        Ok(r) => r.map_err(|e| *e),
        Err(e) => Err(Error::Task(e)),
    }
}

/// The started notifier of a token with a `notify` hook (`None` without one).
fn notifier(
    cfg: &TokenConfig,
    policy: RefreshPolicy,
    retry: Retry,
    state: &Arc<State>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Notifier>, Error> {
    crate::notify::attach(cfg, policy, retry, state, metrics).map_err(|e| Error::Client {
        token: cfg.name.clone(),
        source: HttpClientError::Build(e),
    })
}

/// Everything needed to start one token's refresher.
fn build_refresher(
    cfg: &TokenConfig,
    clients: &HttpClients,
    policy: RefreshPolicy,
    state: &Arc<State>,
    metrics: &Arc<Metrics>,
    state_dir: Option<&Path>,
) -> Result<(Refresher<ClientVend>, Arc<Sink>), Error> {
    let vend = ClientVend::new(token_client(cfg, clients)?);
    let sink = Arc::new(Sink::new(
        &cfg.name,
        cfg.outputs.clone(),
        fingerprint(cfg),
        state_dir,
    ));
    state.register(&cfg.name, cfg.token_url.to_string());
    metrics.register_token(&cfg.name);
    // A step may take the whole request timeout plus a margin for writes before it counts as stalled.
    let grace = cfg.http.timeout + Duration::from_secs(30);
    let r = Refresher::new(
        cfg.name.clone(),
        vend,
        sink.clone(),
        policy,
        state.clone(),
        metrics.clone(),
        grace,
        None,
    );
    Ok((r, sink))
}

/// The fingerprint of a token's credentials as they are now, `None` when they cannot be read.
fn credentials_now(cfg: &TokenConfig) -> Option<u64> {
    crate::token::client::credentials_fingerprint(&cfg.auth, &cfg.grant).ok()
}

struct Running {
    /// The token's config, held here only (the daemon's [`Config`] keeps the rest): one copy per token.
    cfg: Box<TokenConfig>,
    /// The credentials' fingerprint when last looked at: the refresher is nudged only when it changes.
    credentials: Option<u64>,
    /// The fingerprint of the CA / client certificate / key its HTTP client was built from: when the files say
    /// otherwise, the client is rebuilt and the refresher restarted.
    tls: Option<[u8; 32]>,
    /// The last problem reading its TLS files, said once.
    tls_problem: Option<String>,
    policy: RefreshPolicy,
    remote: Arc<Remote>,
    handle: JoinHandle<()>,
    sink: Arc<Sink>,
}

/// A SHA-256 of a config file's bytes: a reload of the same bytes is a no-op, without keeping a second copy of a
/// config that is ~250 KiB at 1,000 tokens.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    d
}

/// The daemon: its tokens' refreshers, the admin server, and reloads.
pub(crate) struct Daemon {
    config_path: PathBuf,
    /// The config in effect, without its tokens once they run: each token's config is in its [`Running`].
    config: Config,
    applied: Option<Digest>,
    rejected: Option<Digest>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    running: BTreeMap<String, Running>,
    clients: HttpClients,
    /// At start-up only: refreshers not yet through their warm-start attempt (`None` once the admin server runs).
    starting: Option<Vec<tokio::sync::oneshot::Receiver<()>>>,
}

/// Binds the admin listener; `[::]` falls back to `0.0.0.0` where IPv6 is off.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::info!(error = %e, "IPv6 is unavailable; listening on IPv4 only");
            TcpListener::bind(v4).await
        }
        Err(e) => Err(e),
    }
}

impl Daemon {
    /// `applied_bytes`: the config file's bytes `config` was parsed from, if known (a reload of the same bytes is a no-op).
    pub(crate) fn new(
        config_path: PathBuf,
        config: Config,
        clock: Clock,
        applied_bytes: Option<Vec<u8>>,
    ) -> Daemon {
        Daemon {
            config_path,
            config,
            applied: applied_bytes.as_deref().map(digest),
            rejected: None,
            state: State::new(clock),
            metrics: Arc::new(Metrics::new()),
            running: BTreeMap::new(),
            clients: HttpClients::default(),
            starting: Some(Vec::new()),
        }
    }

    pub(crate) fn admin(&self) -> Admin {
        Admin {
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn start(&mut self, cfg: Box<TokenConfig>) -> Result<(), Error> {
        self.start_as(cfg, false)
    }

    /// `at_once`: the first request goes out at once even if a still-valid token is adopted.
    fn start_as(&mut self, cfg: Box<TokenConfig>, at_once: bool) -> Result<(), Error> {
        let policy = self.config.refresh;
        let (refresher, sink) = build_refresher(
            &cfg,
            &self.clients,
            policy,
            &self.state,
            &self.metrics,
            self.config.state_dir.as_deref(),
        )?;
        let remote = Arc::new(Remote::default());
        let refresher = match &mut self.starting {
            Some(starting) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                starting.push(rx);
                refresher.on_started(tx)
            }
            None => refresher,
        };
        let refresher = if at_once {
            refresher.at_once()
        } else {
            refresher
        };
        let refresher = refresher.notifying(notifier(
            &cfg,
            policy,
            Retry::UntilSuperseded,
            &self.state,
            &self.metrics,
        )?);
        let handle = tokio::spawn(refresher.run(remote.clone()));
        let credentials = credentials_now(&cfg);
        let tls = self.clients.tls_fingerprint(&cfg.http, &cfg.token_url);
        self.running.insert(
            cfg.name.clone(),
            Running {
                cfg,
                credentials,
                tls,
                tls_problem: None,
                policy,
                remote,
                handle,
                sink,
            },
        );
        Ok(())
    }

    async fn stop_token(&mut self, name: &str) -> Option<Running> {
        let r = self.running.remove(name)?;
        r.remote.stop();
        Some(r)
    }

    /// Starts every configured token. Errors here are configuration errors (an unreadable CA file, say).
    pub(crate) async fn start_all(&mut self) -> Result<(), Error> {
        let tokens = std::mem::take(&mut self.config.tokens);
        // The HTTP clients read CA and certificate files: build them on the blocking pool, then start from the cache.
        let (clients, tokens) = build_clients(tokens).await?;
        self.clients = clients;
        for t in tokens {
            self.start(Box::new(t))?;
        }
        Ok(())
    }

    /// Re-reads the config; applies it if it changed and is valid, else keeps the running one.
    pub(crate) async fn reload(&mut self, watch: &mut DirWatch) {
        // Credentials are looked at for every request; a nudge lets failing refreshers try a rotated secret now.
        // Only a real change nudges: any other event in a watched directory must not shorten a backoff.
        for r in self.running.values_mut() {
            let now = credentials_now(&r.cfg);
            if now != r.credentials {
                r.credentials = now;
                r.remote.wake();
            }
        }
        self.rotate_tls().await;
        // Reading and parsing run on the blocking pool: a FIFO, `/dev/zero` or a pathological document must never
        // stall the runtime thread, which answers /livez.
        let path = self.config_path.clone();
        let bytes = match tokio::task::spawn_blocking(move || crate::load::read(&path)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                self.reject_unreadable(e.to_string());
                return;
            }
            Err(e) => {
                self.reject_unreadable(format!("the reading task failed: {e}"));
                return;
            }
        };
        let bytes_digest = digest(&bytes);
        if self.applied == Some(bytes_digest) || self.rejected == Some(bytes_digest) {
            return;
        }
        let (path, b) = (self.config_path.clone(), bytes);
        let parsed = tokio::task::spawn_blocking(move || {
            let new = crate::load::from_bytes(&b, &path)?;
            // Every client must build before anything is swapped, so a bad CA file cannot take tokens down.
            // Fresh clients, so a CA file or client certificate replaced at the same path is read again.
            let clients = build_clients_blocking(&new.tokens);
            Ok::<_, ConfigError>((new, clients))
        })
        .await;
        let (new, clients) = match parsed {
            Ok(Ok((new, Ok(clients)))) => (new, clients),
            Ok(Ok((_, Err(e)))) => {
                let (t, problem) = match &*e {
                    Error::Client { token, source } => (token.as_str(), chain(source)),
                    other => ("", chain(other)),
                };
                tracing::error!(file = %self.config_path.display(), token = %t, problem = %problem, "new config rejected; the running config stays in effect");
                self.metrics.reload(ReloadResult::error);
                self.rejected = Some(bytes_digest);
                return;
            }
            Ok(Err(e)) => {
                for p in &e.problems {
                    tracing::error!(file = %self.config_path.display(), key = %p.path, problem = %p.message, "new config rejected; the running config stays in effect");
                }
                self.metrics.reload(ReloadResult::error);
                self.rejected = Some(bytes_digest);
                return;
            }
            Err(e) => {
                tracing::error!(file = %self.config_path.display(), error = %e, "new config rejected: the parsing task failed; the running config stays in effect");
                self.metrics.reload(ReloadResult::error);
                self.rejected = Some(bytes_digest);
                return;
            }
        };
        self.clients = clients;
        self.apply(new, watch).await;
        self.applied = Some(bytes_digest);
        self.rejected = None;
        self.metrics.reload(ReloadResult::success);
        release_free_memory();
    }

    /// cert-manager and Secret updates replace CA, certificate and key files in place. A token whose TLS files no
    /// longer match what its HTTP client was built from gets a new client and a restarted refresher, which requests
    /// at once if its last attempt failed or it holds no valid token it can adopt from its warm-start state.
    /// Files that cannot be read or do not make a client (caught half-written) keep the running client, with one
    /// warning naming the file, until the next change. Other tokens are not touched.
    async fn rotate_tls(&mut self) {
        let looked_at: Vec<(String, HttpConfig, url::Url, Option<[u8; 32]>)> = self
            .running
            .iter()
            .filter(|(_, r)| {
                let h = &r.cfg.http;
                h.ca_file.is_some() || h.client_cert_file.is_some()
            })
            .map(|(n, r)| {
                (
                    n.clone(),
                    r.cfg.http.clone(),
                    r.cfg.token_url.clone(),
                    r.tls,
                )
            })
            .collect();
        if looked_at.is_empty() {
            return;
        }
        let read = tokio::task::spawn_blocking(move || {
            looked_at
                .into_iter()
                .map(|(n, h, url, running)| {
                    let rotation = HttpClients::rotation(&h, &url, running);
                    (n, h, url, rotation)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(read) = read else {
            return;
        };
        for (name, http, url, rotation) in read {
            let Some(r) = self.running.get_mut(&name) else {
                continue;
            };
            let built = match rotation {
                Rotation::Same => {
                    r.tls_problem = None;
                    continue;
                }
                Rotation::Unusable(e) => {
                    let problem = chain(&e);
                    if r.tls_problem.as_deref() != Some(&problem) {
                        tracing::warn!(token = %name, problem = %problem, "cannot use the TLS files; the HTTP client in use stays until they change again");
                        r.tls_problem = Some(problem);
                    }
                    continue;
                }
                Rotation::Changed(built) => built,
            };
            // The cache hands the new client to this token's restart (and to any token with the same settings,
            // which saw the same files change); tokens running with the old client keep it.
            self.clients.replace(&http, &url, built);
            let Some(r) = self.stop_token(&name).await else {
                continue;
            };
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, r.handle).await;
            // After a failure (a handshake the old files lost, say) the new files are tried at once. A token that is
            // still valid and did not fail keeps its planned refresh (adopted from the warm-start state): nothing
            // waits on it, and a CA bundle rotated every few hours must not cost a request each time.
            let failed = self
                .state
                .update(&name, |s| s.consecutive_failures > 0)
                .unwrap_or(true);
            tracing::info!(token = %name, request_now = failed, "TLS files changed; the HTTP client was rebuilt and the refresher restarted");
            if let Err(e) = self.start_as(r.cfg, failed) {
                tracing::error!(token = %name, problem = %chain(&e), "cannot start the refresher");
            }
        }
    }

    /// Logs once (per kind of failure) that the config file cannot be read; the running config stays.
    fn reject_unreadable(&mut self, error: String) {
        let marker = digest(format!("\0unreadable: {error}").as_bytes());
        if self.rejected != Some(marker) {
            tracing::error!(file = %self.config_path.display(), error = %error, "cannot re-read the config; the running config stays in effect");
            self.metrics.reload(ReloadResult::error);
            self.rejected = Some(marker);
        }
    }

    async fn apply(&mut self, mut new: Config, watch: &mut DirWatch) {
        if new.listen != self.config.listen {
            tracing::warn!(old = %self.config.listen, new = %new.listen, "listen changed; it takes effect at the next restart");
        }
        if new.log != self.config.log {
            tracing::warn!("log settings changed; they take effect at the next restart");
        }
        let dirs = watched_dirs(&self.config_path, &new);
        let tokens = std::mem::take(&mut new.tokens);
        let wanted: BTreeMap<&str, &TokenConfig> =
            tokens.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut stopping = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let keep = wanted.get(name.as_str()).is_some_and(|t| {
                let r = &self.running[&name];
                **t == *r.cfg && new.refresh == r.policy
            });
            if !keep {
                if let Some(r) = self.stop_token(&name).await {
                    stopping.push((name, r));
                }
            }
        }
        for (name, r) in stopping {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, r.handle).await;
            if !wanted.contains_key(name.as_str()) {
                tracing::info!(token = %name, "token removed from the config; its files are left in place");
                self.state.remove(&name);
                self.metrics.forget_token(&name);
            }
        }
        let count = tokens.len();
        self.config = new;
        for t in tokens {
            if self.running.contains_key(&t.name) {
                continue;
            }
            tracing::info!(token = %t.name, "starting the refresher with the new config");
            let name = t.name.clone();
            if let Err(e) = self.start(Box::new(t)) {
                tracing::error!(token = %name, problem = %chain(&e), "cannot start the refresher");
            }
        }
        watch.set(dirs);
        tracing::info!(tokens = count, "config reloaded");
    }

    /// Stops every refresher, letting in-flight writes finish within the grace period.
    pub(crate) async fn shutdown(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        let mut handles = Vec::new();
        for n in names {
            if let Some(r) = self.stop_token(&n).await {
                handles.push((r.handle, r.sink));
            }
        }
        let all = futures_join(handles.iter_mut().map(|(h, _)| h));
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("some refreshers did not stop within the grace period; exiting anyway");
        }
        if self.config.on_exit == OnExit::Remove {
            for (_, sink) in &handles {
                sink.remove_all();
            }
            tracing::info!("outputs removed (on_exit: remove)");
        }
    }
}

async fn futures_join<'a>(handles: impl Iterator<Item = &'a mut JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Hands the heap's free pages back to the operating system (glibc keeps them otherwise). Called after a burst of
/// work: the first fill of 1,000 tokens leaves ~1.4 MiB of freed request and write buffers resident
/// (BENCHMARKS.md, 1,000 tokens). Walks the heap once: about a millisecond at that size.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and may be called at any time; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits for the first fill (every token valid; at most [`FIRST_FILL_PATIENCE`]), then releases free memory.
async fn release_after_first_fill(state: Arc<State>) {
    let give_up = tokio::time::Instant::now() + FIRST_FILL_PATIENCE;
    while !state.all_valid() && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The last writes' buffers are freed once their jobs are done.
    tokio::time::sleep(Duration::from_secs(1)).await;
    release_free_memory();
}

/// How long [`release_after_first_fill`] waits for every token to be valid before it releases memory anyway.
const FIRST_FILL_PATIENCE: Duration = Duration::from_secs(300);

/// Runs the daemon until a `Control::Stop` arrives.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    clock: Clock,
    control: mpsc::UnboundedReceiver<Control>,
) -> Result<(), Error> {
    let listener = bind(config.listen).await.map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    run_on(listener, config_path, config, clock, control).await
}

/// [`run`] with the admin listener already bound (`demo` binds it before it writes its config).
pub async fn run_on(
    listener: TcpListener,
    config_path: PathBuf,
    config: Config,
    clock: Clock,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let poll = config.reload.poll_interval;
    let dirs = watched_dirs(&config_path, &config);
    let p = config_path.clone();
    let applied = tokio::task::spawn_blocking(move || crate::load::read(&p).ok())
        .await
        .ok()
        .flatten();
    let mut daemon = Daemon::new(config_path.clone(), config, clock, applied);
    daemon
        .start_all()
        .await
        .map_err(|e| Error::Start(Box::new(e)))?;
    // A token adopted from the previous run makes the very first /readyz answer 200: the admin server starts once
    // every warm-start attempt is over (file work on the blocking pool, bounded; a stuck one is not waited for).
    let warm_deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for starting in daemon.starting.take().unwrap_or_default() {
        let _ = tokio::time::timeout_at(warm_deadline, starting).await;
    }
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(listener, daemon.admin(), async {
        let _ = server_stop_rx.await;
    }));
    tracing::info!(%addr, "admin server listening: /readyz /livez /metrics /status");
    let first_fill = tokio::spawn(release_after_first_fill(daemon.state.clone()));

    let (tx, mut events) = mpsc::unbounded_channel();
    let mut watch = DirWatch::new(tx);
    watch.set(dirs);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload) => {
                    tracing::info!("reload requested (SIGHUP)");
                    daemon.reload(&mut watch).await;
                }
                Some(Control::Stop) | None => break,
            },
            Some(()) = events.recv() => {
                tracing::debug!("a watched file changed; re-reading");
                // Kubernetes swaps several entries per update: let them settle, then read once.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while events.try_recv().is_ok() {}
                daemon.reload(&mut watch).await;
            }
            _ = ticker.tick() => daemon.reload(&mut watch).await,
        }
    }
    tracing::info!("shutting down");
    first_fill.abort();
    drop(watch);
    daemon.shutdown().await;
    let _ = server_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_millis(200), server).await;
    tracing::info!("stopped");
    Ok(())
}

/// One token that `once` could not vend.
#[derive(Debug)]
pub struct OnceFailure {
    pub(crate) token: String,
    pub(crate) url: String,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    /// The last attempt sent no request: its credentials could not be read or sent (a file or config problem).
    pub(crate) unsent: bool,
}

impl std::fmt::Display for OnceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Most errors already name the token URL; say it once either way.
        let at = if self.error.contains(&self.url) {
            String::new()
        } else {
            format!(" ({})", self.url)
        };
        let (token, n, error) = (&self.token, self.attempts, &self.error);
        match (self.unsent, n) {
            (true, 1) => write!(f, "token {token} FAILED: no request was sent: {error}{at}"),
            (true, _) => write!(
                f,
                "token {token} FAILED after {n} attempt(s); the last sent no request: {error}{at}"
            ),
            (false, _) => write!(f, "token {token} FAILED after {n} attempt(s): {error}{at}"),
        }
    }
}

/// What `once` may create for a token before it has one to write (the directories on the way to its outputs and
/// state, the warm-start key, a discovery document), noted before anything runs: a token that is not vended leaves
/// none of it behind.
#[derive(Debug, Default)]
struct Footprint {
    /// Directories that did not exist.
    dirs: Vec<PathBuf>,
    /// The key file in each directory the state could be kept in, where there was none.
    keys: Vec<PathBuf>,
    /// The discovery document's file, when there was none.
    discovery: Option<PathBuf>,
}

fn absent(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_err()
}

impl Footprint {
    /// Looks before the token's sink exists (making it creates the key and the directory that holds it).
    fn before(cfg: &TokenConfig, state_dir: Option<&Path>) -> Footprint {
        let mut f = Footprint::default();
        let parents = cfg.outputs.iter().map(|o| match o.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        });
        for dir in state_dir.into_iter().chain(parents) {
            let key = dir.join(crate::refresh::sink::KEY_FILE);
            if absent(&key) && !f.keys.contains(&key) {
                f.keys.push(key);
            }
            for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
                if !absent(d) {
                    break;
                }
                if !f.dirs.iter().any(|x| x == d) {
                    f.dirs.push(d.to_path_buf());
                }
            }
        }
        f
    }

    /// Once the sink exists: where it would keep a discovery document, if there is none yet.
    fn with_sink(mut self, sink: &Sink) -> Footprint {
        self.discovery = sink
            .state_file()
            .map(crate::refresh::sink::discovery_file_for)
            .filter(|d| absent(d));
        self
    }
}

/// Removes what `once` created for the tokens it did not vend: their discovery documents, the key files no vended
/// token's state uses, then every directory it created that is still empty, deepest first.
fn remove_footprints(failed: Vec<Footprint>, vended: &[Arc<Sink>]) {
    let in_use: Vec<&Path> = vended
        .iter()
        .filter_map(|s| s.state_file().and_then(Path::parent))
        .collect();
    let mut dirs = Vec::new();
    for f in failed {
        let keys = f
            .keys
            .iter()
            .filter(|k| !k.parent().is_some_and(|d| in_use.contains(&d)));
        for file in f.discovery.iter().chain(keys) {
            let _ = std::fs::remove_file(file);
        }
        dirs.extend(f.dirs);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        // Only an empty directory goes: one a vended token (or anyone else) wrote into stays.
        let _ = std::fs::remove_dir(&d);
    }
}

/// Vends every token once and writes its outputs; transient errors are retried until `timeout`, permanent ones fail at once.
///
/// First it opens every file and variable the config names, as `check` does: a problem there ends the run with
/// [`Error::NotSent`] before anything is requested or created. A token that is not vended leaves nothing behind
/// that this run created for it ([`Footprint`]).
pub async fn once(
    config_path: &Path,
    config: &Config,
    timeout: Duration,
    clock: Clock,
) -> Result<(), Error> {
    let c = config.clone();
    let problems = tokio::task::spawn_blocking(move || crate::load::open_files(&c))
        .await
        .map_err(Error::Task)?;
    if !problems.is_empty() {
        return Err(Error::NotSent(ConfigError {
            file: config_path.to_path_buf(),
            problems,
        }));
    }
    let state = State::new(clock);
    let metrics = Arc::new(Metrics::new());
    let deadline = tokio::time::Instant::now() + timeout;
    let (clients, _) = build_clients(config.tokens.clone()).await?;
    let state_dir = config.state_dir.as_deref();
    let footprints: Vec<Footprint> = config
        .tokens
        .iter()
        .map(|t| Footprint::before(t, state_dir))
        .collect();
    let mut built = Vec::new();
    for t in &config.tokens {
        let made = build_refresher(t, &clients, config.refresh, &state, &metrics, state_dir)
            .and_then(|(refresher, sink)| {
                let n = notifier(t, config.refresh, Retry::Never, &state, &metrics)?;
                Ok((refresher.one_shot().notifying(n), sink))
            });
        match made {
            Ok(m) => built.push(m),
            Err(e) => {
                remove_footprints(footprints, &[]);
                return Err(e);
            }
        }
    }
    let mut tasks = Vec::new();
    let mut sinks = Vec::new();
    for ((t, (mut refresher, sink)), footprint) in config.tokens.iter().zip(built).zip(footprints) {
        sinks.push((footprint.with_sink(&sink), sink));
        let (name, url) = (t.name.clone(), t.token_url.to_string());
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            let mut last: Option<String> = None;
            let fail_as = |attempts, error, unsent| {
                Some(OnceFailure {
                    token: name.clone(),
                    url: url.clone(),
                    attempts,
                    error,
                    unsent,
                })
            };
            let fail = |attempts, error| fail_as(attempts, error, false);
            loop {
                attempts += 1;
                let step = async {
                    let (result, took) = refresher.attempt().await;
                    // Success means a token the reference client would use now (`valid()`), not merely an answer:
                    // one that is not is reported, and never written.
                    match result {
                        Ok(token) if !token.valid_at(state.clock().wall()) => {
                            Err(token.refresh_time())
                        }
                        result => Ok(refresher.publish(result, took).await),
                    }
                };
                match tokio::time::timeout_at(deadline, step).await {
                    Ok(Err(refresh_time)) => {
                        return fail(
                            attempts,
                            format!(
                                "the token received is already past its refresh_time ({}): its lifetime (expires_in) is too short to be used; not a valid token, not written",
                                humantime::format_rfc3339_seconds(refresh_time)
                            ),
                        )
                    }
                    Ok(Ok(Outcome::Refreshed { .. })) => {
                        // The hook's one attempt, bounded: `once` tells a running app too.
                        refresher.finish_notify().await;
                        return None;
                    }
                    Ok(Ok(Outcome::Failed { error, next })) => {
                        let permanent = error.kind.is_permanent();
                        last = Some(error.to_string());
                        if permanent {
                            // Credentials that cannot be read or sent fail before any request goes out.
                            let unsent = error.kind == ErrorKind::Credentials;
                            return fail_as(attempts, error.to_string(), unsent);
                        }
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        if left.is_zero() {
                            return fail(attempts, error.to_string());
                        }
                        tokio::time::sleep(next.min(left)).await;
                    }
                    Err(_) => {
                        let error = match &last {
                            Some(l) => format!(
                                "gave up after {}: {l}",
                                humantime::format_duration(timeout)
                            ),
                            None => {
                                format!("no answer within {}", humantime::format_duration(timeout))
                            }
                        };
                        return fail(attempts, error);
                    }
                }
            }
        }));
    }
    let mut failures = Vec::new();
    let mut joined = Ok(());
    let (mut vended, mut left) = (Vec::new(), Vec::new());
    for (t, (footprint, sink)) in tasks.into_iter().zip(sinks) {
        match t.await {
            Ok(None) => vended.push(sink),
            Ok(Some(f)) => {
                failures.push(f);
                left.push(footprint);
            }
            Err(e) => {
                joined = Err(Error::Task(e));
                left.push(footprint);
            }
        }
    }
    remove_footprints(left, &vended);
    joined?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::TokensFailed(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(attempts: u32, unsent: bool) -> OnceFailure {
        OnceFailure {
            token: "svc".into(),
            url: "https://idp.example/token".into(),
            attempts,
            error: "cannot read /s: No such file or directory (credentials)".into(),
            unsent,
        }
    }

    #[test]
    fn a_failure_that_sent_no_request_says_so_and_is_a_config_error() {
        assert_eq!(
            failure(1, true).to_string(),
            "token svc FAILED: no request was sent: cannot read /s: No such file or directory (credentials) (https://idp.example/token)"
        );
        assert_eq!(
            failure(3, true).to_string(),
            "token svc FAILED after 3 attempt(s); the last sent no request: cannot read /s: No such file or directory (credentials) (https://idp.example/token)"
        );
        assert!(failure(1, false)
            .to_string()
            .starts_with("token svc FAILED after 1 attempt(s): cannot read"));
        let code = |f: Vec<OnceFailure>| Error::TokensFailed(f).exit_code();
        assert_eq!(code(vec![failure(1, false)]), 1);
        assert_eq!(code(vec![failure(1, false), failure(1, true)]), 2);
    }
}
