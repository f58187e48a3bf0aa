//! The consumer examples (examples/consumers/*) against the real binary: each calls an API for 20 s while tokens live
//! 6 s, and the API accepts a token only while the token server that issued it says it is unexpired.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

/// Every example under examples/consumers/, each run by its `run` script.
const EXAMPLES: [&str; 6] = ["python", "benchling", "go", "java", "node", "shell"];
/// Seconds each example runs (DURATION). With LIFETIME and WINDOW, refresh_time is 5 s after issue and the sidecar
/// replaces a token every 1-1.5 s, so 20 s see about fifteen tokens, a client that caches until refresh_time about
/// five, and a client that keeps its first token is refused within 6 s.
const DURATION: u64 = 20;
/// `expires_in` of every token the token server issues.
const LIFETIME: i64 = 6;
/// The sidecar's refresh window: a token is replaced 1-1.5 s after issue (20-30% of the way to refresh_time), so a
/// client that reads the file for every request has at least 4.5 s between reading a token and its expiry. That is
/// for a JVM's first request, which took 2.3-3.2 s on a 2-core machine at load average 20 with two CPU hogs and
/// missed the default window's 1.75 s and [0.5, 0.6]'s 3 s once each. A client that caches until refresh_time keeps
/// the reference's 1 s buffer before expiry whatever the window.
const WINDOW: &str = "[0.20, 0.30]";
/// The rate every example promises: at least this many requests a second.
const MIN_RATE: u64 = 5;

/// What one API listener saw. One listener per example, so nothing an example prints is needed to attribute requests.
#[derive(Default)]
struct ApiStats {
    requests: u64,
    /// A token the token server issued, presented after its expiry by the token server's clock.
    expired: u64,
    /// How long before its arrival the stalest of those had expired: a stall of the machine shows as a fraction of
    /// a second, a token cached for too long as seconds.
    stalest: Duration,
    /// A bearer token the token server never issued.
    unknown: u64,
    /// No `Authorization: Bearer` header at all.
    missing: u64,
    /// Every distinct token presented.
    tokens: BTreeSet<String>,
}

impl ApiStats {
    fn rejected(&self) -> u64 {
        self.expired + self.unknown + self.missing
    }
}

/// A resource server on 127.0.0.1: 200 for a live token, 401 otherwise.
struct Api {
    addr: SocketAddr,
    stats: Arc<Mutex<ApiStats>>,
    _listening: Listening,
}

