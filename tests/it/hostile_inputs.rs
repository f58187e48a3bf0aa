//! Issue 16 §1, §3 and §6, what servers send, through the real binary: a discovered token endpoint is held to the
//! transport rule (https issuer, proxy) wherever it is adopted; every server string reaches logs, `/status`,
//! metrics and stderr cleaned and bounded; a token that lives 0 s or less is an `invalid_response`, never served.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::reliability::common::{metric, scan};
use crate::reliability::report::Row;

/// `config.yaml`: one token `svc` from `source` (`token_url: ...` or `issuer: ...`) with the secret `s3cr3t-inputs`,
/// warm-start state in `state/`, output `out/token`; `extra` goes into the token.
fn config(sb: &Sandbox, source: &str, extra: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nstate_dir: {d}/state\nrefresh: {{window: [0.3, 0.4], min_backoff: 200ms, max_backoff: 1s}}\ntokens:\n  - name: svc\n    {source}\n    client_id: the-client\n    client_secret: s3cr3t-inputs\n{extra}    outputs:\n      - {{path: {d}/out/token}}\n"
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
        let cfg = config(&sb, &format!("token_url: {}", server.url()), "");
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
    let cfg = config(&sb, &format!("token_url: {}", server.url()), "");
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

/// `run` with these environment variables, its admin server up.
fn run_with(cfg: &std::path::Path, envs: &[(&str, &str)]) -> Proc {
    let mut p = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        cfg.parent().unwrap(),
        envs,
    );
    p.wait_admin();
    p
}

/// Waits until `/status` says the token's last error is `kind`; returns its message.
fn wait_error(p: &mut Proc, kind: &str) -> String {
    let mut message = String::new();
    let seen = eventually(Duration::from_secs(20), || {
        let st = status(p);
        let e = &st["tokens"][0]["last_error"];
        message = e["message"].as_str().unwrap_or_default().to_string();
        e["kind"] == kind
    });
    assert!(seen, "no {kind} error\n{}", p.describe());
    message
}

