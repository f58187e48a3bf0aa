//! Scenario 3: permanent errors are not retried faster than `max_backoff`, whatever else happens, and a Kubernetes-style secret rotation is used by the very next attempt.

use std::time::{Duration, Instant};

use super::common::*;
use super::report::Row;
use crate::helpers::*;

#[test]
fn reliability_03a_invalid_client_is_asked_at_most_once_per_max_backoff() {
    let mut row = Row::new(
        "03a",
        "HTTP 401 `invalid_client` on every refresh; meanwhile unrelated files in the watched directories change and \
         SIGHUP arrives (neither changes the credentials)",
        "every gap between attempts >= max_backoff (2 s); outputs unchanged; still ready while valid()",
    );
    let max_backoff = 2.0;
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(30));
    let mut cfg = Cfg::new(&server.url());
    cfg.max_backoff = "2s";
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    let before = snapshot(&sb, &cfg.outputs);
    let n0 = server.seen().len();
    server.set(Behavior::error(401, "invalid_client"));
    let started = Instant::now();
    let mut nudges = 0u32;
    while server.seen().len() < n0 + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "too few attempts"
        );
        // Noise that must not shorten the backoff: a file next to the secret and the config, and a reload request.
        sb.write("unrelated.txt", &format!("{nudges}"));
        if nudges.is_multiple_of(3) {
            p.signal("HUP");
        }
        nudges += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let seen: Vec<Instant> = server.seen()[n0..].iter().map(|s| s.at).collect();
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(
        gaps.iter().all(|g| *g >= max_backoff - 0.02),
        "invalid_client retried faster than max_backoff: {gaps:?}"
    );
    assert!(snapshot(&sb, &cfg.outputs) == before);
    let st = status(&mut p);
    assert_eq!(st["ready"], true);
    assert_eq!(st["last_error"]["kind"], "invalid_client");
    let rate = (seen.len() - 1) as f64 / (seen[seen.len() - 1] - seen[0]).as_secs_f64();
    row.figure(format!(
        "{} attempts, gaps {:.2}-{:.2} s ({rate:.2}/s) despite {nudges} file changes and {} SIGHUPs",
        seen.len(),
        gaps.iter().cloned().fold(f64::MAX, f64::min),
        gaps.iter().cloned().fold(0.0, f64::max),
        nudges.div_ceil(3)
    ));
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    scan(&mut row, &mut p, &[], &secrets);
    row.pass();
}

#[test]
fn reliability_03b_a_rotated_secret_is_used_by_the_next_attempt() {
    let mut row = Row::new(
        "03b",
        "the server revokes the old secret (401 `invalid_client`, max_backoff 30 s); then the Secret volume is \
         updated the kubelet's way (`..data` symlink swap)",
        "the first attempt after the swap sends the new secret, within 5 s (not after max_backoff); the new token is \
         published; every later attempt uses the new secret",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(30));
    let mut cfg = Cfg::new(&server.url());
    cfg.max_backoff = "30s";
    let new_secret = format!("rotated-{}{}", rand_hex(), rand_hex());
    let secret_dir = sb.path("secret-volume");
    k8s_secret_update(&secret_dir, &[("client-secret", &cfg.secret)]);
    cfg.secret_file = Some(secret_dir.join("client-secret"));
    server.accept_only(&[(cfg.client_id.as_str(), cfg.secret.as_str())]);
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    let first = sb.read("out/token").unwrap();

    // The server rotates: only the new secret works now.
    let n0 = server.seen().len();
    server.accept_only(&[(cfg.client_id.as_str(), new_secret.as_str())]);
    wait_until(Duration::from_secs(10), "a refused refresh", || {
        server.seen().len() > n0
    });
    let addr = p.wait_admin();
    wait_until(Duration::from_secs(5), "invalid_client in /status", || {
        http_get(addr, "/status").is_some_and(|(_, b)| b.contains("invalid_client"))
    });
    let n1 = server.seen().len();
    let rotated = Instant::now();
    k8s_secret_update(&secret_dir, &[("client-secret", &new_secret)]);
    wait_until(
        Duration::from_secs(10),
        "an attempt after the rotation",
        || server.seen().len() > n1,
    );
    let next = server.seen()[n1].clone();
    let delay = (next.at - rotated).as_secs_f64();
    assert_eq!(next.client_secret.as_deref(), Some(new_secret.as_str()));
    // Far below max_backoff (30 s), with slack for a loaded machine: the watcher triggered the attempt.
    assert!(delay < 5.0, "the rotation was used only after {delay:.2} s");
    // Outputs are replaced one after the other: wait until every one holds the new token.
    wait_until(
        Duration::from_secs(5),
        "the new token in every output",
        || {
            check_outputs(&sb, &cfg.outputs, &server.issued())
                .is_ok_and(|f| f.iter().all(|t| *t != first && *t == f[0]))
        },
    );
    wait_ready(&mut p, Duration::from_secs(5));
    assert!(server.seen()[n1..]
        .iter()
        .all(|s| s.client_secret.as_deref() == Some(new_secret.as_str())));
    // The outputs are written before the state is published: wait for the failure count to reset.
    wait_status(
        &mut p,
        Duration::from_secs(10),
        "consecutive_failures 0",
        |s| s["consecutive_failures"] == 0,
    );
    row.figure(format!(
        "first attempt after the swap {:.0} ms later, with the new secret",
        delay * 1000.0
    ));
    let mut secrets = cfg.secrets();
    secrets.push(new_secret);
    secrets.extend(server.issued());
    scan(&mut row, &mut p, &[], &secrets);
    row.pass();
}
