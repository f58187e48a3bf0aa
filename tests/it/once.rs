//! `once`: one vend-and-write pass against oidc-provider and against the scripted server.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

const SPECIAL_SECRET: &str = "s3cr+t %/:&=x";

fn token_block(
    name: &str,
    url: &str,
    id: &str,
    secret_file: &str,
    auth: &str,
    extra: &str,
    out: &str,
) -> String {
    format!(
        "  - name: {name}\n    token_url: {url}\n    client_id: {id}\n    client_secret_file: {secret_file}\n    auth_method: {auth}\n{extra}    outputs:\n      - {{path: {out}/token, format: raw}}\n      - {{path: {out}/token.header, format: header, mode: \"0600\"}}\n      - {{path: {out}/token.json, format: json}}\n      - {{path: {out}/token.env, format: env}}\n"
    )
}

#[test]
fn once_vends_from_oidc_provider_with_basic_and_post_auth() {
    let sb = Sandbox::new();
    let idp = OidcServer::launch(
        sb.dir.path(),
        json!({"port": 0, "ttl": 120, "strict_auth": true, "clients": [
            {"client_id": "basic-client", "client_secret": SPECIAL_SECRET, "auth": "client_secret_basic"},
            {"client_id": "post-client", "client_secret": "post-secret-value", "auth": "client_secret_post"}]}),
    );
    let d = sb.dir.path().display().to_string();
    sb.write("secrets/basic", &format!("{SPECIAL_SECRET}\n"));
    sb.write("secrets/post", "post-secret-value\n");
    let cfg = sb.write(
        "config.yaml",
        &format!(
            "tokens:\n{}{}",
            token_block(
                "basic",
                &idp.url,
                "basic-client",
                &format!("{d}/secrets/basic"),
                "client_secret_basic",
                "    scope: read write\n",
                &format!("{d}/out/basic")
            ),
            token_block(
                "post",
                &idp.url,
                "post-client",
                &format!("{d}/secrets/post"),
                "client_secret_post",
                "",
                &format!("{d}/out/post")
            )
        ),
    );
    let started = Instant::now();
    let (st, out, err) = run_once(&cfg, "30s");
    assert!(st.success(), "{out}\n{err}");
    eprintln!("once against oidc-provider took {:?}", started.elapsed());

    let mut tokens = Vec::new();
    for name in ["basic", "post"] {
        let raw = sb.read(&format!("out/{name}/token")).expect("raw output");
        assert!(raw.len() >= 20 && !raw.ends_with('\n'), "{raw:?}");
        assert_eq!(
            sb.read(&format!("out/{name}/token.header")).unwrap(),
            format!("Bearer {raw}")
        );
        let j: serde_json::Value =
            serde_json::from_str(&sb.read(&format!("out/{name}/token.json")).unwrap()).unwrap();
        assert_eq!(j["access_token"], raw.as_str());
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["expires_in"], 120);
        let issued = humantime::parse_rfc3339(j["issued_at"].as_str().unwrap()).unwrap();
        let refresh = humantime::parse_rfc3339(j["refresh_time"].as_str().unwrap()).unwrap();
        let expires = humantime::parse_rfc3339(j["expires_at"].as_str().unwrap()).unwrap();
        // The reference rule: 120 s lifetime, buffer max(1, min(60, 12)) = 12 s.
        assert_eq!(
            refresh.duration_since(issued).unwrap(),
            Duration::from_secs(108)
        );
        assert_eq!(
            expires.duration_since(issued).unwrap(),
            Duration::from_secs(120)
        );
        let env = sb.read(&format!("out/{name}/token.env")).unwrap();
        assert!(
            env.contains(&format!("ACCESS_TOKEN={raw}\n")) && env.contains("TOKEN_TYPE=Bearer\n"),
            "{env}"
        );
        for (file, mode) in [
            ("token", 0o640),
            ("token.header", 0o600),
            ("token.json", 0o640),
            ("token.env", 0o640),
        ] {
            let m = std::fs::metadata(sb.path(&format!("out/{name}/{file}")))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(m, mode, "{name}/{file}");
        }
        tokens.push(raw);
    }
    let j: serde_json::Value =
        serde_json::from_str(&sb.read("out/basic/token.json").unwrap()).unwrap();
    assert_eq!(j["scope"], "read write");
    assert!(sb.temp_files().is_empty(), "{:?}", sb.temp_files());
    let mut secrets = tokens.clone();
    secrets.extend([SPECIAL_SECRET.to_string(), "post-secret-value".to_string()]);
    assert_no_leaks(&[("stderr", &err), ("stdout", &out)], &secrets);
}