#[test]
fn h06a_a_discovered_endpoint_keeps_the_transport_rule_wherever_it_is_adopted() {
    use crate::discovery::{doc, DocServer};
    use crate::reliability::tls::{pki, TlsFront};
    let mut row = Row::new(
        "h06a",
        "(1) an https issuer whose document names a plain-http token endpoint on 127.0.0.1; (2) HTTP_PROXY set with NO_PROXY=127.0.0.1, a loopback issuer whose document names http://localhost:<port>/token: at start, after the endpoint answers 404 and the document is fetched again, and from the document saved by a run without the proxy",
        "`discovery_invalid` with a message saying why (https issuer; the proxy would carry it) at start and from the saved document, and a warning that keeps the endpoint in hand after the refetch; the credential never reaches the proxy or a plain-http endpoint",
    );
    let sb = Sandbox::new();
    let tokens = TokenServer::start(Behavior::issue(600));
    let proxy = TokenServer::start(Behavior::issue(600));
    let proxy_env = format!("http://{}", proxy.addr);
    let env: &[(&str, &str)] = &[("HTTP_PROXY", &proxy_env), ("NO_PROXY", "127.0.0.1")];
    let wk = "/.well-known/openid-configuration";
    let local_endpoint = format!("http://127.0.0.1:{}/token", tokens.addr.port());
    let proxied_endpoint = format!("http://localhost:{}/token", tokens.addr.port());

    // (1) An https issuer's document may not move the credential to plain http, not even on loopback.
    let idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let ca = pki();
    let front = TlsFront::start(idp.addr, &ca, false);
    sb.write("ca.pem", &ca.ca_pem);
    let https_issuer = format!("https://127.0.0.1:{}", front.addr.port());
    idp.route(
        wk,
        200,
        &doc(&https_issuer, &local_endpoint, &["client_secret_basic"]),
    );
    let d = sb.dir.path().display();
    let cfg = config(
        &sb,
        &format!("issuer: {https_issuer}"),
        &format!("    http: {{ca_file: {d}/ca.pem}}\n"),
    );
    let (st, out, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("FAILED after 1 attempt(s)")
            && err.contains("is plain http but the issuer is https")
            && err.contains("(discovery_invalid)"),
        "{err}"
    );
    assert!(
        idp.hits().contains(&wk.to_string()),
        "the document was read over https"
    );
    assert!(
        tokens.seen().is_empty(),
        "a request went to the plain-http endpoint"
    );
    row.figure(format!(
        "https issuer: `once` exit 1 after 1 attempt, 0 requests to {local_endpoint}"
    ));

    // (2a) At start: a loopback issuer (NO_PROXY covers it) names an endpoint the proxy would carry.
    let issuer = idp.base();
    idp.route(
        wk,
        200,
        &doc(&issuer, &proxied_endpoint, &["client_secret_basic"]),
    );
    let cfg = config(&sb, &format!("issuer: {issuer}"), "");
    let mut p = run_with(&cfg, env);
    let message = wait_error(&mut p, "discovery_invalid");
    assert!(
        message.contains("a proxy from the environment")
            && message.contains("add localhost to NO_PROXY"),
        "{message}"
    );
    assert!(!p.ready());
    drop(p);
    let (st, out, err) = run_to_end(
        &[
            "once",
            "--config",
            cfg.to_str().unwrap(),
            "--timeout",
            "10s",
        ],
        sb.dir.path(),
        env,
        Duration::from_secs(30),
    );
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("FAILED after 1 attempt(s)") && err.contains("a proxy from the environment"),
        "{err}"
    );
    row.figure(
        "at start: `run` discovery_invalid, not ready; `once` exit 1 after 1 attempt".to_string(),
    );

    // (2b) After a refetch: the endpoint in hand (direct, NO_PROXY) answers 404, the document now names one the proxy
    // would carry: it is not adopted; the one in hand stays and the next tokens come from it directly.
    std::fs::remove_dir_all(sb.path("state")).ok();
    idp.route(
        wk,
        200,
        &doc(&issuer, &local_endpoint, &["client_secret_basic"]),
    );
    tokens.set(Behavior::issue(3));
    let mut p = run_with(&cfg, env);
    wait_until(
        Duration::from_secs(10),
        "a token from the direct endpoint",
        || p.ready(),
    );
    idp.route(
        wk,
        200,
        &doc(&issuer, &proxied_endpoint, &["client_secret_basic"]),
    );
    tokens.set(Behavior::Respond {
        status: 404,
        content_type: "application/json".into(),
        body: "{}".into(),
        headers: vec![],
    });
    let refetch = |p: &Proc| {
        p.log_lines().into_iter().find(|l| {
            l["message"] == "could not refresh the discovery document; using the one in hand"
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the refetched document refused",
        || refetch(&p).is_some(),
    );
    let why = refetch(&p).unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("a proxy from the environment"), "{why}");
    let issued = tokens.issued().len();
    tokens.set(Behavior::issue(3));
    wait_until(
        Duration::from_secs(20),
        "a token from the endpoint in hand",
        || tokens.issued().len() > issued,
    );
    drop(p);
    row.figure(
        "after a refetch: the proxied endpoint refused with a warning, the direct one kept"
            .to_string(),
    );

    // (2c) From the saved document: a run without the proxy saves the localhost endpoint; a restart with the proxy
    // in the environment does not use it (nor the same document fetched again).
    std::fs::remove_dir_all(sb.path("state")).ok();
    idp.route(
        wk,
        200,
        &doc(&issuer, &proxied_endpoint, &["client_secret_basic"]),
    );
    let mut p = run_with(&cfg, &[]);
    wait_until(Duration::from_secs(10), "a token without the proxy", || {
        p.ready()
    });
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(5)).is_some());
    let mut p = run_with(&cfg, env);
    let message = wait_error(&mut p, "discovery_invalid");
    assert!(
        message.contains("a proxy from the environment"),
        "{message}"
    );
    assert!(
        p.log_lines().iter().any(|l| l["message"]
            == "the saved discovery document is not usable; discovering again"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("a proxy from the environment"))),
        "{}",
        p.describe()
    );
    let mut secrets = vec!["s3cr3t-inputs".to_string()];
    secrets.extend(tokens.issued());
    scan(&mut row, &mut p, &[], &secrets);
    drop(p);
    row.figure("from the saved document: refused (logged), then discovery_invalid".to_string());

    assert!(
        proxy.seen().is_empty(),
        "the proxy received {} request(s)",
        proxy.seen().len()
    );
    row.figure("requests that reached the proxy: 0".to_string());
    row.pass();
}

