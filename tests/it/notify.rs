//! `notify`: the real binary tells a real app (an HTTP listener on 127.0.0.1, a child process with a pid file) that its token changed, once per publish, never for a failed refresh, and never at the cost of a refresh.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;

use crate::helpers::*;
use crate::reliability::common::{logs_with, metric, wait_ready};

/// What the app's HTTP endpoint does with a notification.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// One notification as the app received it.
#[derive(Clone, Debug)]
struct Got {
    line: String,
    content_type: Option<String>,
    body: String,
}

/// The app: an HTTP listener on 127.0.0.1 that records every request and counts its open connections.
struct App {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    peak_open: Arc<AtomicUsize>,
    _l: Listening,
}

impl App {
    fn start(answer: Answer) -> App {
        let got = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let peak_open = Arc::new(AtomicUsize::new(0));
        let (g, o, p) = (got.clone(), open.clone(), peak_open.clone());
        let l = listen("127.0.0.1:0".parse().unwrap(), move |mut stream| {
            let (g, o, p) = (g.clone(), o.clone(), p.clone());
            async move {
                let n = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(n, Ordering::SeqCst);
                let r = serve_app(&mut stream, answer, &g).await;
                o.fetch_sub(1, Ordering::SeqCst);
                r
            }
        });
        App {
            addr: l.addr,
            got,
            peak_open,
            _l: l,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/-/token-changed", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

async fn serve_app(
    stream: &mut tokio::net::TcpStream,
    answer: Answer,
    got: &Mutex<Vec<Got>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(stream, 16 * 1024, 16 * 1024).await? else {
        return Ok(());
    };
    got.lock().unwrap().push(Got {
        line: req.line,
        content_type: req.headers.get("content-type").cloned(),
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    let status = match answer {
        Answer::Ok => 204,
        Answer::Status(s) => s,
        Answer::Hang => {
            // Until the client gives up and closes: then the read returns.
            let mut b = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(stream, &mut b).await;
            return Ok(());
        }
    };
    let head = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.shutdown().await
}

/// A config with token `svc` (with `notify`) and token `plain` (without), both from `url`, refreshed quickly.
fn config(sb: &Sandbox, url: &str, notify: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nrefresh: {{min_backoff: 100ms, max_backoff: 400ms}}\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: c\n    client_secret: s\n    outputs:\n      - {{path: {d}/out/token}}\n      - {{path: {d}/out/token.json, format: json}}\n    notify: {notify}\n  - name: plain\n    token_url: {url}\n    client_id: c\n    client_secret: s\n    outputs: [{{path: {d}/out/plain}}]\n"
        ),
    )
}

fn metrics(p: &mut Proc) -> String {
    let (code, body) = p.get("/metrics");
    assert_eq!(code, 200, "{}", p.describe());
    body
}

fn notify_count(body: &str, result: &str) -> f64 {
    metric(
        body,
        "token_vendor_notify_total",
        &[("token", "svc"), ("result", result)],
    )
}

fn svc_status(p: &mut Proc) -> serde_json::Value {
    let (code, body) = p.get("/status");
    assert_eq!(code, 200, "{}", p.describe());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "svc")
        .cloned()
        .unwrap()
}

/// Requests of token `svc` the server has seen (both tokens share the server; `plain` asks for its own).
fn svc_tokens(sb: &Sandbox) -> Option<serde_json::Value> {
    serde_json::from_str(&sb.read("out/token.json")?).ok()
}

/// Lets the server issue tokens until at least `n` were issued, then makes it fail every request: the number of
/// tokens issued is final from then on.
fn issue_then_fail(server: &TokenServer, n: usize) -> usize {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} tokens issued"),
        || server.issued().len() >= n,
    );
    server.set(Behavior::error(503, "temporarily_unavailable"));
    let issued = server.issued().len();
    let seen = server.seen().len();
    // Failed refreshes of both tokens: at least two more requests each.
    wait_until(Duration::from_secs(30), "failed refreshes", || {
        server.seen().len() >= seen + 4
    });
    issued
}