#[test]
fn the_reference_raw_basic_encoding_fails_against_a_conforming_server() {
    // The reason we differ from the reference: its raw Basic encoding breaks on special characters.
    let sb = Sandbox::new();
    let idp = OidcServer::launch(
        sb.dir.path(),
        json!({"port": 0, "ttl": 60, "clients": [{"client_id": "c", "client_secret": SPECIAL_SECRET, "auth": "client_secret_basic"}]}),
    );
    let d = sb.dir.path().display().to_string();
    sb.write("secret", SPECIAL_SECRET);
    let cfg = sb.write(
        "c.yaml",
        &format!(
            "tokens:\n{}",
            token_block(
                "raw",
                &idp.url,
                "c",
                &format!("{d}/secret"),
                "client_secret_basic_raw",
                "",
                &format!("{d}/out")
            )
        ),
    );
    let started = Instant::now();
    let (st, _out, err) = run_once(&cfg, "20s");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a permanent error must fail fast"
    );
    assert!(err.contains("token raw FAILED"), "{err}");
    assert!(
        err.contains("invalid_request") || err.contains("invalid_client"),
        "{err}"
    );
    assert!(!sb.path("out/token").exists());
    assert_no_leaks(&[("stderr", &err)], &[SPECIAL_SECRET.to_string()]);
}

fn simple_config(sb: &Sandbox, url: &str, extra: &str) -> std::path::PathBuf {
    let d = sb.dir.path().display().to_string();
    sb.write("secret", "the-client-secret\n");
    sb.write(
        "c.yaml",
        &format!(
            "refresh: {{min_backoff: 100ms, max_backoff: 1s}}\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret_file: {d}/secret\n{extra}    outputs:\n      - {{path: {d}/out/token.json, format: json}}\n      - {{path: {d}/out/token}}\n"
        ),
    )
}

