//! `check`, `--help`, `--version`, exit codes, and `demo`.

use std::time::Duration;

use crate::helpers::*;

#[test]
fn check_accepts_a_good_config_without_contacting_anything() {
    let sb = Sandbox::new();
    sb.write("secrets/id", "client-a\n");
    sb.write("secrets/secret", "s3cr+t\n");
    let cfg = sb.write(
        "config.yaml",
        &format!(
            "tokens:\n  - name: a\n    token_url: https://idp.invalid/oauth2/token\n    client_id_file: {d}/secrets/id\n    client_secret_file: {d}/secrets/secret\n    outputs:\n      - {{path: {d}/out/a/token, format: raw}}\n      - {{path: {d}/out/a/token.json, format: json, mode: \"0600\"}}\n",
            d = sb.dir.path().display()
        ),
    );
    let (st, out, err) = run_check(&cfg, sb.dir.path());
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(
        !sb.path("out").exists(),
        "check must not create output directories"
    );
}

#[test]
fn check_lists_every_problem_with_file_key_and_what_to_do() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("blocker"), "a file where a directory should be").unwrap();
    let cfg = sb.write(
        "bad.yaml",
        &format!(
            r#"listen: "[::]:8099"
tokens:
  - name: a
    token_url: https://idp.invalid/token
    client_id: x
    client_secret_file: {d}/missing-secret
    outputs: [{{path: {d}/blocker/token}}]
  - name: b
    token_url: http://idp.example/token
    client_id: x
    client_secret_env: TV_TEST_UNSET_SECRET
    client_secret: inline
    outputs: [{{path: {d}/b, mode: "0666"}}]
    scopes: typo
"#,
            d = sb.dir.path().display()
        ),
    );
    let path = cfg.to_str().unwrap();
    let (st, _out, err) = run_check(&cfg, sb.dir.path());
    assert_eq!(st.code(), Some(2), "{err}");
    // Structural problems of token b stop it; token a is checked against the filesystem only once the config parses.
    assert!(
        err.contains(&format!(
            "error: {path}: tokens[1].scopes: unknown key `scopes`"
        )),
        "{err}"
    );
    let cfg2 = sb.write(
        "bad2.yaml",
        &format!(
            "tokens:\n  - name: a\n    token_url: https://idp.invalid/token\n    client_id: x\n    client_secret_file: {d}/missing-secret\n    outputs: [{{path: {d}/blocker/token}}]\n  - name: b\n    token_url: https://idp.invalid/token\n    client_id: x\n    client_secret_env: TV_TEST_UNSET_SECRET\n    http: {{ca_file: {d}/no-ca.pem}}\n    outputs: [{{path: {d}/b}}]\n",
            d = sb.dir.path().display()
        ),
    );
    let p2 = cfg2.to_str().unwrap();
    let (st, _out, err) = run_check(&cfg2, sb.dir.path());
    assert_eq!(st.code(), Some(2), "{err}");
    for needle in [
        format!("{p2}: tokens[0].client_secret_file: cannot read {}/missing-secret", sb.dir.path().display()),
        format!("{p2}: tokens[0].outputs[0].path: {}/blocker is not a directory", sb.dir.path().display()),
        format!("{p2}: tokens[1].client_secret_env: environment variable TV_TEST_UNSET_SECRET is not set"),
        format!("{p2}: tokens[1].http: cannot read ca_file {}/no-ca.pem", sb.dir.path().display()),
        "4 problem(s); nothing was contacted".to_string(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
    }
}

