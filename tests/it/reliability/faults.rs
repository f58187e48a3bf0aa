//! Scenario 1: every fault of the token server while a valid token is published (a lifetime of 0 s or less is one), and the odd-but-valid answers that must be accepted.

use std::time::{Duration, Instant};

use serde_json::json;

use super::common::*;
use super::report::Row;
use crate::helpers::*;

const HTML_MARKER: &str = "LOGIN-PAGE-MARKER-7f3a";
const TEN_MIB: usize = 10 * 1024 * 1024;
/// The lifetime of the token published before each fault: valid() holds for 18 s, longer than any case observes.
const LIFETIME: i64 = 20;
/// `default_lifetime` in the configs, so that fallbacks are visible.
const DEFAULT_LIFETIME: f64 = 6.0;

enum Expect {
    /// A fault: the published token is kept; `attempts` failed requests are observed.
    Fault {
        kind: &'static str,
        says: &'static str,
        attempts: usize,
        /// Minimum spacing between attempts the schedule must keep (Retry-After, or max_backoff for permanent errors).
        min_gap: Option<f64>,
        memory: bool,
    },
    /// Not a fault: published with this lifetime (`None`: the configured default, with a warning logged once).
    Accepted { lifetime: Option<(f64, f64)> },
}

struct Case {
    id: &'static str,
    injected: &'static str,
    behavior: Behavior,
    /// The server revokes the configured secret instead of changing behaviour.
    revoke: bool,
    expect: Expect,
}

