//! Issue 9 §3-§5 (harden): hostile config, credential and CA paths, a pathological config by reload, proxies in the
//! environment, outputs over protected files, echoed credentials, a token dead on arrival, a log file beside the config.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::reliability::common::mem_kib;
use crate::reliability::report::Row;

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", p.display());
}

/// `listen` on loopback, one token `svc` with its secret in `secret`, outputs under `out/`.
fn config_text(d: &Path, url: &str, secret: &Path, extra_token: &str, extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nrefresh: {{min_backoff: 100ms, max_backoff: 2s}}\n{extra}tokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret_file: {s}\n{extra_token}    outputs:\n      - {{path: {d}/out/token}}\n",
        s = secret.display(),
        d = d.display()
    )
}

/// The three hostile kinds of path: a FIFO nobody writes, an endless device, a directory.
fn hostile_paths(sb: &Sandbox) -> Vec<(&'static str, PathBuf)> {
    let fifo = sb.path("fifo");
    mkfifo(&fifo);
    std::fs::create_dir_all(sb.path("a-dir")).unwrap();
    vec![
        ("FIFO", fifo),
        ("/dev/zero", PathBuf::from("/dev/zero")),
        ("directory", sb.path("a-dir")),
    ]
}

fn check(cfg: &Path, envs: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let (st, out, err) = run_to_end(
        &["check", "--config", cfg.to_str().unwrap()],
        cfg.parent().unwrap(),
        envs,
        Duration::from_secs(20),
    );
    (st.code(), format!("{out}\n{err}"), started.elapsed())
}