#[test]
fn once_sends_the_rfc_6749_request() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3600));
    server.accept_only(&[("the-client", "the-client-secret")]);
    let cfg = simple_config(
        &sb,
        &server.url(),
        "    scope: read write\n    audience: https://api.example\n    resource: [https://r1.example, https://r2.example]\n    params: {tenant: acme}\n",
    );
    let (st, out, err) = run_once(&cfg, "30s");
    assert!(st.success(), "{out}\n{err}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(r.headers["accept"], "application/json");
    assert_eq!(
        r.headers["user-agent"],
        format!("token-vendor/{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(r.headers["authorization"].starts_with("Basic "));
    assert_eq!(r.form["grant_type"], vec!["client_credentials"]);
    assert_eq!(r.form["scope"], vec!["read write"]);
    assert_eq!(r.form["audience"], vec!["https://api.example"]);
    assert_eq!(
        r.form["resource"],
        vec!["https://r1.example", "https://r2.example"]
    );
    assert_eq!(r.form["tenant"], vec!["acme"]);
    assert!(
        !r.form.contains_key("client_secret"),
        "Basic and post must never be sent together"
    );
    assert_eq!(sb.read("out/token").unwrap(), server.issued()[0]);
    assert!(sb.temp_files().is_empty());
}

#[test]
fn once_fails_fast_on_a_permanent_error_with_one_clear_line() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::error(401, "invalid_client"));
    let cfg = simple_config(&sb, &server.url(), "");
    let started = Instant::now();
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(server.seen().len(), 1, "a permanent error is not retried");
    let line = err
        .lines()
        .find(|l| l.starts_with("token-vendor: token svc FAILED"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains(&server.url())
            && line.contains("HTTP 401")
            && line.contains("invalid_client"),
        "{line}"
    );
    assert!(!sb.path("out/token").exists());
    assert_no_leaks(&[("stderr", &err)], &["the-client-secret".to_string()]);
}

#[test]
fn once_retries_transient_errors_then_succeeds() {
    let sb = Sandbox::new();
    let server = std::sync::Arc::new(TokenServer::start(Behavior::Respond {
        status: 503,
        content_type: "text/html".into(),
        body: "<html><body>maintenance</body></html>".into(),
        headers: vec![],
    }));
    let cfg = simple_config(&sb, &server.url(), "");
    let s2 = server.clone();
    let flip = std::thread::spawn(move || {
        wait_until(Duration::from_secs(20), "three failed attempts", || {
            s2.seen().len() >= 3
        });
        s2.set(Behavior::issue(3600));
    });
    let (st, out, err) = run_once(&cfg, "20s");
    flip.join().unwrap();
    assert!(st.success(), "{out}\n{err}");
    assert!(server.seen().len() >= 4);
    assert!(
        err.contains("the endpoint returned an HTML page") && !err.contains("maintenance"),
        "{err}"
    );
    assert_eq!(sb.read("out/token").unwrap(), server.issued()[0]);
}

#[test]
fn once_gives_up_at_the_timeout_naming_token_url_and_last_error() {
    let sb = Sandbox::new();
    let mut server = TokenServer::start(Behavior::issue(60));
    let url = server.url();
    server.down();
    let cfg = simple_config(&sb, &url, "");
    let started = Instant::now();
    let (st, _out, err) = run_once(&cfg, "2s");
    let took = started.elapsed();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("token-vendor: token svc FAILED"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&url) && lines[0].contains("could not connect"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_jwt_without_expires_in_uses_its_exp() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::Issue {
        expires_in: None,
        token_type: "bearer".into(),
        jwt_exp_in: Some(900),
    });
    let cfg = simple_config(&sb, &server.url(), "");
    let (st, out, err) = run_once(&cfg, "30s");
    assert!(st.success(), "{out}\n{err}");
    let j: serde_json::Value = serde_json::from_str(&sb.read("out/token.json").unwrap()).unwrap();
    let lifetime = j["expires_in"].as_f64().unwrap();
    assert!((897.0..=900.0).contains(&lifetime), "{lifetime}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A config whose one output is owned by 65532:65532.
fn owned_output_config(sb: &Sandbox, server: &TokenServer) -> std::path::PathBuf {
    let d = sb.dir.path().display().to_string();
    sb.write(
        "c.yaml",
        &format!("tokens:\n  - name: svc\n    token_url: {}\n    client_id: i\n    client_secret: s\n    outputs:\n      - {{path: {d}/out/token, uid: 65532, gid: 65532}}\n", server.url()),
    )
}

#[test]
#[ignore = "needs root: chown of an output to uid/gid 65532 (scripts/test runs it when root, as CI is)"]
fn owner_and_group_are_applied_when_running_as_root() {
    assert!(
        is_root(),
        "needs root: chown of an output to uid/gid 65532; run as root (CI does)"
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(60));
    let cfg = owned_output_config(&sb, &server);
    let (st, out, err) = run_once(&cfg, "30s");
    assert!(st.success(), "{out}\n{err}");
    let m = std::fs::metadata(sb.path("out/token")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o777),
        (65532, 65532, 0o640)
    );
}

#[test]
fn owner_and_group_fail_cleanly_without_the_privilege() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(60));
    let cfg = owned_output_config(&sb, &server);
    let (st, out, err) = if is_root() {
        // Root may chown: run the binary as nobody (setpriv drops every capability with the uid).
        std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .args([
                "once",
                "--config",
                cfg.to_str().unwrap(),
                "--timeout",
                "30s",
            ])
            .current_dir(sb.dir.path())
            .env_remove("TOKEN_VENDOR_LOG")
            .env_remove("TOKEN_VENDOR_CONFIG")
            .output()
            .unwrap_or_else(|e| panic!("setpriv (util-linux) is needed to drop root here: {e}"));
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    } else {
        run_once(&cfg, "30s")
    };
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("set the owner"), "{err}");
    assert!(!sb.path("out/token").exists());
    assert!(sb.temp_files().is_empty(), "{:?}", sb.temp_files());
}

