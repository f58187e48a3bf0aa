//! `run`: the refresher daemon against oidc-provider and the scripted server: refreshes, readiness, outage, rotation, warm restart, reload, shutdown.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn daemon_config(
    sb: &Sandbox,
    url: &str,
    secret_line: &str,
    refresh: &str,
    extra: &str,
) -> std::path::PathBuf {
    let d = sb.dir.path().display().to_string();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\n{refresh}{extra}tokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    {secret_line}\n    outputs:\n      - {{path: {d}/out/token}}\n      - {{path: {d}/out/token.json, format: json}}\n"
        ),
    )
}

fn json_token(sb: &Sandbox) -> Option<serde_json::Value> {
    serde_json::from_str(&sb.read("out/token.json")?).ok()
}

/// A separate process reading `path` in a tight loop, printing each distinct value it saw (and `EMPTY`/`MISSING` events).
fn reader(path: &std::path::Path, seconds: f64) -> std::process::Child {
    let script = r#"
import sys, time
path, until = sys.argv[1], time.time() + float(sys.argv[2])
seen, reads = set(), 0
while time.time() < until:
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        print('MISSING', flush=True); continue
    reads += 1
    if not data:
        print('EMPTY', flush=True)
    elif data not in seen:
        seen.add(data)
        print('TOKEN', data.decode('ascii', 'replace'), flush=True)
print('READS', reads, flush=True)
"#;
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

#[test]
fn refreshes_before_every_refresh_time_against_oidc_provider_and_readiness_never_drops() {
    let sb = Sandbox::new();
    let secret = "oidc-secret+/=%value";
    let idp = OidcServer::launch(
        sb.dir.path(),
        json!({"port": 0, "ttl": 6, "clients": [{"client_id": "the-client", "client_secret": secret, "auth": "client_secret_basic"}]}),
    );
    sb.write("secret", secret);
    let cfg = daemon_config(
        &sb,
        &idp.url,
        &format!("client_secret_file: {}/secret", sb.dir.path().display()),
        "",
        "",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let first = json_token(&sb).unwrap();

    let rd = reader(&sb.path("out/token"), 14.0);
    let started = Instant::now();
    let mut refreshes: Vec<serde_json::Value> = vec![first];
    let mut not_ready = 0;
    while started.elapsed() < Duration::from_secs(14) {
        if !p.ready() {
            not_ready += 1;
        }
        if let Some(j) = json_token(&sb) {
            let last = refreshes.last().unwrap();
            if j["access_token"] != last["access_token"] {
                // The new token arrived before the previous one's refresh_time.
                let prev_refresh =
                    humantime::parse_rfc3339(last["refresh_time"].as_str().unwrap()).unwrap();
                let issued = humantime::parse_rfc3339(j["issued_at"].as_str().unwrap()).unwrap();
                assert!(
                    issued < prev_refresh,
                    "refresh came after the previous refresh_time: {last} -> {j}"
                );
                refreshes.push(j);
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        not_ready,
        0,
        "/readyz must stay 200 throughout\n{}",
        p.describe()
    );
    assert!(
        refreshes.len() >= 4,
        "expected several refreshes in 14 s of 6 s tokens, got {}",
        refreshes.len()
    );

    let out = rd.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("EMPTY") && !text.contains("MISSING"),
        "the reader saw a missing or empty file:\n{text}"
    );
    let read_tokens: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("TOKEN "))
        .collect();
    let written: BTreeSet<String> = refreshes
        .iter()
        .map(|j| j["access_token"].as_str().unwrap().to_string())
        .collect();
    for t in &read_tokens {
        assert!(
            written.contains(*t) || t.len() == 43,
            "the reader saw a partial token {t:?}"
        );
    }
    let reads: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("READS "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        reads > 1000,
        "the reader did not read in a tight loop ({reads})"
    );
    let mut secrets: Vec<String> = written.into_iter().collect();
    secrets.push(secret.to_string());
    let status = p.get("/status").1;
    let metrics = p.get("/metrics").1;
    let readyz = p.get("/readyz").1;
    assert_no_leaks(
        &[
            ("log", &p.logs()),
            ("/status", &status),
            ("/metrics", &metrics),
            ("/readyz", &readyz),
        ],
        &secrets,
    );
}

#[test]
fn outage_readiness_drops_at_refresh_time_and_returns_after_recovery() {
    let sb = Sandbox::new();
    let mut server = TokenServer::start(Behavior::issue(4));
    let cfg = daemon_config(
        &sb,
        &server.url(),
        "client_secret: inline-secret-value",
        "refresh: {min_backoff: 100ms, max_backoff: 1s}\n",
        "",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let j = json_token(&sb).unwrap();
    let before = sb.read("out/token").unwrap();
    server.down();
    let refresh_time = humantime::parse_rfc3339(j["refresh_time"].as_str().unwrap()).unwrap();
    // Ready while valid() holds (asked with 1 s to spare, so a slow answer on a loaded machine cannot land past it) ...
    while std::time::SystemTime::now() + Duration::from_secs(1) < refresh_time {
        assert!(
            p.ready(),
            "must stay ready until refresh_time\n{}",
            p.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and not ready once refresh_time has passed (never before it).
    wait_until(
        Duration::from_secs(10),
        "readiness to drop at refresh_time",
        || !p.ready(),
    );
    assert!(std::time::SystemTime::now() >= refresh_time);
    assert_eq!(
        sb.read("out/token").unwrap(),
        before,
        "the file must be untouched during the outage"
    );
    let (code, body) = p.get("/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("network"), "{body}");
    assert_eq!(
        p.get("/livez").0,
        200,
        "liveness never depends on the token server"
    );

    server.up();
    // The token has expired and no refresh is scheduled: only the retry loop (max_backoff 1 s) can bring it back.
    // The bound is slack for a loaded 2-core machine; the backoff's exact timing is tested on a paused clock
    // (schedule, refresh::tests).
    wait_until(
        Duration::from_secs(30),
        "a new token after recovery",
        || p.ready(),
    );
    assert_ne!(sb.read("out/token").unwrap(), before);
    // The files are written, then the state is published: wait for the failure count to reset.
    wait_until(
        Duration::from_secs(10),
        "consecutive_failures back to 0 in /status",
        || {
            serde_json::from_str::<serde_json::Value>(&p.get("/status").1)
                .is_ok_and(|s| s["tokens"][0]["consecutive_failures"] == 0)
        },
    );
    let mut secrets = server.issued();
    secrets.push("inline-secret-value".into());
    assert_no_leaks(&[("log", &p.logs())], &secrets);
}

#[test]
fn a_kubernetes_style_secret_rotation_is_used_without_a_restart() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3));
    server.accept_only(&[("the-client", "old-secret-1")]);
    let secrets_dir = sb.path("secrets");
    k8s_secret_update(&secrets_dir, &[("client_secret", "old-secret-1\n")]);
    let cfg = daemon_config(
        &sb,
        &server.url(),
        &format!(
            "client_secret_file: {}/client_secret",
            secrets_dir.display()
        ),
        "refresh: {min_backoff: 100ms, max_backoff: 30s}\n",
        "",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());

    // The provider rotates: the old secret is revoked before the new one reaches the volume.
    server.accept_only(&[("the-client", "new-secret-2")]);
    let n = server.seen().len();
    wait_until(
        Duration::from_secs(10),
        "a refused refresh with the old secret",
        || {
            server.seen().len() > n
                && server.seen().last().unwrap().client_secret.as_deref() == Some("old-secret-1")
        },
    );
    // The refused attempt is published and, the error being permanent, the next attempt is planned max_backoff
    // (30 s) away: a positive wait on the plan, not a sleep. A retry loop would plan it within min_backoff.
    wait_until(
        Duration::from_secs(10),
        "invalid_client in /status, next attempt planned more than 20 s away",
        || next_refresh_beyond(&mut p, Duration::from_secs(20), "invalid_client"),
    );
    let failures_before = server.seen().len();
    // The kubelet swaps ..data; the watcher sees it and the refresher retries at once instead of waiting max_backoff (30 s).
    k8s_secret_update(&secrets_dir, &[("client_secret", "new-secret-2\n")]);
    let swapped = Instant::now();
    let issued = server.issued().len();
    wait_until(
        Duration::from_secs(15),
        "a token vended with the rotated secret",
        || server.issued().len() > issued,
    );
    // Far below max_backoff (30 s): the watcher triggered the attempt.
    assert!(
        swapped.elapsed() < Duration::from_secs(10),
        "{:?}",
        swapped.elapsed()
    );
    assert_eq!(
        server.seen().last().unwrap().client_secret.as_deref(),
        Some("new-secret-2")
    );
    // Between the refused attempt and the swap nothing was retried; after it, one attempt with the new secret.
    assert_eq!(
        server.seen()[failures_before..]
            .iter()
            .filter(|s| s.client_secret.as_deref() == Some("old-secret-1"))
            .count(),
        0,
        "a permanent error was retried with the same secret before max_backoff"
    );
    wait_until(Duration::from_secs(5), "ready again", || p.ready());
    let mut secrets = server.issued();
    secrets.extend(["old-secret-1".to_string(), "new-secret-2".to_string()]);
    assert_no_leaks(
        &[("log", &p.logs()), ("/status", &p.get("/status").1)],
        &secrets,
    );
}

#[test]
fn a_warm_restart_is_ready_at_once_without_a_token_request() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let cfg = daemon_config(&sb, &server.url(), "client_secret: s", "", "");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let token = sb.read("out/token").unwrap();
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(5)).unwrap();
    assert_eq!(server.seen().len(), 1);

    let mut p2 = Proc::run(&cfg);
    assert!(
        p2.ready(),
        "a restarted sidecar with a valid token on disk is ready at once\n{}",
        p2.describe()
    );
    assert!(
        p2.logs().contains("adopted the still-valid token"),
        "{}",
        p2.describe()
    );
    // The refresher has planned its next refresh minutes away, not now ...
    wait_until(
        Duration::from_secs(10),
        "the adopted token's refresh planned more than 60 s away",
        || next_refresh_beyond(&mut p2, Duration::from_secs(60), ""),
    );
    // ... and a whole run, start to graceful stop, made no request (the stop is the barrier, not a sleep).
    p2.signal("TERM");
    assert!(p2
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    assert_eq!(server.seen().len(), 1, "no token request on a warm start");
    assert_eq!(sb.read("out/token").unwrap(), token);
    assert!(sb.temp_files().is_empty());
}

#[test]
fn sigterm_exits_zero_promptly_and_keeps_or_removes_files() {
    for (on_exit, kept) in [("keep", true), ("remove", false)] {
        let sb = Sandbox::new();
        let server = TokenServer::start(Behavior::issue(600));
        let cfg = daemon_config(
            &sb,
            &server.url(),
            "client_secret: s",
            "",
            &format!("on_exit: {on_exit}\n"),
        );
        let mut p = Proc::run(&cfg);
        wait_until(Duration::from_secs(10), "first token", || p.ready());
        let token = sb.read("out/token").unwrap();
        // The next refresh is minutes away: an exit within the bound comes from the signal, not from the schedule.
        // The bound is slack for a loaded machine; the shutdown grace itself is 1.5 s.
        p.signal("TERM");
        let st = p
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no exit within 20 s\n{}", p.describe()));
        assert!(st.success(), "{}", p.describe());
        assert_eq!(sb.read("out/token").is_some(), kept, "on_exit: {on_exit}");
        if kept {
            assert_eq!(sb.read("out/token").unwrap(), token);
        }
        assert!(sb.temp_files().is_empty());
    }
}

#[test]
fn sigterm_during_a_hanging_request_still_exits_promptly() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::Hang);
    // A request timeout far beyond the exit bound below: exiting in time means shutdown did not wait for the request.
    let cfg = daemon_config(
        &sb,
        &server.url(),
        "client_secret: s\n    http: {timeout: 300s}",
        "",
        "",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "the request to hang", || {
        !server.seen().is_empty()
    });
    // The admin server answers while a token request hangs.
    assert_eq!(p.get("/livez").0, 200);
    assert_eq!(p.get("/readyz").0, 503);
    p.signal("TERM");
    let st = p
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit within 30 s\n{}", p.describe()));
    assert!(st.success(), "{}", p.describe());
}

