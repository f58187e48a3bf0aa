//! Scenario 10: nothing sensitive leaks, even at `trace` log level, with a server that echoes what it was sent, through `run`, `once`, `check` and `Debug`.
//! (Every other scenario also scans its own logs and admin answers; this one looks for trouble.)

use std::time::Duration;

use token_vendor::basic_auth;

use super::common::*;
use super::report::Row;
use crate::helpers::*;

fn config(
    sb: &Sandbox,
    url: &str,
    id: &str,
    inline: &str,
    file_secret: &str,
) -> std::path::PathBuf {
    let d = sb.dir.path().display();
    sb.write("secrets/post", &format!("{file_secret}\n"));
    sb.write(
        "c.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: \"{TRACE_ALL}\", format: json}}\nrefresh: {{window: [0.05, 0.1], min_backoff: 100ms, max_backoff: 300ms}}\n\
             tokens:\n  - name: basic\n    token_url: {url}\n    client_id: {id}\n    client_secret: {inline}\n    http: {{timeout: 1s}}\n    outputs: [{{path: {d}/out/basic}}]\n\
             \x20 - name: post\n    token_url: {url}\n    client_id: {id}-post\n    client_secret_file: {d}/secrets/post\n    auth_method: client_secret_post\n    http: {{timeout: 1s}}\n    outputs: [{{path: {d}/out/post, format: json}}]\n"
        ),
    )
}

/// `trace` for token-vendor and, named one by one (a bare `trace` leaves other crates at `debug`), for the HTTP and
/// TLS stack that handles the secrets: the most a user can ask to see. The file watcher is left out: it has no secret
/// to show, and its trace lines about the log file beside the config are what the bare level keeps off.
const TRACE_ALL: &str =
    "trace,hyper=trace,hyper_util=trace,reqwest=trace,rustls=trace,h2=trace,want=trace,mio=trace,tokio=trace";

#[test]
fn reliability_10_no_secret_or_token_leaks_anywhere() {
    let mut row = Row::new(
        "10",
        "`trace` logging; an inline secret and a file secret (Basic and post auth); the server issues tokens, then \
         echoes the client id and secret, the raw Authorization header and form body back in its error messages (401, 400, \
         an HTML 500); `once` and `check` on the same config; `Debug` of the parsed config",
        "every log line, /status, /readyz, /livez and /metrics body (taken in every phase), `once` and `check` \
         output and error message holds no secret, client id, Basic credential or issued token; `Debug` shows \
         `[REDACTED]`",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3));
    let id = format!("cid-{}", rand_hex());
    let inline = format!("inline-{}{}", rand_hex(), rand_hex());
    let file_secret = format!("file-{}{}", rand_hex(), rand_hex());
    let path = config(&sb, &server.url(), &id, &inline, &file_secret);
    let basic_header = basic_auth(&id, &inline, false);
    let mut secrets = vec![
        id.clone(),
        inline.clone(),
        file_secret.clone(),
        basic_header.trim_start_matches("Basic ").to_string(),
    ];
    let mut texts: Vec<(String, String)> = Vec::new();

    // Debug of the parsed config.
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = token_vendor::Config::parse(&text, &path).unwrap();
    for dbg in [format!("{cfg:?}"), format!("{cfg:#?}")] {
        assert!(dbg.contains("[REDACTED]"), "{dbg}");
        texts.push(("Debug of the config".into(), dbg));
    }

    let mut p = Proc::run(&path);
    let addr = p.wait_admin();
    let snap = |texts: &mut Vec<(String, String)>, phase: &str| {
        for ep in ["/status", "/readyz", "/livez", "/metrics"] {
            if let Some((_, body)) = http_get(addr, ep) {
                texts.push((format!("{ep} ({phase})"), body));
            }
        }
    };
    wait_until(Duration::from_secs(30), "several refreshes", || {
        server.issued().len() >= 10
    });
    snap(&mut texts, "refreshing");
    let echoes = vec![
        Behavior::EchoCredentials {
            status: 401,
            error: "invalid_client".into(),
        },
        Behavior::EchoCredentials {
            status: 400,
            error: "invalid_request".into(),
        },
        Behavior::EchoRequest {
            status: 400,
            error: "invalid_grant".into(),
        },
        Behavior::Respond {
            status: 500,
            content_type: "text/html".into(),
            body: format!(
                "<html><body>debug: secret={inline} {basic_header} {file_secret}</body></html>"
            ),
            headers: vec![],
        },
    ];
    for b in echoes {
        let n = server.seen().len();
        server.set(b);
        wait_until(
            Duration::from_secs(30),
            "both tokens to hit the echo",
            || server.seen().len() >= n + 4,
        );
        wait_until(Duration::from_secs(30), "the errors in /status", || {
            http_get(addr, "/status")
                .is_some_and(|(_, s)| s.matches("\"last_error\":{").count() == 2)
        });
        snap(&mut texts, "echoing");
    }
    server.set(Behavior::issue(3));
    wait_until(Duration::from_secs(30), "recovery", || {
        http_get(addr, "/readyz").is_some_and(|r| r.0 == 200)
    });
    snap(&mut texts, "recovered");
    let (st, out, err) = run_check(&path, sb.dir.path());
    assert!(st.success(), "{err}");
    assert!(
        err.contains("inline"),
        "check warns about the inline secret: {err}"
    );
    texts.push(("check stdout".into(), out));
    texts.push(("check stderr".into(), err));
    server.set(Behavior::EchoCredentials {
        status: 401,
        error: "invalid_client".into(),
    });
    let (st, out, err) = run_to_end(
        &[
            "once",
            "--config",
            path.to_str().unwrap(),
            "--timeout",
            "3s",
        ],
        sb.dir.path(),
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("token basic FAILED") && err.contains("token post FAILED"),
        "{err}"
    );
    texts.push(("once stdout".into(), out));
    texts.push(("once stderr".into(), err));

    secrets.extend(server.issued());
    let lines = p.logs().lines().count();
    let extra: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    scan(&mut row, &mut p, &extra, &secrets);
    row.figure(format!(
        "{lines} trace-level log lines, {} admin answers and command outputs; {} issued tokens and 4 credentials searched",
        texts.len(),
        server.issued().len()
    ));
    row.pass();
}
