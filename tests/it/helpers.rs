//! Shared test parts: the real binary as a child process, a scriptable token server on 127.0.0.1, oidc-provider, and polling with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_token-vendor")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `f` until it is true; panics with `what` (and the context) after `timeout`. Never a blind sleep.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Like `wait_until`, but returns whether it happened.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A minimal HTTP/1.1 GET against the admin server: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Fails the test if any secret occurs in any of the texts.
pub fn assert_no_leaks(texts: &[(&str, &str)], secrets: &[String]) {
    for (what, text) in texts {
        for s in secrets {
            assert!(!s.is_empty());
            assert!(
                !text.contains(s.as_str()),
                "secret or token {s:?} leaked into {what}:\n{text}"
            );
        }
    }
}

/// A temporary directory with a config file in it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }
    /// Files whose names mark them as temporary, anywhere below the sandbox.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(".tv-tmp-")
                {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

/// Replaces a Kubernetes-style Secret volume's content: new `..<ts>` dir, `..data` symlink swapped atomically.
pub fn k8s_secret_update(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let ts = format!(
        "..{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let data = dir.join(&ts);
    std::fs::create_dir(&data).unwrap();
    for (name, content) in files {
        std::fs::write(data.join(name), content).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// The real binary, running.
pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
    pub stdout: PathBuf,
    pub args: Vec<String>,
    admin: Option<SocketAddr>,
}

impl Proc {
    pub fn spawn(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> Proc {
        Self::spawn_as(args, dir, envs, None)
    }

    /// [`Proc::spawn`], as user and group `uid` when given (the test runs as root).
    pub fn spawn_as(args: &[&str], dir: &Path, envs: &[(&str, &str)], uid: Option<u32>) -> Proc {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let stderr = dir.join(format!("proc-{n}.stderr"));
        let stdout = dir.join(format!("proc-{n}.stdout"));
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("TOKEN_VENDOR_LOG")
            .env_remove("TOKEN_VENDOR_CONFIG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(id) = uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, id);
            std::os::unix::process::CommandExt::gid(&mut cmd, id);
        }
        let child = cmd.spawn().expect("spawn token-vendor");
        Proc {
            child,
            stderr,
            stdout,
            args: args.iter().map(|s| s.to_string()).collect(),
            admin: None,
        }
    }

    /// `run --config FILE`, waiting for the admin server to listen.
    pub fn run(config: &Path) -> Proc {
        let dir = config.parent().unwrap();
        let mut p = Proc::spawn(&["run", "--config", config.to_str().unwrap()], dir, &[]);
        p.wait_admin();
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn out(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Parsed JSON log lines.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_admin(&mut self) -> SocketAddr {
        if let Some(a) = self.admin {
            return a;
        }
        let mut found = None;
        let ok = eventually(Duration::from_secs(20), || {
            found = self
                .log_lines()
                .iter()
                .find(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("admin server listening"))
                })
                .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()));
            found.is_some() || self.child.try_wait().ok().flatten().is_some()
        });
        let Some(addr) = found.filter(|_| ok) else {
            panic!("admin server did not come up\n{}", self.describe());
        };
        self.admin = Some(addr);
        addr
    }

    pub fn get(&mut self, path: &str) -> (u16, String) {
        let addr = self.wait_admin();
        http_get(addr, path).unwrap_or((0, String::new()))
    }

    pub fn ready(&mut self) -> bool {
        self.get("/readyz").0 == 200
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything about the process, for a failing assertion.
    pub fn describe(&self) -> String {
        format!(
            "command: {} {}\nstdout:\n{}\nstderr:\n{}",
            bin(),
            self.args.join(" "),
            self.out(),
            self.logs()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Runs the binary to completion: (status, stdout, stderr).
pub fn run_to_end(
    args: &[&str],
    dir: &Path,
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn(args, dir, envs);
    let Some(status) = p.wait_exit(timeout) else {
        panic!("did not exit within {timeout:?}\n{}", p.describe());
    };
    (status, p.out(), p.logs())
}

/// `once --config CFG --timeout T`, run in the config's directory: (status, stdout, stderr).
pub fn run_once(cfg: &Path, timeout: &str) -> (ExitStatus, String, String) {
    let dir = cfg.parent().expect("config in a directory");
    let args = [
        "once",
        "--config",
        cfg.to_str().expect("UTF-8 path"),
        "--timeout",
        timeout,
    ];
    run_to_end(&args, dir, &[], Duration::from_secs(60))
}

/// `token-vendor check --config CFG`, run from `dir`.
pub fn run_check(cfg: &Path, dir: &Path) -> (ExitStatus, String, String) {
    let cfg = cfg.to_str().expect("UTF-8 path");
    run_to_end(
        &["check", "--config", cfg],
        dir,
        &[],
        Duration::from_secs(30),
    )
}

/// `token-vendor demo --dir tokens --once`, run from `dir`.
pub fn run_demo_once(dir: &Path) -> (ExitStatus, String, String) {
    let args = ["demo", "--dir", "tokens", "--once"];
    run_to_end(&args, dir, &[], Duration::from_secs(20))
}

// ---------------------------------------------------------------------------
// The part every test HTTP server shares: a listener on its own thread and runtime, and a request reader.
// ---------------------------------------------------------------------------

/// A test server's listener, running until `stop` fires or is dropped.
pub struct Listening {
    pub addr: SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Binds `addr` (port 0 for any) on a thread with its own runtime and hands every connection to `handle`.
pub fn listen<F, Fut>(addr: SocketAddr, handle: F) -> Listening
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let served = handle(stream);
                        tokio::spawn(async move { let _ = served.await; });
                    }
                }
            }
        });
    });
    let addr = rx.recv().unwrap();
    Listening { addr, stop, thread }
}