/// Follows `out/token.json` for `span` and checks that every new token was published before the previous one's
/// refresh_time, readiness never dropped, and at least `min` tokens were seen. Returns how many were.
fn refreshes_on_time(sb: &Sandbox, p: &mut Proc, span: Duration, min: usize) -> usize {
    let start = Instant::now();
    let mut last = svc_tokens(sb).expect("a first token");
    let mut count = 1;
    let mut not_ready = 0;
    while start.elapsed() < span {
        if !p.ready() {
            not_ready += 1;
        }
        if let Some(j) = svc_tokens(sb) {
            if j["access_token"] != last["access_token"] {
                let prev =
                    humantime::parse_rfc3339(last["refresh_time"].as_str().unwrap()).unwrap();
                let issued = humantime::parse_rfc3339(j["issued_at"].as_str().unwrap()).unwrap();
                assert!(
                    issued < prev,
                    "a refresh came after the previous refresh_time: {last} -> {j}\n{}",
                    p.describe()
                );
                last = j;
                count += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(not_ready, 0, "/readyz must stay 200\n{}", p.describe());
    assert!(
        count >= min,
        "{count} tokens in {span:?}, want at least {min}\n{}",
        p.describe()
    );
    count
}

#[test]
fn every_publish_is_one_post_with_the_name_and_refresh_time_and_a_failed_refresh_none() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3));
    let app = App::start(Answer::Ok);
    let cfg = config(
        &sb,
        &server.url(),
        &format!("{{http: {{url: \"{}\"}}}}", app.url()),
    );
    let mut p = Proc::run(&cfg);
    // Before anything: the series exist at zero for the token with a hook, none for the one without.
    let m = metrics(&mut p);
    for result in ["error", "skipped", "superseded"] {
        assert!(
            m.contains(&format!(
                "token_vendor_notify_total{{token=\"svc\",result=\"{result}\"}} "
            )),
            "{result}:\n{m}"
        );
    }
    assert!(
        !m.contains("token_vendor_notify_total{token=\"plain\""),
        "{m}"
    );

    wait_ready(&mut p, Duration::from_secs(20));
    // Both tokens come from one server: 4 of svc's at the least.
    let issued = issue_then_fail(&server, 8);
    let published = metric(
        &metrics(&mut p),
        "token_vendor_refresh_total",
        &[("token", "svc"), ("result", "success")],
    ) as usize;
    assert!(
        published >= 3,
        "{published} of {issued} tokens were svc's\n{}",
        p.describe()
    );
    wait_until(Duration::from_secs(10), "a POST per publish", || {
        app.got().len() >= published
    });
    // The refreshes keep failing (the server answers 503): no POST for any of them.
    let seen = server.seen().len();
    wait_until(Duration::from_secs(30), "more failed refreshes", || {
        server.seen().len() >= seen + 4
    });
    let got = app.got();
    assert_eq!(
        got.len(),
        published,
        "one POST per publish, none for a failure: {got:?}"
    );

    let mut times = BTreeSet::new();
    for g in &got {
        assert!(
            g.line.starts_with("POST /-/token-changed HTTP/1.1"),
            "{g:?}"
        );
        assert_eq!(g.content_type.as_deref(), Some("application/json"), "{g:?}");
        let v: serde_json::Value = serde_json::from_str(&g.body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["refresh_time", "token"], "{g:?}");
        assert_eq!(v["token"], "svc");
        times.insert(v["refresh_time"].as_str().unwrap().to_string());
    }
    assert_eq!(
        times.len(),
        published,
        "every POST names another token: {got:?}"
    );
    let last: serde_json::Value = serde_json::from_str(&got.last().unwrap().body).unwrap();
    assert_eq!(
        last["refresh_time"],
        svc_tokens(&sb).unwrap()["refresh_time"]
    );

    let m = metrics(&mut p);
    assert_eq!(notify_count(&m, "success") as usize, published, "{m}");
    for result in ["error", "skipped", "superseded"] {
        assert_eq!(notify_count(&m, result), 0.0, "{result}: {m}");
    }
    let s = svc_status(&mut p);
    assert_eq!(s["notify"]["kind"], "http", "{s}");
    assert_eq!(s["notify"]["last_result"], "success", "{s}");
    assert_eq!(s["notify"]["target"], app.url(), "{s}");
    assert!(s["notify"]["last_success"].is_string(), "{s}");
    let (_, status) = p.get("/status");
    let bodies: String = got.iter().map(|g| g.body.clone()).collect();
    assert_no_leaks(
        &[
            ("the POST bodies", &bodies),
            ("the logs", &p.logs()),
            ("/status", &status),
        ],
        &server.issued(),
    );
}

