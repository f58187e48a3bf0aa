//! Issue 16 §1, §3 and §6, what servers send, through the real binary: a discovered token endpoint is held to the
//! transport rule (https issuer, proxy) wherever it is adopted; every server string reaches logs, `/status`,
//! metrics and stderr cleaned and bounded; a token that lives 0 s or less is an `invalid_response`, never served.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::reliability::common::{metric, scan};
use crate::reliability::report::Row;

/// One token `svc` from `url`, its output `out/token`; `extra` goes into the token.
fn config(sb: &Sandbox, url: &str, extra: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nrefresh: {{min_backoff: 200ms, max_backoff: 1s}}\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret: s3cr3t-inputs\n{extra}    outputs:\n      - {{path: {d}/out/token}}\n"
        ),
    )
}

fn status(p: &mut Proc) -> Value {
    serde_json::from_str(&p.get("/status").1).unwrap_or(Value::Null)
}

#[test]
fn h06c_a_token_that_lives_0_s_or_less_is_an_invalid_response_never_served() {
    let mut row = Row::new(
        "h06c",
        "the token server answers 200 with a token whose `expires_in` is 0, -30 or \"0\" (the token is a JWT with a valid exp, so no fallback could make it look usable); then `once` gets a 1 s token",
        "`run`: never ready, /status and metrics kind `invalid_response` (retried, not permanent), no output written; `once --timeout 2s`: exit 1 naming invalid_response after more than one attempt, no output; the 1 s token: exit 1 at once, not written",
    );
    let sb = Sandbox::new();
    let mut figures = Vec::new();
    for expires_in in [json!(0), json!(-30), json!("0")] {
        let server = TokenServer::start(Behavior::Issue {
            expires_in: Some(expires_in.clone()),
            token_type: "Bearer".into(),
            jwt_exp_in: Some(600),
        });
        let cfg = config(&sb, &server.url(), "");
        let mut p = Proc::run(&cfg);
        wait_until(Duration::from_secs(20), "three attempts", || {
            server.seen().len() >= 3
        });
        let st = status(&mut p);
        let t = &st["tokens"][0];
        assert_eq!(t["last_error"]["kind"], "invalid_response", "{st}");
        let shown = if expires_in == json!(-30) { "-30" } else { "0" };
        assert!(
            t["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("lives {shown} s"))),
            "{st}"
        );
        assert_eq!(p.get("/readyz").0, 503, "{}", p.describe());
        let metrics = p.get("/metrics").1;
        let errors = metric(
            &metrics,
            "token_vendor_refresh_errors_total",
            &[("token", "svc"), ("kind", "invalid_response")],
        );
        assert!(errors >= 2.0, "{metrics}");
        assert!(!sb.path("out/token").exists(), "a 0 s token was written");
        let run_attempts = server.seen().len();
        let mut secrets = vec!["s3cr3t-inputs".to_string(), "the-client".to_string()];
        secrets.extend(server.issued());
        scan(&mut row, &mut p, &[], &secrets);
        drop(p);

        let before = server.seen().len();
        let (st, out, err) = run_once(&cfg, "2s");
        assert_eq!(st.code(), Some(1), "{out}{err}");
        assert!(
            err.contains("invalid_response") && err.contains(&format!("lives {shown} s")),
            "{err}"
        );
        let once_attempts = server.seen().len() - before;
        assert!(once_attempts >= 2, "retried until the timeout: {err}");
        assert!(!sb.path("out/token").exists(), "once wrote a 0 s token");
        figures.push(format!(
            "expires_in {expires_in}: run {run_attempts} attempts, never ready; once {once_attempts} attempts, exit 1, nothing written"
        ));
    }
    // Positive but shorter than the refresh buffer: `once` reports it at once and writes nothing.
    let server = TokenServer::start(Behavior::issue(1));
    let cfg = config(&sb, &server.url(), "");
    let (st, out, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("not written") && err.contains("after 1 attempt"),
        "{err}"
    );
    assert!(
        !sb.path("out/token").exists(),
        "once wrote a token it called not valid"
    );
    assert_eq!(server.seen().len(), 1);
    figures.push(format!("expires_in 1: `{}`", first_failed(&err)));
    for f in figures {
        row.figure(f);
    }
    row.pass();
}

/// The `FAILED` line of `once`'s stderr from its error on, shortened for the table.
fn first_failed(err: &str) -> String {
    let line = err
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_default();
    let from = line.find("attempt(s): ").map_or(0, |i| i + 12);
    line[from..].chars().take(110).collect::<String>() + "..."
}
