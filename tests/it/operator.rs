//! What a new operator meets first: the demo's config as a starting point, and logs readable in a file.

use std::time::Duration;

use crate::helpers::{bin, run_to_end, Behavior, Sandbox, TokenServer};

#[test]
fn demo_config_is_a_commented_starting_point_that_checks() {
    let sb = Sandbox::new();
    let (st, out, err) = run_to_end(
        &["demo", "--dir", "tokens", "--once"],
        sb.dir.path(),
        &[],
        Duration::from_secs(20),
    );
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
    let (st, out, err) = run_to_end(
        &["check", "--config", "tokens/demo-config.yaml"],
        sb.dir.path(),
        &[],
        Duration::from_secs(10),
    );
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