#[test]
fn h03a_fifo_dev_zero_and_directory_paths_are_refused_at_start() {
    let mut row = Row::new(
        "h03a",
        "config, client_secret_file and ca_file pointing at a FIFO, /dev/zero and a directory; `check` and `run`",
        "each refused with one clear error naming the path and its kind, within seconds, no unbounded read",
    );
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let secret = sb.write("secret", "s3cret\n");
    let url = "http://127.0.0.1:9/token";
    let mut slowest = Duration::ZERO;
    for (kind, p) in hostile_paths(&sb) {
        // The config itself.
        let (code, text, took) = check(&p, &[]);
        slowest = slowest.max(took);
        assert_eq!(code, Some(2), "{kind}: {text}");
        assert!(
            text.contains("not a regular file; refused"),
            "{kind}: {text}"
        );
        let (st, out, err) = run_to_end(
            &["run", "--config", p.to_str().unwrap()],
            &d,
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(st.code(), Some(2), "{kind} run: {out}{err}");
        assert_eq!(
            err.matches("not a regular file; refused").count(),
            1,
            "{kind} run: one clear error: {err}"
        );

        // The client secret.
        let cfg = sb.write("config.yaml", &config_text(&d, url, &p, "", ""));
        let (code, text, took) = check(&cfg, &[]);
        slowest = slowest.max(took);
        assert_ne!(code, Some(0), "{kind}: {text}");
        assert!(
            text.contains("client_secret_file") && text.contains("not a regular file; refused"),
            "{kind}: {text}"
        );

        // The CA bundle: at check and at start.
        let cfg = sb.write(
            "config.yaml",
            &config_text(
                &d,
                url,
                &secret,
                &format!("    http: {{ca_file: {}}}\n", p.display()),
                "",
            ),
        );
        let (code, text, took) = check(&cfg, &[]);
        slowest = slowest.max(took);
        assert_ne!(code, Some(0), "{kind}: {text}");
        assert!(
            text.contains("ca_file") && text.contains("not a regular file; refused"),
            "{kind}: {text}"
        );
        let started = Instant::now();
        let (st, out, err) = run_to_end(
            &["run", "--config", cfg.to_str().unwrap()],
            &d,
            &[],
            Duration::from_secs(20),
        );
        slowest = slowest.max(started.elapsed());
        assert_ne!(st.code(), Some(0), "{kind} run: {out}{err}");
        assert!(err.contains("not a regular file; refused"), "{kind}: {err}");
    }
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    row.figure(format!(
        "9 paths x (check, run): all refused; slowest answer {:.2} s",
        slowest.as_secs_f64()
    ));
    row.pass();
}

/// Probes /livez every ~50 ms with a 1 s budget until stopped: (probes, failures, slowest).
fn probe_livez(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, u32, Duration)> {
    std::thread::spawn(move || {
        let (mut n, mut bad, mut slowest) = (0, 0, Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            let ok = http_get(addr, "/livez").is_some_and(|(s, _)| s == 200);
            let took = t.elapsed();
            n += 1;
            if !ok || took > Duration::from_secs(1) {
                bad += 1;
            }
            slowest = slowest.max(took);
            std::thread::sleep(Duration::from_millis(50));
        }
        (n, bad, slowest)
    })
}

fn count_logs(p: &Proc, needle: &str) -> usize {
    p.log_lines()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
        .count()
}

#[test]
fn h03b_hostile_configs_by_reload_keep_the_running_config_and_livez() {
    let mut row = Row::new(
        "h03b",
        "the config file replaced, then SIGHUP, by a FIFO, a symlink to /dev/zero, a directory and a 150,000-level nested document",
        "one error each; /livez answers every ~50 ms probe within 1 s; peak RSS bounded; the running config keeps refreshing",
    );
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let server = TokenServer::start(Behavior::issue(3));
    let secret = sb.write("secret", "s3cret\n");
    let good = config_text(&d, &server.url(), &secret, "", "");
    let cfg = sb.write("config.yaml", &good);
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let addr = p.wait_admin();
    let (_, hwm_before) = mem_kib(p.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe_livez(addr, stop.clone());

    let mut errors = 0;
    let nested = format!("tokens: {}{}\n", "[".repeat(150_000), "]".repeat(150_000));
    type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let steps: Vec<Step> = vec![
        (
            "FIFO",
            Box::new(|| {
                let f = sb.path("fifo.tmp");
                mkfifo(&f);
                std::fs::rename(&f, &cfg).unwrap();
            }),
        ),
        (
            "/dev/zero",
            Box::new(|| {
                let _ = std::fs::remove_file(&cfg);
                std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
            }),
        ),
        (
            "directory",
            Box::new(|| {
                let _ = std::fs::remove_file(&cfg);
                std::fs::create_dir(&cfg).unwrap();
            }),
        ),
        (
            "150,000-level nesting",
            Box::new(|| {
                let _ = std::fs::remove_dir(&cfg);
                std::fs::write(&cfg, &nested).unwrap();
            }),
        ),
    ];
    for (kind, step) in steps {
        let before = count_logs(&p, "the running config stays in effect");
        step();
        p.signal("HUP");
        wait_until(
            Duration::from_secs(10),
            &format!("{kind}: the reload refused"),
            || count_logs(&p, "the running config stays in effect") > before,
        );
        errors += 1;
        // The running config still refreshes: a new token after the refusal.
        let issued = server.issued().len();
        wait_until(
            Duration::from_secs(10),
            &format!("{kind}: a refresh after the refusal"),
            || server.issued().len() > issued,
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (probes, bad, slowest) = prober.join().unwrap();
    let (_, hwm) = mem_kib(p.pid());
    let logs = p.logs();
    assert!(logs.contains("nested more than 64 levels"), "{logs}");
    assert!(
        logs.contains("a FIFO (named pipe), not a regular file"),
        "{logs}"
    );
    assert!(
        logs.contains("a character device, not a regular file"),
        "{logs}"
    );
    assert!(logs.contains("a directory, not a regular file"), "{logs}");
    assert_eq!(
        count_logs(&p, "the running config stays in effect"),
        errors,
        "one error per hostile config:\n{logs}"
    );
    assert_eq!(
        bad, 0,
        "{bad} of {probes} /livez probes failed or took > 1 s"
    );
    assert!(probes >= 20, "{probes}");
    // The nested document is 300 kB; reading it as a tree would cost far more than this.
    assert!(
        hwm < hwm_before + 16 * 1024,
        "VmHWM {hwm} KiB, {hwm_before} before"
    );
    assert!(p.ready(), "{}", p.describe());
    row.figure(format!(
        "{probes} /livez probes, 0 failed, slowest {:.0} ms",
        slowest.as_secs_f64() * 1000.0
    ));
    row.figure(format!(
        "VmHWM {:.1} MiB ({:.1} MiB before the hostile reloads)",
        hwm as f64 / 1024.0,
        hwm_before as f64 / 1024.0
    ));
    row.figure(format!(
        "{errors} reloads refused, one error line each; token refreshed after each"
    ));
    row.pass();
}

#[test]
fn plain_http_through_an_environment_proxy_is_refused_at_check_and_start() {
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let secret = sb.write("secret", "s3cret\n");
    let cfg = sb.write(
        "config.yaml",
        &config_text(&d, "http://127.0.0.1:9/token", &secret, "", ""),
    );
    for envs in [
        vec![("HTTP_PROXY", "http://127.0.0.1:3128")],
        vec![("http_proxy", "http://127.0.0.1:3128")],
        vec![("ALL_PROXY", "http://127.0.0.1:3128")],
        vec![
            ("all_proxy", "http://127.0.0.1:3128"),
            ("NO_PROXY", "idp.example"),
        ],
    ] {
        let (code, text, _) = check(&cfg, &envs);
        assert_eq!(code, Some(2), "{envs:?}: {text}");
        assert!(
            text.contains("tokens[0].token_url: http:// is allowed without allow_insecure_http only straight to a loopback address, but a proxy"),
            "{envs:?}: {text}"
        );
        let (st, out, err) = run_to_end(
            &["run", "--config", cfg.to_str().unwrap()],
            &d,
            &envs,
            Duration::from_secs(20),
        );
        assert_eq!(st.code(), Some(2), "{envs:?}: {out}{err}");
        assert!(err.contains("but a proxy"), "{err}");
        assert!(
            !err.contains("3128"),
            "the proxy address is not shown: {err}"
        );
    }
    for envs in [
        vec![],
        vec![
            ("HTTP_PROXY", "http://127.0.0.1:3128"),
            ("NO_PROXY", "127.0.0.1"),
        ],
        vec![
            ("http_proxy", "http://127.0.0.1:3128"),
            ("no_proxy", "127.0.0.0/8"),
        ],
        vec![("HTTPS_PROXY", "http://127.0.0.1:3128")],
    ] {
        let (code, text, _) = check(&cfg, &envs);
        assert_eq!(code, Some(0), "{envs:?}: {text}");
    }
    // Told to allow it: the operator's choice.
    let cfg = sb.write(
        "config.yaml",
        &config_text(
            &d,
            "http://127.0.0.1:9/token",
            &secret,
            "    http: {allow_insecure_http: true}\n",
            "",
        ),
    );
    let (code, text, _) = check(&cfg, &[("HTTP_PROXY", "http://127.0.0.1:3128")]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn an_output_over_a_protected_file_is_refused_at_check_and_start() {
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let secret = sb.write("secret", "s3cret\n");
    let text = config_text(&d, "http://127.0.0.1:9/token", &secret, "", "").replace(
        &format!("      - {{path: {}/out/token}}\n", d.display()),
        &format!(
            "      - {{path: {}/out/token}}\n      - {{path: {}/out/../secret}}\n",
            d.display(),
            d.display()
        ),
    );
    let cfg = sb.write("config.yaml", &text);
    let (code, out, _) = check(&cfg, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("tokens[0].outputs[1].path:") && out.contains("reads its credentials from"),
        "{out}"
    );
    let (st, o, err) = run_to_end(
        &["run", "--config", cfg.to_str().unwrap()],
        &d,
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(st.code(), Some(2), "{o}{err}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret\n");
}

#[test]
fn echoed_variants_of_the_secret_are_redacted_everywhere() {
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    // Every 8-character window of its lower-case encoding holds an escape with a hex letter (`%2f`), so the run rule
    // alone cannot hide that form: each rule is needed.
    let secret_value = "Zq/9/Hk/Wv/Tr/Lm/Pn/";
    let secret = sb.write("secret", &format!("{secret_value}\n"));
    // Percent-encoded with lower-case hex digits, the letters of the secret left as they are.
    let lower: String = secret_value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    let run8 = &secret_value[3..13];
    let server = TokenServer::start(Behavior::Respond {
        status: 400,
        content_type: "application/json".into(),
        body: serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("bad secret {lower} (starts {run8}...)"),
        })
        .to_string(),
        headers: vec![],
    });
    let cfg = sb.write(
        "config.yaml",
        &config_text(&d, &server.url(), &secret, "", ""),
    );
    let (st, out, err) = run_once(&cfg, "5s");
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(err.contains("(redacted)"), "{err}");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "the refusal in /status", || {
        p.get("/status").1.contains("invalid_client")
    });
    let status = p.get("/status").1;
    let secrets = vec![
        secret_value.to_string(),
        lower.clone(),
        run8.to_string(),
        secret_value[5..13].to_string(),
    ];
    assert_no_leaks(
        &[
            ("once stderr", &err),
            ("log", &p.logs()),
            ("/status", &status),
        ],
        &secrets,
    );
}

#[test]
fn once_fails_for_a_token_already_past_refresh_time() {
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let secret = sb.write("secret", "s3cret\n");
    // A 1 s token is past its refresh_time (buffer 1 s) when it arrives. (An expires_in of 0 or less is not a
    // lifetime at all: an invalid_response, tests/it/hostile_inputs.rs.)
    {
        let expires_in = 1;
        let server = TokenServer::start(Behavior::issue(expires_in));
        let cfg = sb.write(
            "config.yaml",
            &config_text(&d, &server.url(), &secret, "", ""),
        );
        let (st, out, err) = run_once(&cfg, "5s");
        assert_eq!(st.code(), Some(1), "expires_in {expires_in}: {out}{err}");
        assert!(
            err.contains("already past its refresh_time"),
            "expires_in {expires_in}: {err}"
        );
        assert!(
            !sb.path("out/token").exists(),
            "once wrote a token it reported as not valid"
        );
    }
    let server = TokenServer::start(Behavior::issue(60));
    let cfg = sb.write(
        "config.yaml",
        &config_text(&d, &server.url(), &secret, "", ""),
    );
    let (st, out, err) = run_once(&cfg, "5s");
    assert!(st.success(), "{out}{err}");
}

#[test]
fn a_log_file_beside_the_config_does_not_wake_the_watcher() {
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    let server = TokenServer::start(Behavior::issue(600));
    let secret = sb.write("secret", "s3cret\n");
    // Debug level: every wake-up logs a line into the process's stderr, which is a file in the config's directory.
    let cfg = sb.write(
        "config.yaml",
        &config_text(&d, &server.url(), &secret, "", "log: {level: debug}\n"),
    );
    let mut p = Proc::run(&cfg);
    assert_eq!(
        p.stderr.parent(),
        Some(d.as_path()),
        "the log is beside the config"
    );
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let wakes = |p: &Proc| count_logs(p, "a watched file changed; re-reading");
    // Barrier: touching a served file wakes the watcher exactly once; its log line is then written into the
    // watched directory, and must not wake it again.
    let before = wakes(&p);
    std::fs::write(&secret, "s3cret\n").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the watcher sees the secret file",
        || wakes(&p) > before,
    );
    // A second, later barrier: another served change. Any feedback from the log file in between would show as
    // extra wake-ups beyond these two.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&cfg, std::fs::read(&cfg).unwrap()).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the watcher sees the config",
        || wakes(&p) > before + 1,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        wakes(&p),
        before + 2,
        "the watcher woke for its own log lines:\n{}",
        p.logs()
    );
}