impl Api {
    fn start(ledger: Ledger) -> Api {
        let stats = Arc::new(Mutex::new(ApiStats::default()));
        let st = stats.clone();
        let listening = listen("127.0.0.1:0".parse().unwrap(), move |stream| {
            serve_api(stream, ledger.clone(), st.clone())
        });
        Api {
            addr: listening.addr,
            stats,
            _listening: listening,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v2/things?page=1", self.addr)
    }
}

/// Answers requests on one connection until the client closes it (the Go, Java, Node and httpx clients keep
/// connections open), idles 30 s, or asks to close.
async fn serve_api(
    mut stream: tokio::net::TcpStream,
    ledger: Ledger,
    stats: Arc<Mutex<ApiStats>>,
) -> std::io::Result<()> {
    loop {
        let read = read_request(&mut stream, 16 << 10, 0);
        let Ok(Ok(Some(req))) = tokio::time::timeout(Duration::from_secs(30), read).await else {
            return Ok(());
        };
        let token = req
            .headers
            .get("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let ok = {
            let mut st = stats.lock().unwrap();
            st.requests += 1;
            match token {
                None => {
                    st.missing += 1;
                    false
                }
                Some(t) => {
                    let ok = match ledger.expires_at(&t) {
                        None => {
                            st.unknown += 1;
                            false
                        }
                        Some(exp) if Instant::now() >= exp => {
                            st.expired += 1;
                            st.stalest = st.stalest.max(exp.elapsed());
                            false
                        }
                        Some(_) => true,
                    };
                    st.tokens.insert(t);
                    ok
                }
            }
        };
        let (head, body) = if ok {
            ("200 OK", r#"{"things":[]}"#)
        } else {
            (
                "401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\"",
                r#"{"error":{"message":"invalid or expired token"}}"#,
            )
        };
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = format!(
            "HTTP/1.1 {head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        stream.write_all(resp.as_bytes()).await?;
        if close {
            return stream.shutdown().await;
        }
    }
}

/// One GET with this bearer token on a fresh connection: the status, or 0 when there was no answer.
fn get_with_token(addr: SocketAddr, token: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "GET /api/v2/things HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut answer).is_err() {
        return 0;
    }
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// One example, running; killed when dropped (a failed test leaves nothing behind).
struct Example {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Example {
    fn spawn(name: &'static str, token_dir: &Path, api_url: &str, logs: &Path) -> Example {
        let run = repo_root()
            .join("examples/consumers")
            .join(name)
            .join("run");
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let child = Command::new(&run)
            .env("TOKEN_DIR", token_dir)
            .env("API_URL", api_url)
            .env("DURATION", DURATION.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", run.display()));
        Example {
            name,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    fn out(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The counts of the contract's last line, `requests=N rejected=M`.
    fn counts(&self) -> Option<(u64, u64)> {
        let out = self.out();
        let (r, j) = out
            .lines()
            .last()?
            .strip_prefix("requests=")?
            .split_once(" rejected=")?;
        Some((r.parse().ok()?, j.parse().ok()?))
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `child` until it exits or `deadline` passes: its status, or `None` while it still runs.
fn wait_by(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn sidecar_config(sb: &Sandbox, token_url: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write("secret", "consumer-secret");
    let mut cfg = format!("listen: \"127.0.0.1:0\"\nrefresh: {{window: {WINDOW}}}\ntokens:\n");
    for name in EXAMPLES {
        std::fs::create_dir_all(sb.path(&format!("tokens/{name}"))).unwrap();
        cfg.push_str(&format!(
            "  - name: {name}\n    token_url: {token_url}\n    client_id: {name}\n    client_secret_file: {d}/secret\n    outputs:\n"
        ));
        for (file, format) in [
            ("token", "raw"),
            ("token.header", "header"),
            ("token.json", "json"),
            ("token.env", "env"),
        ] {
            cfg.push_str(&format!(
                "      - {{path: {d}/tokens/{name}/{file}, format: {format}}}\n"
            ));
        }
    }
    sb.write("config.yaml", &cfg)
}

/// Issue 17 §2. One sidecar vends a token per example (each its own TOKEN_DIR and token stream): the way a pod's
/// single sidecar serves several tokens, and one process instead of six on a 2-core machine. All six run at once.
#[test]
fn every_consumer_example_uses_only_live_tokens_for_20_s() {
    let sb = Sandbox::new();
    // First use builds (go build, javac, the SDK's venv): done before the clock starts, so all six start together.
    // scripts/install-tools has normally built them already and this takes a moment.
    let build = repo_root().join("examples/consumers/build");
    let build_log = sb.path("build.log");
    let mut building = Command::new(&build)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&build_log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", build.display()));
    // All three from cold took 3.5 minutes on a loaded 2-core machine, most of it the venv.
    let built = wait_by(&mut building, Instant::now() + Duration::from_secs(900));
    if built.is_none() {
        let _ = building.kill();
    }
    assert!(
        built.is_some_and(|s| s.success()),
        "{} failed ({built:?}, None: still running after 900 s):\n{}",
        build.display(),
        std::fs::read_to_string(&build_log).unwrap_or_default()
    );

    let idp = TokenServer::start(Behavior::issue(LIFETIME));
    let cfg = sidecar_config(&sb, &idp.url());
    let mut sidecar = Proc::run(&cfg);
    wait_until(Duration::from_secs(30), "every token written", || {
        sidecar.ready()
    });

    let apis: Vec<Api> = EXAMPLES.iter().map(|_| Api::start(idp.ledger())).collect();
    let mut running: Vec<Example> = EXAMPLES
        .iter()
        .zip(&apis)
        .map(|(name, api)| {
            Example::spawn(
                name,
                &sb.path(&format!("tokens/{name}")),
                &api.url(),
                sb.dir.path(),
            )
        })
        .collect();
    // DURATION, plus start-up (a JVM, the SDK's imports) on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(DURATION + 90);
    for ex in &mut running {
        ex.status = wait_by(&mut ex.child, deadline);
    }

    // A control, so a lenient API cannot pass the examples: the first token is long expired, the current one is live.
    let control = Api::start(idp.ledger());
    let first = idp.issued().first().cloned().expect("a token was issued");
    let current = sb.read("tokens/python/token").unwrap_or_default();
    let control_codes = (
        get_with_token(control.addr, &first),
        get_with_token(control.addr, &current),
        get_with_token(control.addr, "never-issued"),
    );

    let mut table = format!(
        "consumer examples, {DURATION} s each, tokens living {LIFETIME} s ({} issued in all):\n  \
         example    requests (printed/API)  rejected (printed/API)  distinct tokens\n",
        idp.issued().len()
    );
    let mut failures = Vec::new();
    for (ex, api) in running.iter().zip(&apis) {
        let st = api.stats.lock().unwrap();
        let printed = ex.counts();
        let shown = printed.map_or(("?".to_string(), "?".to_string()), |(r, j)| {
            (r.to_string(), j.to_string())
        });
        table.push_str(&format!(
            "  {:<10} {:>8} / {:<13} {:>8} / {:<13} {}\n",
            ex.name,
            shown.0,
            st.requests,
            shown.1,
            st.rejected(),
            st.tokens.len()
        ));
        let mut why = Vec::new();
        match ex.status {
            None => why.push(format!(
                "still running {} s after it started",
                DURATION + 90
            )),
            Some(s) if !s.success() => why.push(format!("exited with {s}")),
            Some(_) => {}
        }
        match printed {
            None => why.push("last line is not `requests=N rejected=M`".to_string()),
            Some((r, j)) if (r, j) != (st.requests, st.rejected()) => why.push(format!(
                "printed requests={r} rejected={j}, the API counted requests={} rejected={}",
                st.requests,
                st.rejected()
            )),
            Some(_) => {}
        }
        if st.rejected() > 0 {
            why.push(format!(
                "the API refused {} requests: {} with an expired token (the stalest expired {:?} before it \
                 arrived), {} with a token never issued, {} without a bearer token",
                st.rejected(),
                st.expired,
                st.stalest,
                st.unknown,
                st.missing
            ));
        }
        if st.requests < MIN_RATE * DURATION {
            why.push(format!(
                "{} requests in {DURATION} s, fewer than {MIN_RATE} a second",
                st.requests
            ));
        }
        if st.tokens.len() < 3 {
            why.push(format!(
                "used {} distinct tokens, fewer than 3",
                st.tokens.len()
            ));
        }
        if !why.is_empty() {
            failures.push(format!(
                "--- {}: {}\nstdout (tail):\n{}\nstderr (tail):\n{}",
                ex.name,
                why.join("; "),
                tail(&ex.out(), 5),
                tail(&ex.err(), 15)
            ));
        }
    }
    println!("{table}");
    if control_codes != (401, 200, 401) {
        failures.push(format!(
            "--- the API itself: (expired, live, never issued) tokens answered {control_codes:?}, not (401, 200, 401)"
        ));
    }
    assert!(
        failures.is_empty(),
        "{table}\n{}\n--- sidecar log (tail):\n{}",
        failures.join("\n"),
        tail(&sidecar.logs(), 20)
    );
}