#[test]
fn a_dead_or_hung_app_does_not_slow_refreshes_and_is_warned_about_once() {
    // Nothing listening: a port that was just free.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/", free.local_addr().unwrap());
    drop(free);
    let hung = App::start(Answer::Hang);
    let failing = App::start(Answer::Status(500));
    for (what, url, timeout) in [
        ("nothing listening", dead, "2s"),
        // The timeout is longer than a refresh interval: a hook in the refresher's way would make it late.
        ("a listener that never answers", hung.url(), "5s"),
        ("an app answering 500", failing.url(), "2s"),
    ] {
        let sb = Sandbox::new();
        let server = TokenServer::start(Behavior::issue(3));
        let cfg = config(
            &sb,
            &server.url(),
            &format!("{{http: {{url: \"{url}\", timeout: {timeout}}}}}"),
        );
        let mut p = Proc::run(&cfg);
        wait_ready(&mut p, Duration::from_secs(20));
        let n = refreshes_on_time(&sb, &mut p, Duration::from_secs(8), 4);
        let m = metrics(&mut p);
        let (errors, superseded) = (notify_count(&m, "error"), notify_count(&m, "superseded"));
        assert_eq!(notify_count(&m, "success"), 0.0, "{what}: {m}");
        assert!(
            superseded >= (n - 2) as f64,
            "{what}: each newer token replaces the undelivered one ({n} tokens): {m}"
        );
        if what != "a listener that never answers" {
            assert!(
                errors >= n as f64,
                "{what}: retried until superseded ({n} tokens): {m}"
            );
        }
        let warned = logs_with(&p, "could not tell the app");
        let warnings: Vec<_> = warned.iter().filter(|l| l["level"] == "WARN").collect();
        assert_eq!(
            warnings.len(),
            1,
            "{what}: one warning over {n} publishes\n{}",
            p.describe()
        );
        let s = svc_status(&mut p);
        assert!(
            s["notify"]["problem"]
                .as_str()
                .is_some_and(|m| m.contains(&url)),
            "{what}: {s}"
        );
        assert!(s["ready"].as_bool().unwrap(), "{what}: {s}");
    }
    assert!(hung.got().len() >= 3, "the hung app was asked");
    // Each superseded POST's connection is closed, not left to pile up on the hung app.
    assert!(
        hung.peak_open.load(Ordering::SeqCst) <= 2,
        "{} connections held open at once",
        hung.peak_open.load(Ordering::SeqCst)
    );
    assert!(failing.got().len() >= 4);
}

#[test]
fn once_tells_a_running_app_once_and_a_dead_app_does_not_fail_it() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3600));
    let app = App::start(Answer::Ok);
    let cfg = config(
        &sb,
        &server.url(),
        &format!("{{http: {{url: \"{}\"}}}}", app.url()),
    );
    let (status, _, logs) = run_once(&cfg, "20s");
    assert!(status.success(), "{logs}");
    wait_until(Duration::from_secs(5), "the POST", || app.got().len() == 1);
    let v: serde_json::Value = serde_json::from_str(&app.got()[0].body).unwrap();
    assert_eq!(v["refresh_time"], svc_tokens(&sb).unwrap()["refresh_time"]);

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/", free.local_addr().unwrap());
    drop(free);
    let cfg = config(
        &sb,
        &server.url(),
        &format!("{{http: {{url: \"{dead}\"}}}}"),
    );
    let started = Instant::now();
    let (status, _, logs) = run_once(&cfg, "20s");
    assert!(status.success(), "{logs}");
    assert!(started.elapsed() < Duration::from_secs(10), "{logs}");
    assert_eq!(logs.matches("could not tell the app").count(), 1, "{logs}");
    assert_eq!(app.got().len(), 1);

    // A proxy from the environment never carries the POST out of the pod, and `localhost` is 127.0.0.1 whatever
    // a resolver says (the token request, to 127.0.0.1, is exempted by NO_PROXY).
    let url = format!("http://localhost:{}/x", app.addr.port());
    let cfg = config(&sb, &server.url(), &format!("{{http: {{url: \"{url}\"}}}}"));
    let proxy = "http://127.0.0.1:9";
    let envs = [
        ("HTTP_PROXY", proxy),
        ("http_proxy", proxy),
        ("ALL_PROXY", proxy),
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "127.0.0.1"),
    ];
    let args = [
        "once",
        "--config",
        cfg.to_str().unwrap(),
        "--timeout",
        "20s",
    ];
    let (status, _, logs) = run_to_end(&args, sb.dir.path(), &envs, Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    wait_until(Duration::from_secs(5), "the POST past the proxy", || {
        app.got().len() == 2
    });
    assert!(!logs.contains("could not tell the app"), "{logs}");
}

