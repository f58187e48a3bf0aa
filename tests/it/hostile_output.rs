//! Issue 9 §5: an output directory swapped for a symlink after start is never written through.
//!
//! The choice (src/output.rs, `Target`): each write walks the directory resolved at start with `O_NOFOLLOW` and
//! writes through the handle it reached, so a swapped-in symlink makes the write fail with an error naming the
//! component; nothing is written into the symlink's target, and the refresh is retried like any write error.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use crate::reliability::report::Row;

fn config(sb: &Sandbox, url: &str) -> std::path::PathBuf {
    let d = sb.dir.path().display().to_string();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nrefresh: {{window: [0.3, 0.4], min_backoff: 200ms, max_backoff: 1s}}\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret: s\n    outputs:\n      - {{path: {d}/shared/tok/token}}\n      - {{path: {d}/shared/tok/token.json, format: json}}\n"
        ),
    )
}

/// Runs the daemon, lets `swap` replace `shared/tok` with a symlink to `victim/`, and checks that nothing is ever
/// written into `victim/` while refreshes go on, and that the refusal names the component. Returns figures.
fn swap_scenario(sb: &Sandbox, swap: impl FnOnce(&Path)) -> Vec<String> {
    let server = TokenServer::start(Behavior::issue(3));
    let victim = sb.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(sb.path("shared")).unwrap();
    let cfg = config(sb, &server.url());
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let before = server.seen().len();
    swap(&sb.path("shared"));
    assert!(std::fs::symlink_metadata(sb.path("shared/tok"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Three more token requests: each one's write must be refused.
    wait_until(
        Duration::from_secs(20),
        "three refreshes after the swap",
        || server.seen().len() >= before + 3,
    );
    std::thread::sleep(Duration::from_millis(300));
    let written: Vec<_> = std::fs::read_dir(&victim)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        written.is_empty(),
        "the sidecar wrote through the symlink: {written:?}\n{}",
        p.describe()
    );
    let logs = p.logs();
    assert!(
        logs.contains("shared/tok is no longer a directory") && logs.contains("it is not followed"),
        "the refusal names the component\n{}",
        p.describe()
    );
    let status = p.get("/status").1;
    assert!(status.contains("output_write"), "{status}");
    vec![
        format!(
            "token requests after the swap: {}",
            server.seen().len() - before
        ),
        "files written into the symlink's target: 0".into(),
    ]
}

#[test]
#[ignore = "needs root"]
fn h05b_a_directory_swapped_for_a_symlink_by_another_uid_is_not_followed() {
    let mut row = Row::new(
        "h05b",
        "after start, uid 65532 (owner of the parent directory) renames the output directory away and puts a symlink to a root-owned directory in its place",
        "no file is ever written into the symlink's target; each write is refused with an error naming the component",
    );
    let sb = Sandbox::new();
    // uid 65532 must reach and own the parent directory, as an app uid owning a shared volume would.
    std::fs::set_permissions(
        sb.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(sb.path("shared")).unwrap();
    std::os::unix::fs::chown(sb.path("shared"), Some(65532), Some(65532)).unwrap();
    let figures = swap_scenario(&sb, |shared| {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65532",
                "--regid",
                "65532",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg("mv tok tok-old && ln -s ../victim tok")
            .current_dir(shared)
            .output()
            .expect("setpriv (util-linux) must be installed");
        assert!(
            out.status.success(),
            "swap as uid 65532 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    for f in figures {
        row.figure(f);
    }
    row.pass();
}

#[test]
fn a_directory_swapped_for_a_symlink_by_the_same_uid_is_not_followed() {
    let sb = Sandbox::new();
    swap_scenario(&sb, |shared| {
        std::fs::rename(shared.join("tok"), shared.join("tok-old")).unwrap();
        std::os::unix::fs::symlink("../victim", shared.join("tok")).unwrap();
    });
}