#[test]
fn every_error_case_gives_one_clear_line_and_no_file() {
    let html = |status: u16| Behavior::Respond {
        status,
        content_type: "text/html".into(),
        body: "<!DOCTYPE html><html><body>secret-looking login page</body></html>".into(),
        headers: vec![],
    };
    let json_body = |status: u16, body: &str| Behavior::Respond {
        status,
        content_type: "application/json".into(),
        body: body.into(),
        headers: vec![],
    };
    // (behavior, permanent, what the line must say)
    let cases: Vec<(Behavior, bool, &str)> = vec![
        (
            Behavior::error(401, "invalid_client"),
            true,
            "HTTP 401 Unauthorized: scripted invalid_client (invalid_client)",
        ),
        (
            Behavior::error(400, "invalid_scope"),
            true,
            "HTTP 400 Bad Request: scripted invalid_scope (invalid_scope)",
        ),
        (
            Behavior::error(400, "unauthorized_client"),
            true,
            "unauthorized_client",
        ),
        (
            Behavior::error(400, "unsupported_grant_type"),
            true,
            "unsupported_grant_type",
        ),
        (
            json_body(403, r#"{"message":"forbidden by policy"}"#),
            true,
            "HTTP 403 Forbidden: forbidden by policy (client_error)",
        ),
        (
            json_body(400, r#"{"error":{"message":"nested detail"}}"#),
            true,
            "nested detail",
        ),
        (
            html(500),
            false,
            "HTTP 500 Internal Server Error: the endpoint returned an HTML page",
        ),
        (
            html(200),
            false,
            "the endpoint returned an HTML page instead of a token",
        ),
        (json_body(429, "{}"), false, "HTTP 429 Too Many Requests"),
        (
            json_body(400, r#"{"error":"temporarily_unavailable"}"#),
            false,
            "temporarily_unavailable",
        ),
        (
            json_body(200, r#"{"access_token":"abc","token_type":"Bearer","expi"#),
            false,
            "failed to parse the token response: the JSON ends early",
        ),
        (
            json_body(
                200,
                r#"{"access_token":"abc","token_type":"mac","expires_in":60}"#,
            ),
            true,
            "token_type \"mac\"; only Bearer tokens are supported",
        ),
        (
            Behavior::Huge(10 << 20),
            false,
            "larger than 64 KiB; refused",
        ),
        (Behavior::ResetMidBody, false, "the connection failed"),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(behavior, permanent, want)| {
            std::thread::spawn(move || {
                let sb = Sandbox::new();
                let server = TokenServer::start(behavior.clone());
                let cfg = simple_config(&sb, &server.url(), "");
                // A permanent error must end the run long before a generous timeout; a transient one runs to it.
                let timeout = if permanent { "20s" } else { "1500ms" };
                let started = Instant::now();
                let (st, _out, err) = run_once(&cfg, timeout);
                let took = started.elapsed();
                assert_eq!(st.code(), Some(1), "{behavior:?}: {err}");
                let lines: Vec<_> = err
                    .lines()
                    .filter(|l| l.starts_with("token-vendor: token svc FAILED"))
                    .collect();
                assert_eq!(lines.len(), 1, "{behavior:?}: {err}");
                assert!(
                    lines[0].contains(want) && lines[0].contains(&server.url()),
                    "{behavior:?}: want {want:?} in {}",
                    lines[0]
                );
                if permanent {
                    assert_eq!(
                        server.seen().len(),
                        1,
                        "{behavior:?}: a permanent error is not retried"
                    );
                    assert!(took < Duration::from_secs(10), "{behavior:?}: {took:?}");
                } else {
                    assert!(
                        server.seen().len() >= 2,
                        "{behavior:?}: a transient error is retried"
                    );
                }
                assert!(
                    !err.contains("secret-looking") && !err.contains("the-client-secret"),
                    "{err}"
                );
                assert!(!sb.path("out/token").exists() && sb.temp_files().is_empty());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Every path under `dir`, relative, sorted: what a run left behind (the test's own `proc-*` logs aside).
fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if d == root && e.file_name().to_string_lossy().starts_with("proc-") {
                continue;
            }
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Issue 19 §3: a missing secret file is what `check` reports, with its exit code 2; no request, no file, no directory.
#[test]
fn once_with_a_missing_secret_file_sends_nothing_exits_2_like_check_and_creates_nothing() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3600));
    let d = sb.dir.path().display().to_string();
    let cfg = sb.write(
        "c.yaml",
        &format!("tokens:\n  - name: svc\n    token_url: {}\n    client_id: the-client\n    client_secret_file: {d}/missing-secret\n    outputs:\n      - {{path: {d}/out/deep/token}}\n", server.url()),
    );
    let before = tree(sb.dir.path());
    let (st, out, err) = run_once(&cfg, "30s");
    eprintln!("once stderr:\n{err}");
    let (check_st, _, check_err) = run_check(&cfg, sb.dir.path());
    assert_eq!(check_st.code(), Some(2), "{check_err}");
    assert_eq!(st.code(), check_st.code(), "{out}\n{err}");
    let problem = format!(
        "tokens[0].client_secret_file: cannot read {d}/missing-secret: cannot open {d}/missing-secret: No such file or directory"
    );
    assert!(
        err.contains(&problem) && check_err.contains(&problem),
        "{err}\n{check_err}"
    );
    assert!(
        err.contains("token-vendor: no request was sent and nothing was written"),
        "{err}"
    );
    assert!(!err.contains("FAILED after"), "{err}");
    assert!(server.seen().is_empty());
    assert_eq!(tree(sb.dir.path()), before, "{err}");
}

/// A token that is not vended leaves nothing this run created for it (directories, the warm-start key), while what a
/// vended token wrote next to it, and whatever existed before, stays.
#[test]
fn a_failed_once_leaves_behind_nothing_it_created() {
    let sb = Sandbox::new();
    let good = TokenServer::start(Behavior::issue(3600));
    let bad = TokenServer::start(Behavior::error(401, "invalid_client"));
    let d = sb.dir.path().display().to_string();
    sb.write("secret", "the-client-secret\n");
    let token = |name: &str, url: &str, outputs: &[&str]| {
        let outs: String = outputs
            .iter()
            .map(|o| format!("      - {{path: {d}/{o}}}\n"))
            .collect();
        format!("  - name: {name}\n    token_url: {url}\n    client_id: the-client\n    client_secret_file: {d}/secret\n    outputs:\n{outs}")
    };
    let key = ".token-vendor-key.tv-state";

    // One token alone, refused by the server: its output directories and key are gone again.
    let cfg = sb.write(
        "alone.yaml",
        &format!(
            "tokens:\n{}",
            token("bad", &bad.url(), &["a/b/token", "a/c/token"])
        ),
    );
    let before = tree(sb.dir.path());
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("token bad FAILED after 1 attempt(s)"), "{err}");
    assert_eq!(bad.seen().len(), 1);
    assert_eq!(tree(sb.dir.path()), before, "{err}");

    // Beside a vended token: the shared directory and the key its state uses stay, the failed token's own go.
    let cfg = sb.write(
        "beside.yaml",
        &format!(
            "tokens:\n{}{}",
            token("good", &good.url(), &["shared/good"]),
            token("bad", &bad.url(), &["shared/bad", "bad-only/x/token"])
        ),
    );
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    let left = tree(sb.dir.path());
    for want in [
        "shared/good",
        &format!("shared/{key}"),
        "shared/.good.tv-state",
    ] {
        assert!(left.contains(&want.to_string()), "{want} missing: {left:?}");
    }
    assert!(
        !left
            .iter()
            .any(|p| p.starts_with("bad-only") || p == "shared/bad"),
        "{left:?}"
    );

    // A later failure into the same place removes nothing that was there before it.
    let cfg = sb.write(
        "again.yaml",
        &format!(
            "tokens:\n{}",
            token("good", &bad.url(), &["shared/good", "shared/new/token"])
        ),
    );
    let before = tree(sb.dir.path());
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert_eq!(tree(sb.dir.path()), before, "{err}");
}

/// With `state_dir` and discovery: the state directory, its key and the discovery document saved before the token
/// request failed are removed too.
#[test]
fn a_failed_once_removes_its_state_dir_key_and_discovery_document() {
    use crate::discovery::{doc, DocServer};
    let sb = Sandbox::new();
    let bad = TokenServer::start(Behavior::error(401, "invalid_client"));
    let idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let issuer = idp.base();
    idp.route(
        "/.well-known/openid-configuration",
        200,
        &doc(&issuer, &bad.url(), &["client_secret_basic"]),
    );
    let d = sb.dir.path().display().to_string();
    let cfg = sb.write(
        "c.yaml",
        &format!("state_dir: {d}/state/tv\ntokens:\n  - name: t\n    issuer: {issuer}\n    client_id: the-client\n    client_secret: s\n    outputs:\n      - {{path: {d}/out/token}}\n"),
    );
    let before = tree(sb.dir.path());
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("discovered the token endpoint"), "{err}");
    assert_eq!(bad.seen().len(), 1, "{err}");
    assert_eq!(tree(sb.dir.path()), before, "{err}");
}