#[test]
fn reload_applies_a_good_config_and_rejects_a_bad_one() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let cfg = daemon_config(&sb, &server.url(), "client_secret: s", "", "");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let good = std::fs::read_to_string(&cfg).unwrap();

    // A config with an unknown key: rejected with its key path, once; the old config keeps running.
    std::fs::write(
        &cfg,
        good.replace("  - name: svc\n", "  - name: svc\n    scopes: typo\n"),
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the reload error", || {
        p.logs().contains("new config rejected")
    });
    // SIGHUP re-reads the same rejected bytes: no second log line. The loop handles one event at a time, so once a
    // second SIGHUP is logged, the first one's re-read has finished (a barrier instead of a sleep).
    let hups = || p_logs_count(&p, "reload requested (SIGHUP)");
    for n in 1..=2 {
        p.signal("HUP");
        wait_until(Duration::from_secs(10), "SIGHUP handled", || hups() >= n);
    }
    let rejections: Vec<_> = p
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("new config rejected"))
        })
        .collect();
    assert_eq!(rejections.len(), 1, "logged once\n{}", p.describe());
    assert_eq!(rejections[0]["key"], "tokens[0].scopes");
    assert!(p.ready());
    assert!(p
        .get("/metrics")
        .1
        .contains("token_vendor_config_reloads_total{result=\"error\"} 1"));

    // A good change: a second token appears without a restart, the first keeps its token.
    let d = sb.dir.path().display().to_string();
    let token_before = sb.read("out/token").unwrap();
    std::fs::write(
        &cfg,
        format!("{good}  - name: second\n    token_url: {}\n    client_id: c2\n    client_secret: s2\n    outputs: [{{path: {d}/out2/token}}]\n", server.url()),
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the second token", || {
        sb.read("out2/token").is_some()
    });
    wait_until(Duration::from_secs(5), "ready with both", || p.ready());
    assert_eq!(
        sb.read("out/token").unwrap(),
        token_before,
        "an unchanged token is not re-vended"
    );
    let (_, readyz) = p.get("/readyz");
    assert!(readyz.contains("\"second\":{\"ready\":true}"), "{readyz}");
    assert!(p
        .get("/metrics")
        .1
        .contains("token_vendor_config_reloads_total{result=\"success\"} 1"));
}

