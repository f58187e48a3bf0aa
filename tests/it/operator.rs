//! What a new operator meets first: the demo's config as a starting point, and logs readable in a file.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{bin, run_check, run_demo_once, run_to_end, Behavior, Sandbox, TokenServer};

#[test]
fn demo_config_is_a_commented_starting_point_that_checks() {
    let sb = Sandbox::new();
    let (st, out, err) = run_demo_once(sb.dir.path());
    assert!(st.success(), "{out}\n{err}");
    let cfg = sb
        .read("tokens/demo-config.yaml")
        .expect("demo writes its config");
    for key in [
        "listen:",
        "token_url:",
        "client_id:",
        "client_secret:",
        "outputs:",
    ] {
        let line = cfg
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing:\n{cfg}"));
        // The line itself or the comment block right above it says what to change.
        let above = cfg.lines().take(line + 1).collect::<Vec<_>>();
        let window = &above[above.len().saturating_sub(3)..];
        assert!(
            window.iter().any(|l| l.contains("CHANGE")),
            "no CHANGE note at {key}:\n{cfg}"
        );
    }
    // Output paths are absolute, so a copy means the same wherever it is run from.
    let root = std::fs::canonicalize(sb.dir.path()).unwrap();
    assert!(
        cfg.contains(&format!("{}/tokens/token\"", root.display())),
        "{cfg}"
    );
    let (st, out, err) = run_check(Path::new("tokens/demo-config.yaml"), sb.dir.path());
    assert!(st.success(), "the demo config must check:\n{out}\n{err}");
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let server = TokenServer::start(Behavior::issue(300));
    let sb = Sandbox::new();
    sb.write("secret", "s3cret");
    let cfg = sb.write(
        "config.yaml",
        &format!(
            "log: {{format: text, level: debug}}\ntokens:\n  - name: t\n    token_url: {}\n    client_id: c\n    client_secret_file: secret\n    outputs: [{{path: out/token}}]\n",
            server.url()
        ),
    );
    for no_color in [None, Some("1")] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["once", "--config"])
            .arg(&cfg)
            .current_dir(sb.dir.path());
        match no_color {
            Some(v) => cmd.env("NO_COLOR", v),
            None => cmd.env_remove("NO_COLOR"),
        };
        let out = cmd.output().expect("run token-vendor once");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("DEBUG") || err.contains("INFO"),
            "text logs expected:\n{err}"
        );
        assert!(
            !err.contains('\u{1b}'),
            "ANSI escape in piped logs (NO_COLOR={no_color:?}):\n{err:?}"
        );
    }
}

#[test]
fn once_announces_no_refresh_or_retry_that_will_never_come_and_run_does() {
    let server = TokenServer::start(Behavior::issue(300));
    let sb = Sandbox::new();
    sb.write("secret", "s3cret");
    let cfg = sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{format: json, level: info}}\ntokens:\n  - name: t\n    token_url: {}\n    client_id: c\n    client_secret_file: secret\n    outputs: [{{path: out/token}}]\n",
            server.url()
        ),
    );
    let once = |what: &str| {
        let out = std::process::Command::new(bin())
            .args(["once", "--config"])
            .arg(&cfg)
            .current_dir(sb.dir.path())
            .output()
            .expect("run token-vendor once");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("\"token\":\"t\""),
            "{what}: no per-token log line:\n{err}"
        );
        (out.status, err)
    };
    let (st, err) = once("success");
    assert!(st.success(), "{err}");
    assert!(
        !err.contains("next_refresh_in"),
        "once announced a refresh:\n{err}"
    );

    server.set(Behavior::error(401, "invalid_client"));
    let (st, err) = once("permanent error");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("invalid_client"), "{err}");
    assert!(!err.contains("retry_in"), "once announced a retry:\n{err}");

    // The daemon does announce both.
    server.set(Behavior::issue(300));
    let mut p = crate::helpers::Proc::run(&cfg);
    crate::helpers::wait_until(Duration::from_secs(10), "a refresh log line", || {
        p.logs().contains("next_refresh_in")
    });
    p.signal("TERM");
    let _ = p.wait_exit(Duration::from_secs(5));
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let server = TokenServer::start(Behavior::issue(300));
    let sb = Sandbox::new();
    sb.write("conf/secrets/secret", "s3cret");
    sb.write(
        "conf/config.yaml",
        &format!(
            "tokens:\n  - name: t\n    token_url: {}\n    client_id: c\n    client_secret_file: secrets/secret\n    outputs: [{{path: out/token}}]\n",
            server.url()
        ),
    );
    std::fs::create_dir_all(sb.path("elsewhere")).unwrap();
    // Started from another directory, with the config named relative to it.
    let (st, out, err) = run_to_end(
        &["once", "--config", "../conf/config.yaml"],
        &sb.path("elsewhere"),
        &[],
        Duration::from_secs(20),
    );
    assert!(st.success(), "{out}\n{err}");
    assert!(
        sb.read("conf/out/token").is_some(),
        "the output is not next to the config:\n{err}"
    );
    assert!(
        sb.read("elsewhere/out/token").is_none(),
        "resolved against the working directory"
    );
}
