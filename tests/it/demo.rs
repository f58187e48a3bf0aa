//! `demo` run again: a rerun does not alarm its user about the first run's saved token (while `run` still warns about
//! a tampered one), and a second demo while one runs stops on the port or on the directory, says what to change, and
//! leaves the running demo's config alone.

use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::*;

/// `demo --dir tokens --listen LISTEN` from the sandbox, once its first token is written: the process and the admin
/// address it bound (its text log says `addr=`).
fn start_demo(sb: &Sandbox, listen: &str) -> (Proc, SocketAddr) {
    let p = Proc::spawn(
        &["demo", "--dir", "tokens", "--listen", listen],
        sb.dir.path(),
        &[],
    );
    let admin = |logs: &str| -> Option<SocketAddr> {
        let line = logs
            .lines()
            .find(|l| l.contains("admin server listening"))?;
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let up = eventually(Duration::from_secs(30), || {
        let logs = p.logs();
        admin(&logs).is_some() && logs.contains("token refreshed and written")
    });
    match admin(&p.logs()) {
        Some(addr) if up => (p, addr),
        _ => panic!("the demo did not write its first token\n{}", p.describe()),
    }
}

fn stop(mut p: Proc) -> String {
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", p.describe());
    p.logs()
}

#[test]
fn a_second_demo_discards_the_first_ones_saved_token_quietly_and_run_still_warns_about_a_tampered_one(
) {
    let sb = Sandbox::new();
    let (first, _) = start_demo(&sb, "127.0.0.1:0");
    stop(first);
    let state = sb.path("tokens/.token.tv-state");
    assert!(state.exists(), "the first demo saved its token");

    let (second, addr) = start_demo(&sb, "127.0.0.1:0");
    assert_eq!(http_get(addr, "/readyz").map(|r| r.0), Some(200));
    let logs = stop(second);
    eprintln!("second demo's log:\n{logs}");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("DEVELOPMENT ONLY"))
        .collect();
    assert!(warnings.is_empty(), "{logs}");
    assert!(!logs.contains("valid MAC"), "{logs}");
    assert!(
        logs.contains("INFO demo: discarded the previous demo's saved token (its endpoint is gone); requesting a new one"),
        "{logs}"
    );

    // `run` on the demo's config with a state file someone edited: the warning is still there.
    let bytes = std::fs::read(&state).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // A token planted in the record, the MAC left as it was.
    let edited = text.replacen("\"access_token\": \"demo.", "\"access_token\": \"evil.", 1);
    assert_ne!(edited, text, "the state record holds the demo token");
    std::fs::write(&state, edited).unwrap();
    let cfg = sb.path("tokens/demo-config.yaml");
    let run = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        sb.dir.path(),
        &[],
    );
    let warned = eventually(Duration::from_secs(20), || {
        run.logs().lines().any(|l| {
            l.contains(" WARN ") && l.contains("ignored the saved token") && l.contains("valid MAC")
        })
    });
    assert!(warned, "{}", run.describe());
}

#[test]
fn a_second_demo_on_a_taken_port_says_how_to_choose_another_and_leaves_the_first_ones_config() {
    let sb = Sandbox::new();
    let (first, addr) = start_demo(&sb, "127.0.0.1:0");
    let config = sb.read("tokens/demo-config.yaml").unwrap();
    // The config names the port the demo bound, not the `:0` it was given.
    assert!(config.contains(&format!("listen: \"{addr}\"")), "{config}");
    let listen = addr.to_string();
    let port_taken = format!(
        "token-vendor: port {} is in use (is another demo running?); pass --listen 127.0.0.1:0 or another port",
        addr.port()
    );
    let dir_taken =
        "token-vendor: another demo is running with --dir tokens; stop it first, or pass another --dir";
    // The same port; another port (as the first message suggests) into the same directory; `--once` (no port).
    for (args, want) in [
        (vec!["--listen", listen.as_str()], port_taken.as_str()),
        (vec!["--listen", "127.0.0.1:0"], dir_taken),
        (vec!["--once"], dir_taken),
    ] {
        let args = [&["demo", "--dir", "tokens"][..], &args].concat();
        let (st, out, err) = run_to_end(&args, sb.dir.path(), &[], Duration::from_secs(30));
        eprintln!("{}:\n{err}", args.join(" "));
        assert_eq!(st.code(), Some(1), "{out}\n{err}");
        assert!(err.lines().any(|l| l == want), "{err}");
        assert!(!err.contains("DEVELOPMENT ONLY"), "nothing started: {err}");
        assert_eq!(sb.read("tokens/demo-config.yaml").unwrap(), config);
    }
    assert_eq!(http_get(addr, "/readyz").map(|r| r.0), Some(200));
    stop(first);
    // Once it has stopped, the directory is free again.
    let (st, out, err) = run_to_end(
        &["demo", "--dir", "tokens", "--once"],
        sb.dir.path(),
        &[],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{out}\n{err}");
}
