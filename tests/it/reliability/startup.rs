//! Scenario 7: starting while the token server is down: `run` is live but not ready and vends as soon as the server is up; `once` gives up at its timeout with one clear line.

use std::time::{Duration, Instant};

use super::common::*;
use super::report::Row;
use crate::helpers::*;

#[test]
fn reliability_07a_run_waits_for_the_server_and_vends_at_once() {
    let mut row = Row::new(
        "07a",
        "`run` started while nothing listens on the token URL (connection refused); the server comes up 2 s later",
        "/livez 200 and /readyz 503 naming the error while down; /status kind `network`; no output written; \
         ready and every output written within max_backoff (1 s, plus 1.5 s of slack for a loaded machine) of the server coming up",
    );
    let sb = Sandbox::new();
    let mut server = TokenServer::start(Behavior::issue(60));
    server.down();
    let cfg = Cfg::new(&server.url());
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    let addr = p.wait_admin();
    wait_until(Duration::from_secs(10), "three failed attempts", || {
        http_get(addr, "/status").is_some_and(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(&b)
                .is_ok_and(|v| v["tokens"][0]["consecutive_failures"].as_u64().unwrap_or(0) >= 3)
        })
    });
    let (live, live_body) = p.get("/livez");
    assert_eq!(live, 200, "{live_body}");
    let (ready, ready_body) = p.get("/readyz");
    assert_eq!(ready, 503, "{ready_body}");
    assert!(
        ready_body.contains("no token yet; last error: network"),
        "{ready_body}"
    );
    let st = status(&mut p);
    assert_eq!(st["last_error"]["kind"], "network", "{st}");
    let message = st["last_error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&server.url()) && message.contains("could not connect"),
        "{message}"
    );
    assert!(!sb.path("out/token").exists());

    server.up();
    let up = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "ready once the server is up",
        || http_get(addr, "/readyz").is_some_and(|r| r.0 == 200),
    );
    let took = up.elapsed().as_secs_f64();
    // max_backoff is 1 s; 1.5 s of slack for a loaded machine (the schedule is unit-tested with a paused clock).
    assert!(took < 2.5, "ready {took:.2} s after the server came up");
    let found = check_outputs(&sb, &cfg.outputs, &server.issued()).unwrap();
    assert_eq!(found[0], server.issued()[0]);
    row.figure(format!(
        "{} failed attempts while down; ready {:.0} ms after the server came up",
        st["consecutive_failures"],
        took * 1000.0
    ));
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    scan(
        &mut row,
        &mut p,
        &[
            ("/readyz while down", &ready_body),
            ("/status while down", &st.to_string()),
        ],
        &secrets,
    );
    row.pass();
}

#[test]
fn reliability_07b_once_gives_up_at_its_timeout_with_one_clear_line() {
    let mut row = Row::new(
        "07b",
        "`once --timeout 5s` while nothing listens on the token URL",
        "exit status 1 after 5 s (not before, not much later); exactly one `FAILED` line naming the token, the URL \
         and the last error; no output written",
    );
    let sb = Sandbox::new();
    let mut server = TokenServer::start(Behavior::issue(60));
    let url = server.url();
    server.down();
    let cfg = Cfg::new(&url);
    let path = cfg.write(&sb);
    let started = Instant::now();
    let (st, out, err) = run_to_end(
        &[
            "once",
            "--config",
            path.to_str().unwrap(),
            "--timeout",
            "5s",
        ],
        sb.dir.path(),
        &[],
        Duration::from_secs(20),
    );
    let took = started.elapsed().as_secs_f64();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!((5.0..7.0).contains(&took), "took {took:.2} s");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(
        line.starts_with("token-vendor: token svc FAILED")
            && line.contains(&url)
            && line.contains("could not connect"),
        "{line}"
    );
    assert!(!sb.path("out/token").exists());
    assert!(sb.temp_files().is_empty());
    row.figure(format!("exit 1 after {took:.2} s: `{line}`"));
    let texts = [("once stderr", err.as_str()), ("once stdout", out.as_str())];
    let secrets: Vec<String> = cfg.secrets().into_iter().filter(|s| s.len() >= 6).collect();
    assert_no_leaks(&texts, &secrets);
    row.scanned(2, (err.len() + out.len()) as u64);
    row.pass();
}