// ---------------------------------------------------------------------------------------------------------------
// signal
// ---------------------------------------------------------------------------------------------------------------

/// A real app: a Python process that writes its pid file (atomically) and logs every SIGHUP with its time.
struct SignalApp {
    child: Child,
    log: PathBuf,
}

impl SignalApp {
    fn start(dir: &Path, name: &str, pid_file: &Path) -> SignalApp {
        let log = dir.join(format!("{name}.hups"));
        let script = r#"
import os, signal, sys, time
log, pid_file = sys.argv[1], sys.argv[2]
def hup(sig, frame):
    with open(log, 'a') as f:
        f.write(f'{time.time()}\n')
signal.signal(signal.SIGHUP, hup)
tmp = pid_file + '.tmp'
with open(tmp, 'w') as f:
    f.write(f'{os.getpid()}\n')
os.rename(tmp, pid_file)
print('READY', flush=True)
while True:
    time.sleep(1)
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&log)
            .arg(pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("READY");
        assert_eq!(&buf, b"READY\n");
        SignalApp { child, log }
    }

    /// When each SIGHUP arrived (Unix seconds).
    fn hups(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for SignalApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn each_publish_signals_the_process_the_pid_file_names_at_that_moment() {
    let sb = Sandbox::new();
    let pid_file = sb.path("run/app.pid");
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    let a = SignalApp::start(sb.dir.path(), "a", &pid_file);
    let server = TokenServer::start(Behavior::issue(3));
    let cfg = config(
        &sb,
        &server.url(),
        &format!("{{signal: {{pid_file: {}}}}}", pid_file.display()),
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(20), "two signals to a", || {
        a.hups().len() >= 2
    });
    // The app restarts: another process, the pid file rewritten.
    let b = SignalApp::start(sb.dir.path(), "b", &pid_file);
    let b_written = unix_now();
    wait_until(Duration::from_secs(20), "two signals to b", || {
        b.hups().len() >= 2
    });
    let _ = issue_then_fail(&server, server.issued().len() + 1);
    let m = metrics(&mut p);
    let published = metric(
        &m,
        "token_vendor_refresh_total",
        &[("token", "svc"), ("result", "success")],
    ) as usize;
    wait_until(Duration::from_secs(5), "a signal per publish", || {
        a.hups().len() + b.hups().len() >= published
    });
    let seen = server.seen().len();
    wait_until(Duration::from_secs(30), "more failed refreshes", || {
        server.seen().len() >= seen + 4
    });
    let (ha, hb) = (a.hups(), b.hups());
    assert_eq!(
        ha.len() + hb.len(),
        published,
        "one signal per publish, none for a failure: a {ha:?}, b {hb:?}\n{}",
        p.describe()
    );
    assert!(
        // Slack for a signal sent as b wrote the file, handled a moment later.
        ha.iter().all(|&t| t < b_written + 0.3),
        "a got a signal after the pid file named b: {ha:?} (b from {b_written})"
    );
    let m = metrics(&mut p);
    assert_eq!(notify_count(&m, "success") as usize, published, "{m}");
    assert_eq!(notify_count(&m, "skipped"), 0.0, "{m}");
    let s = svc_status(&mut p);
    assert_eq!(s["notify"]["kind"], "signal", "{s}");
    assert_eq!(s["notify"]["last_result"], "success", "{s}");
}

#[test]
fn a_missing_then_stale_pid_file_is_one_warning_each_and_refreshes_go_on() {
    let sb = Sandbox::new();
    let pid_file = sb.path("run/app.pid");
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    let server = TokenServer::start(Behavior::issue(3));
    let cfg = config(
        &sb,
        &server.url(),
        &format!(
            "{{signal: {{pid_file: {}, signal: SIGHUP}}}}",
            pid_file.display()
        ),
    );
    let mut p = Proc::run(&cfg);
    wait_ready(&mut p, Duration::from_secs(20));
    let n = refreshes_on_time(&sb, &mut p, Duration::from_secs(5), 3);
    let warned = |p: &Proc, what: &str| {
        logs_with(p, "could not tell the app")
            .iter()
            .filter(|l| {
                l["level"] == "WARN" && l["problem"].as_str().is_some_and(|m| m.contains(what))
            })
            .count()
    };
    assert_eq!(
        warned(&p, "does not exist"),
        1,
        "missing: one warning over {n} publishes\n{}",
        p.describe()
    );
    assert!(notify_count(&metrics(&mut p), "skipped") >= n as f64 - 1.0);

    // A pid file left by a process that is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    // Written as an app should: whole, by a rename (a reader never sees it empty or half-written).
    std::fs::write(sb.path("run/app.pid.tmp"), format!("{gone_pid}\n")).unwrap();
    std::fs::rename(sb.path("run/app.pid.tmp"), &pid_file).unwrap();
    let n = refreshes_on_time(&sb, &mut p, Duration::from_secs(5), 3);
    assert_eq!(
        warned(&p, "no process"),
        1,
        "stale: one warning over {n} publishes\n{}",
        p.describe()
    );

    // The app comes: the next publish reaches it, and the log says it is reachable again.
    let app = SignalApp::start(sb.dir.path(), "app", &pid_file);
    wait_until(Duration::from_secs(20), "a signal", || {
        !app.hups().is_empty()
    });
    wait_until(Duration::from_secs(5), "the recovery line", || {
        !logs_with(
            &p,
            "the app was told that its token changed; it is reachable again",
        )
        .is_empty()
    });
    let m = metrics(&mut p);
    assert_eq!(
        notify_count(&m, "error"),
        0.0,
        "a missing or stale pid file is not an error: {m}"
    );
}

/// With a shared process namespace the app runs as the sidecar's uid; then it must not read the sidecar's memory,
/// environment or files through /proc. Runs token-vendor and the "app" as uid 65534.
#[test]
#[ignore = "needs root: runs token-vendor and a reader as another uid (scripts/test runs it when root, as CI is)"]
fn with_a_signal_hook_an_app_of_the_same_uid_cannot_read_the_sidecar_through_proc() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let server = TokenServer::start(Behavior::issue(3600));
    let read_environ = |pid: u32| {
        Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    for (hook, readable) in [("", true), ("signal", false)] {
        let sb = Sandbox::new();
        let dir = sb.dir.path();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        let notify = if hook.is_empty() {
            String::new()
        } else {
            format!(
                "    notify: {{signal: {{pid_file: {}/app.pid}}}}\n",
                dir.display()
            )
        };
        let cfg = sb.write(
            "config.yaml",
            &format!(
                "listen: \"127.0.0.1:0\"\ntokens:\n  - name: svc\n    token_url: {}\n    client_id: c\n    client_secret_env: TV_TEST_SECRET\n    outputs: [{{path: {}/token}}]\n{notify}",
                server.url(),
                dir.display()
            ),
        );
        std::os::unix::fs::chown(&cfg, Some(NOBODY), Some(NOBODY)).unwrap();
        let mut p = Proc::spawn_as(
            &["run", "--config", cfg.to_str().unwrap()],
            dir,
            &[("TV_TEST_SECRET", "s3cret-in-the-environment")],
            Some(NOBODY),
        );
        wait_ready(&mut p, Duration::from_secs(20));
        assert_eq!(
            read_environ(p.pid()),
            readable,
            "hook {hook:?}: a process of the same uid reading /proc/<pid>/environ\n{}",
            p.describe()
        );
    }
}