/// One HTTP/1.1 request as a test server read it.
pub struct RawRequest {
    /// The request line, e.g. `POST /path HTTP/1.1`.
    pub line: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// Everything read after the head: the body, at least `Content-Length` bytes unless the peer closed early.
    pub body: Vec<u8>,
    /// `Content-Length` (0 when absent or unparseable), capped at the reader's `max_body`.
    pub content_length: usize,
}

/// Reads a request head (at most about `max_head` bytes) and then up to `Content-Length` (capped at `max_body`)
/// bytes of body. `None` when the peer closed before the head ended or the head is too long.
pub async fn read_request(
    stream: &mut tokio::net::TcpStream,
    max_head: usize,
    max_body: usize,
) -> std::io::Result<Option<RawRequest>> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > max_head {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = BTreeMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let content_length: usize = headers
        .get("content-length")
        .and_then(|v: &String| v.parse().ok())
        .unwrap_or(0)
        .min(max_body);
    while buf.len() < head_end.saturating_add(content_length) {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(RawRequest {
        line: head.lines().next().unwrap_or_default().to_string(),
        headers,
        body: buf.split_off(head_end),
        content_length,
    }))
}

// ---------------------------------------------------------------------------
// A scriptable token server: raw HTTP/1.1 over tokio, so that every fault can be produced exactly.
// ---------------------------------------------------------------------------

/// What the server does with the next requests.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Issue a token: `expires_in` is inserted as given (a JSON value, or left out when `None`).
    Issue {
        expires_in: Option<serde_json::Value>,
        token_type: String,
        jwt_exp_in: Option<i64>,
    },
    /// Answer with this status, content type, body and extra headers.
    Respond {
        status: u16,
        content_type: String,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Read the request, then never answer.
    Hang,
    /// A 200 whose body arrives one byte per second.
    Drip,
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// A 200 with this many bytes of body.
    Huge(usize),
    /// A 200 with this many bytes of body and no Content-Length: the body ends when the connection closes.
    HugeUnframed(usize),
    /// An error that echoes the client id and secret it was sent (as careless servers do) in `error_description`.
    EchoCredentials { status: u16, error: String },
    /// An error that echoes the raw `Authorization` header and form body it was sent in `error_description`.
    EchoRequest { status: u16, error: String },
}