fn respond(status: u16, ct: &str, body: &str, headers: &[(&str, &str)]) -> Behavior {
    Behavior::Respond {
        status,
        content_type: ct.into(),
        body: body.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn issue_with(
    expires_in: Option<serde_json::Value>,
    token_type: &str,
    jwt: Option<i64>,
) -> Behavior {
    Behavior::Issue {
        expires_in,
        token_type: token_type.into(),
        jwt_exp_in: jwt,
    }
}

fn fault(kind: &'static str, says: &'static str, attempts: usize) -> Expect {
    Expect::Fault {
        kind,
        says,
        attempts,
        min_gap: None,
        memory: false,
    }
}

fn cases() -> Vec<Case> {
    let html = format!(
        "<!DOCTYPE html><html><body><h1>{HTML_MARKER}</h1><form>password</form></body></html>"
    );
    let c = |id, injected, behavior, expect| Case {
        id,
        injected,
        behavior,
        revoke: false,
        expect,
    };
    vec![
        c(
            "01a",
            "HTTP 500, `text/html` error page",
            respond(500, "text/html", &html, &[]),
            fault("server_error", "HTML page", 2),
        ),
        c(
            "01b",
            "HTTP 503 `temporarily_unavailable` JSON with `Retry-After: 2`",
            respond(
                503,
                "application/json",
                r#"{"error":"temporarily_unavailable"}"#,
                &[("Retry-After", "2")],
            ),
            Expect::Fault {
                kind: "temporarily_unavailable",
                says: "HTTP 503",
                attempts: 2,
                min_gap: Some(2.0),
                memory: false,
            },
        ),
        c(
            "01c",
            "HTTP 429 with `Retry-After: 2`",
            respond(
                429,
                "application/json",
                r#"{"error":"slow_down"}"#,
                &[("Retry-After", "2")],
            ),
            Expect::Fault {
                kind: "rate_limited",
                says: "HTTP 429",
                attempts: 2,
                min_gap: Some(2.0),
                memory: false,
            },
        ),
        c(
            "01d",
            "request read, never answered (client timeout 1 s)",
            Behavior::Hang,
            fault("timeout", "timed out", 2),
        ),
        c(
            "01e",
            "HTTP 200 whose body arrives one byte per second",
            Behavior::Drip,
            fault("timeout", "timed out", 2),
        ),
        c(
            "01f",
            "headers and part of the body, then a TCP reset",
            Behavior::ResetMidBody,
            fault("network", "failed", 2),
        ),
        c(
            "01g",
            "HTTP 200 with JSON cut off mid-object",
            respond(
                200,
                "application/json",
                r#"{"access_token":"tok-truncated-9c1d","token_type":"Bea"#,
                &[],
            ),
            fault("invalid_response", "ends early", 2),
        ),
        c(
            "01h",
            "HTTP 200, `text/html` login page",
            respond(200, "text/html; charset=utf-8", &html, &[]),
            fault("invalid_response", "HTML page", 2),
        ),
        c(
            "01i",
            "HTTP 200 with a 10 MiB body and its Content-Length",
            Behavior::Huge(TEN_MIB),
            Expect::Fault {
                kind: "response_too_large",
                says: "larger than 64 KiB",
                attempts: 2,
                min_gap: None,
                memory: true,
            },
        ),
        c(
            "01j",
            "HTTP 200 with a 10 MiB body ended by closing the connection",
            Behavior::HugeUnframed(TEN_MIB),
            Expect::Fault {
                kind: "response_too_large",
                says: "larger than 64 KiB",
                attempts: 2,
                min_gap: None,
                memory: true,
            },
        ),
        c(
            "01k",
            "`token_type: mac`",
            issue_with(Some(json!(20)), "mac", None),
            // Retrying cannot change the token type the server issues: permanent, waits like invalid_client.
            Expect::Fault {
                kind: "unsupported_token_type",
                says: "only Bearer",
                attempts: 2,
                min_gap: Some(1.0),
                memory: false,
            },
        ),
        c(
            "01l",
            "HTTP 401 `invalid_client`",
            Behavior::error(401, "invalid_client"),
            Expect::Fault {
                kind: "invalid_client",
                says: "HTTP 401",
                attempts: 2,
                min_gap: Some(1.0),
                memory: false,
            },
        ),
        c(
            "01m",
            "HTTP 400 `invalid_scope`",
            Behavior::error(400, "invalid_scope"),
            Expect::Fault {
                kind: "invalid_scope",
                says: "HTTP 400",
                attempts: 2,
                min_gap: Some(1.0),
                memory: false,
            },
        ),
        Case {
            id: "01n",
            injected:
                "server accepts only a new secret (old one revoked); the file still has the old one",
            behavior: Behavior::issue(LIFETIME),
            revoke: true,
            expect: Expect::Fault {
                kind: "invalid_client",
                says: "HTTP 401",
                attempts: 2,
                min_gap: Some(1.0),
                memory: false,
            },
        },
        c(
            "01o",
            "`token_type: bearer`",
            issue_with(Some(json!(20)), "bearer", None),
            Expect::Accepted {
                lifetime: Some((20.0, 20.0)),
            },
        ),
        c(
            "01p",
            "`expires_in: \"20\"` (a string)",
            issue_with(Some(json!("20")), "Bearer", None),
            Expect::Accepted {
                lifetime: Some((20.0, 20.0)),
            },
        ),
        // The server says the token is already expired: not replaced by default_lifetime, retried.
        c(
            "01q",
            "`expires_in: 0`",
            issue_with(Some(json!(0)), "Bearer", None),
            fault("invalid_response", "lives 0 s", 2),
        ),
        c(
            "01r",
            "`expires_in: -30`",
            issue_with(Some(json!(-30)), "Bearer", None),
            fault("invalid_response", "lives -30 s", 2),
        ),
        c(
            "01s",
            "no `expires_in`; the token is a JWT with `exp` = now + 20 s",
            issue_with(None, "Bearer", Some(20)),
            Expect::Accepted {
                lifetime: Some((18.5, 20.0)),
            },
        ),
        c(
            "01t",
            "no `expires_in`; opaque token",
            issue_with(None, "Bearer", None),
            Expect::Accepted { lifetime: None },
        ),
        c(
            "01u",
            "`expires_in: 1e300`",
            issue_with(Some(json!(1e300)), "Bearer", None),
            Expect::Accepted { lifetime: None },
        ),
    ]
}

#[test]
fn reliability_01_faults_keep_the_published_token() {
    let threads: Vec<_> = cases()
        .into_iter()
        .map(|case| {
            let id = case.id;
            (id, std::thread::spawn(move || run_case(case)))
        })
        .collect();
    let failed: Vec<&str> = threads
        .into_iter()
        .filter_map(|(id, t)| t.join().is_err().then_some(id))
        .collect();
    assert!(
        failed.is_empty(),
        "cases failed: {failed:?} (see their panics above)"
    );
}

fn run_case(case: Case) {
    match case.expect {
        Expect::Fault { .. } => run_fault(case),
        Expect::Accepted { .. } => run_accepted(case),
    }
}

fn run_fault(case: Case) {
    let Expect::Fault {
        kind,
        says,
        attempts,
        min_gap,
        memory,
    } = case.expect
    else {
        unreachable!()
    };
    let mut row = Row::new(
        case.id,
        case.injected,
        &format!(
            "outputs byte-for-byte unchanged; /readyz and /livez 200 at every 50 ms probe; /status kind `{kind}`; \
             `token_vendor_refresh_errors_total{{kind=\"{kind}\"}}` counts{}{}",
            match min_gap {
                Some(g) => format!("; attempts at least {g} s apart"),
                None => String::new(),
            },
            if memory { "; peak memory does not grow with the body" } else { "" }
        ),
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(LIFETIME));
    let mut cfg = Cfg::new(&server.url());
    cfg.extra = format!("    default_lifetime: {DEFAULT_LIFETIME}s\n");
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    let before = snapshot(&sb, &cfg.outputs);
    check_outputs(&sb, &cfg.outputs, &server.issued()).unwrap();
    let (_, hwm0) = mem_kib(p.pid());

    let n0 = server.seen().len();
    if case.revoke {
        server.accept_only(&[(cfg.client_id.as_str(), "the-rotated-secret")]);
    } else {
        server.set(case.behavior.clone());
    }
    let switched = Instant::now();
    let probe = Probe::start(p.wait_admin(), Duration::from_millis(50));
    wait_until(Duration::from_secs(20), "the faulty attempts", || {
        server.seen().len() >= n0 + attempts
    });
    let addr = p.wait_admin();
    let failures_seen = eventually(Duration::from_secs(5), || {
        http_get(addr, "/status").is_some_and(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(&b).is_ok_and(|v| {
                v["tokens"][0]["consecutive_failures"].as_u64().unwrap_or(0) >= attempts as u64
            })
        })
    });
    let samples = probe.stop();
    assert!(
        failures_seen,
        "{}: failures not counted\n{}",
        case.id,
        p.describe()
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "{}: the daemon exited\n{}",
        case.id,
        p.describe()
    );

    // The published files are untouched.
    assert!(
        snapshot(&sb, &cfg.outputs) == before,
        "{}: outputs changed",
        case.id
    );
    // Readiness and liveness held throughout, with prompt answers.
    assert!(samples.len() >= 10, "{}: {} probes", case.id, samples.len());
    let bad: Vec<_> = samples
        .iter()
        .filter(|s| s.ready != 200 || s.live != 200)
        .collect();
    assert!(
        bad.is_empty(),
        "{}: probes failed: {bad:?}\n{}",
        case.id,
        p.describe()
    );
    let slowest = samples.iter().map(|s| s.latency).max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "{}: a probe took {slowest:?}",
        case.id
    );

    let st = status(&mut p);
    assert_eq!(st["ready"], true, "{}: {st}", case.id);
    assert_eq!(st["last_error"]["kind"], kind, "{}: {st}", case.id);
    let message = st["last_error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(says), "{}: {message}", case.id);
    assert!(
        message.contains(&server.url()),
        "{}: the message names the URL: {message}",
        case.id
    );
    assert!(!message.contains(HTML_MARKER), "{}: {message}", case.id);

    let (_, metrics) = p.get("/metrics");
    let errors = metric(
        &metrics,
        "token_vendor_refresh_errors_total",
        &[("token", "svc"), ("kind", kind)],
    );
    assert!(
        errors >= attempts as f64,
        "{}: {errors}\n{metrics}",
        case.id
    );
    let result = if ["invalid_client", "invalid_scope", "unsupported_token_type"].contains(&kind) {
        "permanent_error"
    } else {
        "transient_error"
    };
    assert!(
        metric(
            &metrics,
            "token_vendor_refresh_total",
            &[("token", "svc"), ("result", result)]
        ) >= attempts as f64,
        "{}\n{metrics}",
        case.id
    );
    assert_eq!(
        metric(&metrics, "token_vendor_token_valid", &[("token", "svc")]),
        1.0,
        "{}",
        case.id
    );
    assert_eq!(
        metric(
            &metrics,
            "token_vendor_output_write_errors_total",
            &[("token", "svc")]
        ),
        0.0,
        "{}",
        case.id
    );

    let seen: Vec<Instant> = server.seen()[n0..].iter().map(|s| s.at).collect();
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let min = gaps.iter().cloned().fold(f64::MAX, f64::min);
    if let Some(g) = min_gap {
        assert!(
            min >= g - 0.05,
            "{}: attempts {gaps:?} closer than {g} s",
            case.id
        );
    }
    row.figure(format!(
        "{} failed attempts in {:.1} s",
        seen.len(),
        switched.elapsed().as_secs_f64()
    ));
    if !gaps.is_empty() {
        row.figure(format!("shortest gap {min:.2} s"));
    }
    row.figure(format!(
        "{} probes, slowest {} ms",
        samples.len(),
        slowest.as_millis()
    ));
    if memory {
        let (rss, hwm) = mem_kib(p.pid());
        let growth = hwm.saturating_sub(hwm0);
        assert!(
            growth < 4 * 1024,
            "{}: peak memory grew by {growth} KiB (RSS {rss} KiB)",
            case.id
        );
        row.figure(format!(
            "peak RSS {} KiB -> {} KiB (+{growth} KiB)",
            hwm0, hwm
        ));
    }
    if kind == "invalid_response" || kind == "server_error" {
        assert!(
            !p.logs().contains(HTML_MARKER),
            "{}: the HTML page was echoed",
            case.id
        );
    }

    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    secrets.push("tok-truncated-9c1d".into());
    secrets.push(HTML_MARKER.into());
    scan(
        &mut row,
        &mut p,
        &[("last_error.message", &message)],
        &secrets,
    );
    row.pass();
}

fn run_accepted(case: Case) {
    let Expect::Accepted { lifetime } = case.expect else {
        unreachable!()
    };
    let mut row = Row::new(
        case.id,
        case.injected,
        &match lifetime {
            Some((lo, hi)) if lo == hi => format!("accepted: every output holds the issued token; lifetime {lo} s; ready; no error"),
            Some((lo, hi)) => format!("accepted: every output holds the issued token; lifetime from the JWT exp ({lo}-{hi} s); ready; no error"),
            None => format!("accepted with `default_lifetime` ({DEFAULT_LIFETIME} s); ready; the fallback is logged once over several refreshes"),
        },
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(case.behavior.clone());
    let mut cfg = Cfg::new(&server.url());
    cfg.extra = format!("    default_lifetime: {DEFAULT_LIFETIME}s\n");
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    // Each file is replaced atomically, one after the other: while a refresh is being written, two files
    // may hold consecutive tokens for a few milliseconds. Every read must be an issued token, and the
    // outputs must agree once that write is done.
    let mut found = Vec::new();
    let agreed = eventually(Duration::from_secs(2), || {
        found = check_outputs(&sb, &cfg.outputs, &server.issued())
            .unwrap_or_else(|e| panic!("{}: {e}", case.id));
        found.iter().all(|t| *t == found[0])
    });
    assert!(agreed, "{}: the outputs never agreed: {found:?}", case.id);
    let (_, _, _, _, expires_in) = json_times(&sb).unwrap();
    let (lo, hi) = lifetime.unwrap_or((DEFAULT_LIFETIME, DEFAULT_LIFETIME));
    assert!(
        expires_in >= lo && expires_in <= hi,
        "{}: expires_in {expires_in}, want {lo}-{hi}",
        case.id
    );
    let st = status(&mut p);
    assert_eq!(st["ready"], true, "{}: {st}", case.id);
    assert!(st["last_error"].is_null(), "{}: {st}", case.id);
    row.figure(format!("published lifetime {expires_in} s"));
    if lifetime.is_none() {
        // A default-lifetime token refreshes every ~0.3-0.5 s here: watch several refreshes.
        wait_until(Duration::from_secs(15), "four refreshes", || {
            server.issued().len() >= 5
        });
        let warnings = logs_with(&p, "the response has no usable expires_in").len();
        assert_eq!(
            warnings,
            1,
            "{}: the fallback must be logged once, not per refresh\n{}",
            case.id,
            p.logs()
        );
        row.figure(format!(
            "{} refreshes, 1 fallback warning",
            server.issued().len()
        ));
    }
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    scan(&mut row, &mut p, &[], &secrets);
    row.pass();
}
