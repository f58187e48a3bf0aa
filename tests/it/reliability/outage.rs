//! Scenario 2: an outage across `refresh_time`: readiness turns at `refresh_time`, returns promptly after recovery, and the requests made meanwhile follow the backoff schedule and `Retry-After`.

use std::time::{Duration, Instant, SystemTime};

use super::common::*;
use super::report::Row;
use crate::helpers::*;

fn unavailable(retry_after: Option<&str>) -> Behavior {
    Behavior::Respond {
        status: 503,
        content_type: "application/json".into(),
        body: r#"{"message":"maintenance"}"#.into(),
        headers: retry_after
            .map(|r| vec![("Retry-After".to_string(), r.to_string())])
            .unwrap_or_default(),
    }
}

fn ms(d: f64) -> String {
    format!("{:.0} ms", d * 1000.0)
}

#[test]
fn reliability_02_outage_across_refresh_time() {
    let mut row = Row::new(
        "02",
        "HTTP 503 from the first planned refresh of a 5 s token (valid 4 s) until well past its refresh_time: \
         plain 503, then 503 with `Retry-After: 2`, then plain again; then recovery",
        "/readyz turns 503 at refresh_time (20 ms probe); /livez stays 200; every gap between attempts >= min_backoff \
         (200 ms) but the last chances just before refresh_time; gaps after a `Retry-After: 2` answer >= 2 s; total attempts within the \
         schedule's bound; /readyz 200 again within max_backoff (1 s, plus 1.5 s of slack for a loaded machine) of recovery",
    );
    let (min_backoff, max_backoff) = (0.2, 1.0);
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue_f(5.0));
    let mut cfg = Cfg::new(&server.url());
    cfg.window = (0.3, 0.4);
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    let (_, _, refresh_time, _, _) = json_times(&sb).unwrap();
    // refresh_time on the monotonic clock, to compare with the server's request times.
    let refresh_instant = Instant::now()
        + refresh_time
            .duration_since(SystemTime::now())
            .unwrap_or_default();
    let n0 = server.seen().len();
    server.set(unavailable(None));
    let outage_start = Instant::now();
    let probe = Probe::start(p.wait_admin(), Duration::from_millis(20));

    // Phase 1: plain 503 until half a second past refresh_time.
    let past = refresh_time + Duration::from_millis(500);
    wait_until(Duration::from_secs(10), "refresh_time to pass", || {
        SystemTime::now() > past
    });
    let mid_status = status(&mut p);
    assert_eq!(mid_status["ready"], false, "{mid_status}");
    assert_eq!(
        mid_status["last_error"]["kind"], "server_error",
        "{mid_status}"
    );

    // Phase 2: 503 with Retry-After: 2.
    let n_ra = server.seen().len();
    server.set(unavailable(Some("2")));
    wait_until(
        Duration::from_secs(15),
        "three attempts under Retry-After",
        || server.seen().len() >= n_ra + 3,
    );
    // Phase 3: plain 503 again.
    let n_plain = server.seen().len();
    server.set(unavailable(None));
    wait_until(Duration::from_secs(10), "three more attempts", || {
        server.seen().len() >= n_plain + 3
    });
    // Recovery.
    let n_end = server.seen().len();
    server.set(Behavior::issue(60));
    let recovered = Instant::now();
    let addr = p.wait_admin();
    wait_until(Duration::from_secs(10), "ready after recovery", || {
        http_get(addr, "/readyz").is_some_and(|r| r.0 == 200)
    });
    let back_after = recovered.elapsed().as_secs_f64();
    let outage = (recovered - outage_start).as_secs_f64();
    let samples = probe.stop();

    // Readiness turned exactly at refresh_time.
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.wall + s.latency + Duration::from_millis(30) < refresh_time)
        .collect();
    let after: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.wall > refresh_time + Duration::from_millis(60) && s.at + s.latency < recovered
        })
        .collect();
    assert!(
        before.len() > 10 && after.len() > 50,
        "{} {}",
        before.len(),
        after.len()
    );
    assert!(
        before.iter().all(|s| s.ready == 200),
        "not ready before refresh_time: {:?}",
        before.iter().find(|s| s.ready != 200)
    );
    assert!(
        after.iter().all(|s| s.ready == 503),
        "ready after refresh_time during the outage: {:?}",
        after.iter().find(|s| s.ready != 503)
    );
    assert!(samples.iter().all(|s| s.live == 200), "liveness failed");
    let flip = samples
        .iter()
        .find(|s| s.ready != 200)
        .map(|s| match s.wall.duration_since(refresh_time) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
        .unwrap();
    assert!(
        back_after <= max_backoff + 1.5,
        "ready {back_after:.2} s after recovery, max_backoff is {max_backoff} s"
    );

    // The requests made during the outage.
    let seen: Vec<Instant> = server.seen()[n0..=n_end].iter().map(|s| s.at).collect();
    let gap = |i: usize| (seen[i + 1] - seen[i]).as_secs_f64();
    let gaps: Vec<f64> = (0..seen.len() - 1).map(gap).collect();
    // Only the last chances just before refresh_time may come sooner than min_backoff: no hot loop.
    let short: Vec<usize> = (0..gaps.len())
        .filter(|&i| gaps[i] < min_backoff - 0.02)
        .collect();
    assert!(
        short.len() <= 2
            && short
                .iter()
                .all(|&i| seen[i + 1] < refresh_instant + Duration::from_secs(1)),
        "attempts closer than min_backoff other than the last chances before refresh_time: {gaps:?}"
    );
    // Every answer with Retry-After: 2 was followed by at least 2 s of quiet.
    let ra_gaps: Vec<f64> = (n_ra - n0..n_plain - n0).map(gap).collect();
    assert!(
        ra_gaps.iter().all(|g| *g >= 1.98),
        "Retry-After not honoured: {ra_gaps:?}"
    );
    // Plain 503: backoff never exceeds max_backoff, so the retries keep coming (1 s of slack for a loaded machine;
    // an uncapped backoff after this many failures would be far longer).
    let plain_gaps: Vec<f64> = (n_plain - n0..n_end - n0).map(gap).collect();
    assert!(
        plain_gaps.iter().all(|g| *g <= max_backoff + 1.0),
        "{plain_gaps:?}"
    );
    let attempts = n_end - n0;
    let ra_time = (seen[n_plain - n0] - seen[n_ra - n0]).as_secs_f64();
    let bound =
        ((outage - ra_time) / min_backoff).floor() as usize + (ra_time / 2.0).ceil() as usize + 3;
    assert!(
        attempts <= bound,
        "{attempts} attempts in {outage:.1} s; the schedule allows {bound}"
    );

    let (_, metrics) = p.get("/metrics");
    let errors = metric(
        &metrics,
        "token_vendor_refresh_errors_total",
        &[("token", "svc"), ("kind", "server_error")],
    );
    assert_eq!(errors as usize, attempts, "{metrics}");
    // The outputs are written before the state is published: wait for the failure count to reset.
    wait_status(
        &mut p,
        Duration::from_secs(10),
        "consecutive_failures 0",
        |s| s["consecutive_failures"] == 0,
    );
    check_outputs(&sb, &cfg.outputs, &server.issued()).unwrap();
    assert_eq!(
        sb.read("out/token").unwrap(),
        *server.issued().last().unwrap()
    );

    row.figure(format!("readiness turned {} after refresh_time", ms(flip)));
    row.figure(format!(
        "{attempts} attempts in a {outage:.1} s outage (schedule bound {bound}); shortest gap {}, gaps after Retry-After {}-{}",
        ms(gaps.iter().cloned().fold(f64::MAX, f64::min)),
        ms(ra_gaps.iter().cloned().fold(f64::MAX, f64::min)),
        ms(ra_gaps.iter().cloned().fold(0.0, f64::max)),
    ));
    row.figure(format!("ready {} after recovery", ms(back_after)));
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    let mid = mid_status.to_string();
    scan(
        &mut row,
        &mut p,
        &[("/status during the outage", &mid)],
        &secrets,
    );
    row.pass();
}