impl Behavior {
    pub fn issue(expires_in: i64) -> Behavior {
        Behavior::Issue {
            expires_in: Some(expires_in.into()),
            token_type: "Bearer".into(),
            jwt_exp_in: None,
        }
    }
    pub fn issue_f(expires_in: f64) -> Behavior {
        Behavior::Issue {
            expires_in: Some(serde_json::json!(expires_in)),
            token_type: "Bearer".into(),
            jwt_exp_in: None,
        }
    }
    pub fn error(status: u16, error: &str) -> Behavior {
        Behavior::Respond {
            status,
            content_type: "application/json".into(),
            body: format!(r#"{{"error":"{error}","error_description":"scripted {error}"}}"#),
            headers: vec![],
        }
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub form: BTreeMap<String, Vec<String>>,
    pub headers: BTreeMap<String, String>,
}

struct Shared {
    behavior: Mutex<Behavior>,
    /// Accepted (client_id, client_secret) pairs; empty accepts anything.
    accepted: Mutex<Vec<(String, String)>>,
    seen: Mutex<Vec<Seen>>,
    /// Every token issued, with when it expires by this server's clock (when `expires_in` was a number).
    issued: Mutex<Vec<(String, Option<Instant>)>>,
    serial: AtomicU64,
    down: AtomicBool,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn start(behavior: Behavior) -> TokenServer {
        let shared = Arc::new(Shared {
            behavior: Mutex::new(behavior),
            accepted: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            down: AtomicBool::new(false),
        });
        Self::start_on("127.0.0.1:0".parse().unwrap(), shared)
    }

    fn start_on(addr: SocketAddr, shared: Arc<Shared>) -> TokenServer {
        let sh = shared.clone();
        let l = listen(addr, move |stream| serve(stream, sh.clone()));
        TokenServer {
            addr: l.addr,
            shared,
            stop: Some(l.stop),
            thread: Some(l.thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn set(&self, b: Behavior) {
        *self.shared.behavior.lock().unwrap() = b;
    }

    pub fn accept_only(&self, creds: &[(&str, &str)]) {
        *self.shared.accepted.lock().unwrap() = creds
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn issued(&self) -> Vec<String> {
        let issued = self.shared.issued.lock().unwrap();
        issued.iter().map(|(t, _)| t.clone()).collect()
    }

    /// A handle that answers, from any thread, when a token this server issued expires.
    pub fn ledger(&self) -> Ledger {
        Ledger(self.shared.clone())
    }

    /// Stops listening: connections are refused until `up`.
    pub fn down(&mut self) {
        self.shared.down.store(true, Ordering::SeqCst);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listens again on the same port.
    pub fn up(&mut self) {
        self.shared.down.store(false, Ordering::SeqCst);
        let again = TokenServer::start_on(self.addr, self.shared.clone());
        drop(std::mem::replace(self, again));
    }
}

/// The expiry of every token a `TokenServer` issued, by the server's own clock: what a resource server checks.
#[derive(Clone)]
pub struct Ledger(Arc<Shared>);

impl Ledger {
    /// `None` for a token this server never issued (or issued without a numeric `expires_in`).
    pub fn expires_at(&self, token: &str) -> Option<Instant> {
        let issued = self.0.issued.lock().unwrap();
        issued.iter().rev().find(|(t, _)| t == token)?.1
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn form_decode(s: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub fn jwt_with_exp(exp: i64) -> String {
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        enc(r#"{"alg":"none","typ":"JWT"}"#),
        enc(&format!(
            r#"{{"sub":"svc","exp":{exp},"n":"{}"}}"#,
            rand_hex()
        ))
    )
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn serve(mut stream: tokio::net::TcpStream, sh: Arc<Shared>) -> std::io::Result<()> {
    // The whole body as read, without a cap on Content-Length: what this server always did.
    let Some(req) = read_request(&mut stream, 1 << 20, usize::MAX).await? else {
        return Ok(());
    };
    let headers = req.headers;
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let form = form_decode(&body);
    let raw_body = body.clone();
    let auth_header = headers.get("authorization").cloned();
    let (mut id, mut secret) = (None, None);
    if let Some(b) = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
    {
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b) {
            let raw = String::from_utf8_lossy(&raw).into_owned();
            if let Some((i, s)) = raw.split_once(':') {
                id = Some(url_decode(i));
                secret = Some(url_decode(s));
            }
        }
    }
    if id.is_none() {
        id = form.get("client_id").and_then(|v| v.first().cloned());
        secret = form.get("client_secret").and_then(|v| v.first().cloned());
    }
    sh.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        client_id: id.clone(),
        client_secret: secret.clone(),
        form: form.clone(),
        headers,
    });

    let accepted = sh.accepted.lock().unwrap().clone();
    let creds_ok = accepted.is_empty()
        || accepted
            .iter()
            .any(|(a, b)| Some(a) == id.as_ref() && Some(b) == secret.as_ref());
    let behavior = sh.behavior.lock().unwrap().clone();
    let respond = |status: u16, ct: &str, body: &str, extra: &[(String, String)]| {
        let mut r = format!("HTTP/1.1 {status} {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n", reason(status), body.len());
        for (k, v) in extra {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r
    };
    if !creds_ok && matches!(behavior, Behavior::Issue { .. }) {
        let r = respond(
            401,
            "application/json",
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
            &[],
        );
        stream.write_all(r.as_bytes()).await?;
        return stream.shutdown().await;
    }
    match behavior {
        Behavior::Issue {
            expires_in,
            token_type,
            jwt_exp_in,
        } => {
            let n = sh.serial.fetch_add(1, Ordering::SeqCst) + 1;
            let issued_at = Instant::now();
            let token = match jwt_exp_in {
                Some(d) => jwt_with_exp(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64
                        + d,
                ),
                None => format!("tok-{n}-{}", rand_hex()),
            };
            let expires_at = expires_in
                .as_ref()
                .and_then(|e| e.as_f64())
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .map(|d| issued_at + d);
            sh.issued.lock().unwrap().push((token.clone(), expires_at));
            let mut obj = serde_json::json!({"access_token": token, "token_type": token_type});
            if let Some(e) = expires_in {
                obj["expires_in"] = e;
            }
            if let Some(s) = form.get("scope").and_then(|v| v.first()) {
                obj["scope"] = s.clone().into();
            }
            let r = respond(200, "application/json", &obj.to_string(), &[]);
            stream.write_all(r.as_bytes()).await?;
        }
        Behavior::Respond {
            status,
            content_type,
            body,
            headers,
        } => {
            stream
                .write_all(respond(status, &content_type, &body, &headers).as_bytes())
                .await?;
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Behavior::Drip => {
            let body = r#"{"access_token":"drip","token_type":"Bearer","expires_in":3600}"#;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).await?;
            for b in body.bytes() {
                stream.write_all(&[b]).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Behavior::ResetMidBody => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"access_token\":\"par";
            stream.write_all(head.as_bytes()).await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            #[allow(deprecated)] // a zero linger sends RST and does not block
            stream.set_linger(Some(Duration::ZERO))?;
            drop(stream);
            return Ok(());
        }
        Behavior::HugeUnframed(n) => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            write_filler(&mut stream, n).await;
        }
        Behavior::EchoCredentials { status, error } => {
            let body = serde_json::json!({
                "error": error,
                "error_description": format!(
                    "client {} with secret {} is not allowed",
                    id.clone().unwrap_or_default(),
                    secret.clone().unwrap_or_default()
                ),
            })
            .to_string();
            stream
                .write_all(respond(status, "application/json", &body, &[]).as_bytes())
                .await?;
        }
        Behavior::EchoRequest { status, error } => {
            let body = serde_json::json!({
                "error": error,
                "error_description": format!(
                    "request had Authorization: {:?} and body: {}",
                    auth_header.as_deref().unwrap_or(""),
                    raw_body
                ),
            })
            .to_string();
            stream
                .write_all(respond(status, "application/json", &body, &[]).as_bytes())
                .await?;
        }
        Behavior::Huge(n) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            write_filler(&mut stream, n).await;
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// `n` bytes of JSON whitespace, until the client hangs up.
async fn write_filler(stream: &mut tokio::net::TcpStream, n: usize) {
    let chunk = vec![b' '; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        if stream.write_all(&chunk[..k]).await.is_err() {
            return;
        }
        left -= k;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------
// oidc-provider (panva), installed by scripts/install-tools.
// ---------------------------------------------------------------------------

pub struct OidcServer {
    child: Child,
    pub url: String,
    pub config: PathBuf,
    pub stderr: PathBuf,
}

impl OidcServer {
    /// Kept for callers written against the old signature: always `Some`, since a missing oidc-provider fails the
    /// test (see `launch`).
    pub fn start(dir: &Path, config: serde_json::Value) -> Option<OidcServer> {
        Some(Self::launch(dir, config))
    }

    /// Starts `tests/servers/oidc-server.mjs` with this JSON config. A missing oidc-provider is a test failure with
    /// the reason, never a silent pass: scripts/install-tools installs it.
    pub fn launch(dir: &Path, config: serde_json::Value) -> OidcServer {
        let root = repo_root();
        assert!(
            root.join("tests/servers/node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed in tests/servers/node_modules: run scripts/install-tools \
             (scripts/test does); this test cannot run without it"
        );
        let cfg = dir.join("oidc.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let stderr = dir.join("oidc.stderr");
        let mut child = Command::new("node")
            .arg(root.join("tests/servers/oidc-server.mjs"))
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (needed for oidc-provider): {e}"));
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while out.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                if b[0] == b'\n' {
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                } else {
                    line.push(b[0]);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "oidc-server did not print READY: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        let url = line
            .strip_prefix("READY ")
            .expect("READY line")
            .trim()
            .to_string();
        OidcServer {
            child,
            url,
            config: cfg,
            stderr,
        }
    }

    pub fn reload(&self, config: serde_json::Value) {
        std::fs::write(&self.config, config.to_string()).unwrap();
        let before = std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .matches("SIGHUP: reloaded")
            .count();
        Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        wait_until(Duration::from_secs(10), "oidc-server reload", || {
            std::fs::read_to_string(&self.stderr)
                .unwrap_or_default()
                .matches("SIGHUP: reloaded")
                .count()
                > before
        });
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Behavior {
    /// A redirect to `location`, as a misconfigured token URL gets.
    pub fn redirect(status: u16, location: &str) -> Behavior {
        Behavior::Respond {
            status,
            content_type: "text/plain".into(),
            body: String::new(),
            headers: vec![("Location".into(), location.into())],
        }
    }
    /// A 200 whose body is an OAuth error, as some servers answer errors.
    pub fn error_with_200(error: &str) -> Behavior {
        Behavior::Respond {
            status: 200,
            content_type: "application/json".into(),
            body: format!(r#"{{"error":"{error}","error_description":"scripted {error}"}}"#),
            headers: vec![],
        }
    }
    /// A token of another type than Bearer.
    pub fn issue_type(expires_in: i64, token_type: &str) -> Behavior {
        Behavior::Issue {
            expires_in: Some(expires_in.into()),
            token_type: token_type.into(),
            jwt_exp_in: None,
        }
    }
}

/// A memory cgroup of 32 MiB (swap 0) holding only the sidecar (v2, or the v1 memory hierarchy where that is what
/// the host has). Root only; removed when dropped (drop it after the process in it).
pub struct Cgroup {
    pub dir: PathBuf,
    pub v2: bool,
}

impl Cgroup {
    /// `purpose` names it: `token-vendor-<purpose>-<test pid>`.
    pub fn create(purpose: &str) -> Cgroup {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "a memory cgroup needs root (CI runs it as root)"
        );
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let name = format!("token-vendor-{purpose}-{}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let v2_memory = std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
        let cg = if v2_memory {
            // A child of the root: the root may have processes and still delegate controllers.
            let sub =
                std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
            if !sub.split_whitespace().any(|x| x == "memory") {
                std::fs::write(root.join("cgroup.subtree_control"), "+memory").unwrap_or_else(
                    |e| panic!("cannot enable the memory controller in /sys/fs/cgroup: {e}"),
                );
            }
            Cgroup {
                dir: root.join(name),
                v2: true,
            }
        } else {
            let path = own
                .lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, ctl, p) = (f.next()?, f.next()?, f.next()?);
                    ctl.split(',').any(|c| c == "memory").then(|| p.to_string())
                })
                .unwrap_or_else(|| {
                    panic!("no cgroup v2 memory controller and no v1 memory hierarchy: /proc/self/cgroup is\n{own}")
                });
            Cgroup {
                dir: root
                    .join("memory")
                    .join(path.trim_start_matches('/'))
                    .join(name),
                v2: false,
            }
        };
        std::fs::create_dir(&cg.dir).unwrap_or_else(|e| {
            panic!(
                "cannot create the memory cgroup {}: {e} (the cgroup file system is not writable here)",
                cg.dir.display()
            )
        });
        if cg.v2 {
            cg.write("memory.max", "32M");
            if cg.dir.join("memory.swap.max").exists() {
                cg.write("memory.swap.max", "0");
            }
        } else {
            cg.write("memory.limit_in_bytes", "32M");
            if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                cg.write("memory.memsw.limit_in_bytes", "32M");
            }
        }
        cg
    }

    /// Moves `pid` into the cgroup.
    pub fn enter(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    pub fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value).unwrap_or_else(|e| {
            panic!("cannot write {value} to {}/{file}: {e}", self.dir.display())
        });
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    pub fn oom_kills(&self) -> u64 {
        let f = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(f)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill count in {}/{f}", self.dir.display()))
    }

    pub fn peak_bytes(&self) -> Option<u64> {
        let f = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(f).trim().parse().ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The sidecar is killed and reaped before this runs (declared later, dropped first); rmdir may race its exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}