/// Text a hostile server puts in every field it can: a forged log line after CR LF, terminal escapes (erase line,
/// window title, bell), a right-to-left override, Unicode line and C1 next-line separators, then `pad` bytes.
fn hostile(pad: usize) -> String {
    format!(
        "FORGED\r\n2026-12-02T00:00:00.000000Z ERROR token_vendor: FORGED-LINE \u{1b}[2K\u{1b}]0;pwned\u{7}\u{202e}desrever\u{2028}\u{85}{}",
        "A".repeat(pad)
    )
}

/// Fails if `text` holds a character that could forge a line or change what a reader sees, a line that starts like
/// the forged one, or more of the padding than a cleaned message keeps.
fn assert_clean(what: &str, text: &str) {
    for line in text.split('\n') {
        let bad: Vec<char> = line
            .chars()
            .filter(|c| c.is_control() || matches!(c, '\u{202e}' | '\u{2028}' | '\u{2029}'))
            .collect();
        assert!(bad.is_empty(), "{what}: {bad:?} in {line:?}");
        assert!(
            !line.starts_with("2026-12-02T00:00:00"),
            "{what}: a forged line: {line}"
        );
    }
    assert!(
        !text.contains(&"A".repeat(256)),
        "{what}: more server text than one cleaned message keeps"
    );
}