#[test]
fn metrics_status_and_unknown_paths() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let cfg = daemon_config(&sb, &server.url(), "client_secret: s", "", "");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let m = p.get("/metrics").1;
    for name in [
        "token_vendor_token_valid{token=\"svc\"} 1",
        "token_vendor_token_expiry_timestamp_seconds{token=\"svc\"}",
        "token_vendor_token_refresh_timestamp_seconds{token=\"svc\"}",
        "token_vendor_refresh_total{token=\"svc\",result=\"success\"} 1",
        "token_vendor_refresh_duration_seconds_bucket",
        "token_vendor_last_success_timestamp_seconds{token=\"svc\"}",
        "token_vendor_output_write_errors_total{token=\"svc\"} 0",
        "token_vendor_build_info{version=",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    let s: serde_json::Value = serde_json::from_str(&p.get("/status").1).unwrap();
    let t = &s["tokens"][0];
    for k in [
        "name",
        "ready",
        "issued_at",
        "refresh_time",
        "expires_at",
        "next_refresh",
        "consecutive_failures",
        "last_error",
    ] {
        assert!(t.get(k).is_some(), "{k} missing from /status: {t}");
    }
    assert_eq!(p.get("/nope").0, 404);
    assert_eq!(p.get("/livez").0, 200);
    assert_no_leaks(
        &[
            ("/metrics", &m),
            ("/status", &s.to_string()),
            ("log", &p.logs()),
        ],
        &server.issued(),
    );
}

/// How many log lines start with `prefix`.
fn p_logs_count(p: &Proc, prefix: &str) -> usize {
    p.log_lines()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .count()
}

/// Whether /status plans the (only) token's next attempt more than `at_least` from now, and mentions `needle`.
fn next_refresh_beyond(p: &mut Proc, at_least: Duration, needle: &str) -> bool {
    let body = p.get("/status").1;
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    body.contains(needle)
        && status["tokens"][0]["next_refresh"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_some_and(|t| t > std::time::SystemTime::now() + at_least)
}