#[test]
fn one_token_refused_by_the_parser_does_not_hide_another_tokens_output_conflict() {
    // Issue 19: an unknown auth_method in tokens[0] used to hide that tokens[1]'s output would overwrite its own
    // credential file. `check`, `run` and `once` come through one loader and name both.
    let sb = Sandbox::new();
    sb.write("secrets/b", "s3cr+t\n");
    let cfg = sb.write(
        "c.yaml",
        &format!(
            "tokens:\n  - name: a\n    token_url: https://idp.invalid/token\n    auth_method: client_secret_bogus\n    client_id: x\n    client_secret_env: TV_TEST_UNSET_SECRET\n    outputs: [{{path: {d}/a}}]\n  - name: b\n    token_url: https://idp.invalid/token\n    client_id: x\n    client_secret_file: {d}/secrets/b\n    outputs: [{{path: {d}/secrets/b}}]\n",
            d = sb.dir.path().display()
        ),
    );
    let path = cfg.to_str().unwrap();
    for cmd in ["check", "run", "once"] {
        let (st, _, err) = run_to_end(
            &[cmd, "--config", path],
            sb.dir.path(),
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(st.code(), Some(2), "{cmd}: {err}");
        for needle in [
            format!("{path}: tokens[0].auth_method:"),
            format!(
                "{path}: tokens[1].outputs[0].path: {}/secrets/b would be overwritten with a token: it is a file tokens[1] reads its credentials from",
                sb.dir.path().display()
            ),
        ] {
            assert!(err.contains(&needle), "{cmd}: missing {needle:?} in\n{err}");
        }
    }
    assert_eq!(
        sb.read("secrets/b").as_deref(),
        Some("s3cr+t\n"),
        "the credential file is untouched"
    );
}

#[test]
fn check_and_once_name_an_expired_client_assertion_file_as_they_name_an_expired_subject_token() {
    use base64::Engine;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let sb = Sandbox::new();
    let expired = format!(
        "{}.{}.sig",
        enc(r#"{"alg":"RS256"}"#),
        enc(r#"{"exp":1000}"#)
    );
    sb.write("sa/token", &format!("{expired}\n"));
    let cfg = sb.write(
        "c.yaml",
        &format!(
            "tokens:\n  - name: t\n    token_url: https://idp.invalid/token\n    client_id: app-1\n    auth_method: client_assertion_file\n    client_assertion_file: {d}/sa/token\n    outputs: [{{path: {d}/out/t}}]\n",
            d = sb.dir.path().display()
        ),
    );
    let path = cfg.to_str().unwrap();
    let want = format!(
        "{path}: tokens[0].client_assertion_file: the client assertion in {}/sa/token expired at 1000 (unix time) and was not rotated",
        sb.dir.path().display()
    );
    for cmd in ["check", "once"] {
        let (st, _, err) = run_to_end(
            &[cmd, "--config", path],
            sb.dir.path(),
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(st.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains(&want), "{cmd}: missing {want:?} in\n{err}");
        assert!(
            !err.contains(&expired),
            "{cmd}: the assertion itself is never shown"
        );
    }
    assert!(!sb.path("out").exists(), "nothing was created");
}

#[test]
fn a_bad_config_is_refused_at_start_with_exit_code_2() {
    let sb = Sandbox::new();
    let cfg = sb.write("c.yaml", "tokens:\n  - name: a\n    token_url: https://x/t\n    client_id: i\n    client_secret: s\n    outputs: [{path: /tmp/x, format: yaml}]\n");
    for cmd in ["run", "once"] {
        let (st, _, err) = run_to_end(
            &[cmd, "--config", cfg.to_str().unwrap()],
            sb.dir.path(),
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(st.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("tokens[0].outputs[0].format: `yaml` is not allowed here; use one of `raw`, `header`, `json`, `env`"), "{err}");
    }
    let (st, _, err) = run_to_end(&["run"], sb.dir.path(), &[], Duration::from_secs(10));
    assert_eq!(st.code(), Some(2), "usage error: {err}");
    // The config path may come from the environment.
    let (st, _, _) = run_to_end(
        &["check"],
        sb.dir.path(),
        &[("TOKEN_VENDOR_CONFIG", cfg.to_str().unwrap())],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(2));
}

#[test]
fn help_and_version() {
    let sb = Sandbox::new();
    let (st, out, _) = run_to_end(&["--version"], sb.dir.path(), &[], Duration::from_secs(10));
    assert!(st.success());
    assert_eq!(
        out.trim(),
        format!("token-vendor {}", env!("CARGO_PKG_VERSION"))
    );
    let (st, out, _) = run_to_end(&["--help"], sb.dir.path(), &[], Duration::from_secs(10));
    assert!(st.success());
    for w in [
        "run",
        "once",
        "check",
        "demo",
        "\n  schema ",
        "Exit codes: 0 ok; 1 runtime failure",
        "2 usage or config error",
    ] {
        assert!(out.contains(w), "{w} missing from --help:\n{out}");
    }
}

#[test]
fn demo_writes_every_format() {
    let sb = Sandbox::new();
    let (st, out, err) = run_demo_once(sb.dir.path());
    assert!(st.success(), "{out}\n{err}");
    let raw = sb.read("tokens/token").unwrap();
    assert!(raw.starts_with("demo."), "{raw}");
    assert_eq!(
        sb.read("tokens/token.header").unwrap(),
        format!("Bearer {raw}")
    );
    let json: serde_json::Value =
        serde_json::from_str(&sb.read("tokens/token.json").unwrap()).unwrap();
    assert_eq!(json["access_token"], raw.as_str());
    assert_eq!(json["expires_in"], 20);
    assert!(
        json["expires_in"].is_u64(),
        "expires_in 20, not 20.0: {json}"
    );
    assert!(sb
        .read("tokens/token.env")
        .unwrap()
        .starts_with(&format!("ACCESS_TOKEN={raw}\n")));
    assert!(err.contains("DEVELOPMENT ONLY"), "{err}");
    assert!(!err.contains(&raw), "the token leaked into the log");
}

#[test]
fn demo_keeps_refreshing_until_ctrl_c() {
    let sb = Sandbox::new();
    let mut p = Proc::spawn(
        &[
            "demo",
            "--dir",
            "tokens",
            "--listen",
            "127.0.0.1:0",
            "--lifetime",
            "3s",
        ],
        sb.dir.path(),
        &[],
    );
    let mut seen = std::collections::BTreeSet::new();
    wait_until(
        Duration::from_secs(20),
        "three different demo tokens",
        || {
            if let Some(t) = sb.read("tokens/token") {
                seen.insert(t);
            }
            seen.len() >= 3
        },
    );
    p.signal("INT");
    let st = p
        .wait_exit(Duration::from_secs(3))
        .expect("demo exits on Ctrl-C");
    assert!(st.success(), "{}", p.describe());
}