#[test]
fn h06b_server_text_in_every_field_reaches_logs_status_metrics_and_stderr_cleaned_and_bounded() {
    use crate::discovery::DocServer;
    let mut row = Row::new(
        "h06b",
        "13 tokens, each fed by its server with a forged log line (CR LF), terminal escapes, a bidi override, U+2028/U+0085 and 50 KB in one field: error, error_description, message, error.message (4xx and 200), a 1 MB error body, Location, token_type, a token-exchange error; discovery issuer, 600 auth methods, a mistyped grant_types_supported, a 60 KB token_endpoint, a 1 MB document; text logs",
        "every log line of `run` and `once` (text format), every FAILED line, /status message and /metrics body: no control or bidi character, no forged line, no more than one cleaned message's worth (200 characters) of any field, each /status message under 1 KiB",
    );
    let sb = Sandbox::new();
    let d = sb.dir.path().display().to_string();
    let h = hostile(50_000);
    let respond = |status: u16, body: Value, headers: Vec<(String, String)>| {
        TokenServer::start(Behavior::Respond {
            status,
            content_type: "application/json".into(),
            body: body.to_string(),
            headers,
        })
    };
    let servers = vec![
        (
            "t-description",
            respond(
                401,
                json!({"error": "invalid_client", "error_description": h}),
                vec![],
            ),
        ),
        ("t-code", respond(400, json!({"error": h}), vec![])),
        (
            "t-ok-message",
            respond(200, json!({"error": "odd_error", "message": h}), vec![]),
        ),
        (
            "t-nested",
            respond(400, json!({"error": {"message": h}}), vec![]),
        ),
        (
            "t-location",
            respond(
                302,
                json!({}),
                vec![(
                    "Location".into(),
                    format!("https://idp.example/{}?q=1", "L".repeat(8000)),
                )],
            ),
        ),
        (
            "t-megabyte",
            respond(
                400,
                json!({"error": "invalid_request", "error_description": hostile(1 << 20)}),
                vec![],
            ),
        ),
        (
            "t-type",
            TokenServer::start(Behavior::Issue {
                expires_in: Some(json!(600)),
                token_type: h.clone(),
                jwt_exp_in: None,
            }),
        ),
        (
            "t-exchange",
            respond(
                400,
                json!({"error": "invalid_grant", "error_description": h}),
                vec![],
            ),
        ),
    ];
    let idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let base = idp.base();
    let wk = |name: &str| format!("/{name}/.well-known/openid-configuration");
    let methods: Vec<String> = (0..600)
        .map(|i| format!("m{i}\u{1b}[31m\r\nFORGED"))
        .collect();
    let documents = [
        (
            "d-issuer",
            json!({"issuer": h, "token_endpoint": format!("{base}/token")}),
        ),
        (
            "d-methods",
            json!({"issuer": format!("{base}/d-methods"), "token_endpoint": format!("{base}/token"),
                   "token_endpoint_auth_methods_supported": methods}),
        ),
        (
            "d-grants",
            json!({"issuer": format!("{base}/d-grants"), "token_endpoint": format!("{base}/token"),
                   "grant_types_supported": h}),
        ),
        (
            "d-endpoint",
            json!({"issuer": format!("{base}/d-endpoint"),
                   "token_endpoint": format!("https://idp.example/{}", "A".repeat(60_000))}),
        ),
        (
            "d-megabyte",
            json!({"issuer": format!("{base}/d-megabyte"), "pad": hostile(1 << 20)}),
        ),
    ];
    for (name, body) in &documents {
        idp.route(&wk(name), 200, &body.to_string());
    }
    sb.write("sa/token", &jwt_with_exp(i64::MAX / 4_000_000_000));
    let mut yaml = "listen: \"127.0.0.1:0\"\nlog: {level: info, format: text}\nrefresh: {min_backoff: 200ms, max_backoff: 1s}\ntokens:\n".to_string();
    for (name, server) in &servers {
        let how = if *name == "t-exchange" {
            format!("    grant: token_exchange\n    subject_token_file: {d}/sa/token\n    auth_method: none\n")
        } else {
            "    client_id: the-client\n    client_secret: s3cr3t-text\n".to_string()
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    token_url: {}\n{how}    outputs: [{{path: {d}/out/{name}}}]\n",
            server.url()
        ));
    }
    for (name, _) in &documents {
        let auto = if *name == "d-methods" {
            "    auth_method: auto\n"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    issuer: {base}/{name}\n    client_id: the-client\n    client_secret: s3cr3t-text\n{auto}    outputs: [{{path: {d}/out/{name}}}]\n"
        ));
    }
    let n = servers.len() + documents.len();
    // `once`: one FAILED line per token on stderr, after the text log lines.
    let cfg = sb.write("text.yaml", &yaml);
    let (st, out, err) = run_once(&cfg, "3s");
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert_eq!(err.matches(" FAILED after ").count(), n, "{err}");
    assert_clean("once stderr", &err);
    assert_clean("once stdout", &out);
    // `run`: the admin port fixed (text logs do not go through the JSON lines that name it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = sb.write(
        "text.yaml",
        &yaml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let p = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        sb.dir.path(),
        &[],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut statuses = Value::Null;
    let all_failed = eventually(Duration::from_secs(20), || {
        statuses = http_get(addr, "/status")
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null);
        statuses["tokens"]
            .as_array()
            .is_some_and(|t| t.len() == n && t.iter().all(|t| t["last_error"].is_object()))
    });
    assert!(all_failed, "{statuses}\n{}", p.describe());
    let mut longest = 0;
    for t in statuses["tokens"].as_array().unwrap() {
        let message = t["last_error"]["message"].as_str().unwrap_or_default();
        longest = longest.max(message.len());
        assert!(
            message.len() < 1024,
            "{}: {} bytes",
            t["name"],
            message.len()
        );
        assert_clean(&format!("/status of {}", t["name"]), message);
        assert_clean(
            &format!("/status url of {}", t["name"]),
            t["token_url"].as_str().unwrap_or_default(),
        );
    }
    let (_, metrics) = http_get(addr, "/metrics").unwrap_or_default();
    assert!(
        !metrics.contains("FORGED") && !metrics.contains("AAAA"),
        "{metrics}"
    );
    assert_clean("/metrics", &metrics);
    let logs = p.logs();
    assert_clean("run log (text)", &logs);
    let kinds: std::collections::BTreeSet<String> = statuses["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["last_error"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    row.figure(format!(
        "{n} tokens failed with kinds {}; longest /status message {longest} bytes; once stderr {} KiB, run log {} KiB, both clean",
        kinds.into_iter().collect::<Vec<_>>().join(", "),
        err.len().div_ceil(1024),
        logs.len().div_ceil(1024)
    ));
    let status_text = statuses.to_string();
    let texts = [
        ("once stderr", err.as_str()),
        ("run log", logs.as_str()),
        ("/status", status_text.as_str()),
        ("/metrics", metrics.as_str()),
    ];
    assert_no_leaks(
        &texts,
        &["s3cr3t-text".to_string(), "the-client".to_string()],
    );
    row.scanned(
        texts.len() as u64,
        texts.iter().map(|(_, t)| t.len() as u64).sum(),
    );
    row.pass();
}
