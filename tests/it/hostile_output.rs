//! Issue 9 §5: an output directory swapped for a symlink after start is never written through. Issue 16 §5: one planted
//! before start is refused by start, reload, `once` and `check`, and the app owns no directory the sidecar creates.
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

/// Fails if anything was written into `victim`, the directory a symbolic link points to.
fn assert_untouched(victim: &Path, context: &str) {
    let written: Vec<_> = std::fs::read_dir(victim)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        written.is_empty(),
        "the sidecar wrote through the symlink: {written:?}\n{context}"
    );
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
    assert_untouched(&victim, &p.describe());
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
        as_app(shared, "mv tok tok-old && ln -s ../victim tok", true);
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

/// Runs `sh -c script` as uid/gid 65532 (the app) in `dir`; panics with its stderr if it fails and `must` says so.
fn as_app(dir: &Path, script: &str, must: bool) -> std::process::Output {
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
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("setpriv (util-linux) must be installed");
    if must {
        assert!(
            out.status.success(),
            "as uid 65532: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

#[test]
#[ignore = "needs root: another uid plants the link, chown to 65532"]
fn h05c_a_symlink_planted_before_start_is_refused_by_start_reload_once_and_check() {
    use std::os::unix::fs::MetadataExt;
    let mut row = Row::new(
        "h05c",
        "before start, uid 65532 (owner of `shared/`, as an app owning a shared volume) plants `shared/tok -> ../victim` (a root-owned directory); outputs under `shared/tok/` for `run`, `once`, `check` and a reload of a running sidecar; an output with uid/gid 65532 whose directories do not exist yet",
        "start, once and check exit 2 naming the output's key, the link, its directory and its owner; the reload is refused and the running config keeps writing; nothing is written into the link's target; the created directories are root's (group 65532, 0750), the app cannot plant a link in them but reads its token",
    );
    let sb = Sandbox::new();
    let d = sb.dir.path().to_path_buf();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = TokenServer::start(Behavior::issue(3));
    let victim = sb.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(sb.path("shared")).unwrap();
    std::os::unix::fs::chown(sb.path("shared"), Some(65532), Some(65532)).unwrap();
    as_app(&sb.path("shared"), "ln -s ../victim tok", true);
    let planted = |out: &str| {
        format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nrefresh: {{window: [0.3, 0.4], min_backoff: 200ms, max_backoff: 1s}}\nreload: {{poll_interval: 1h}}\ntokens:\n  - name: svc\n    token_url: {}\n    client_id: the-client\n    client_secret: s3cr3t-planted\n    outputs:\n      - {{path: {}/good/token}}\n{out}",
            server.url(),
            d.display()
        )
    };
    let bad = planted(&format!(
        "      - {{path: {}/shared/tok/token, uid: 65532, gid: 65532}}\n",
        d.display()
    ));
    let link = format!(
        "{}/shared/tok is a symbolic link in {}/shared, which uid 65532 owns",
        d.display(),
        d.display()
    );
    let says = |text: &str| text.contains(&link) && text.contains("refused");
    let cfg = sb.write("bad.yaml", &bad);
    let mut shown = String::new();
    for cmd in ["run", "once", "check"] {
        let (st, out, err) = run_to_end(
            &[cmd, "--config", cfg.to_str().unwrap()],
            &d,
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(st.code(), Some(2), "{cmd}: {out}{err}");
        let text = format!("{out}{err}");
        assert!(
            says(&text) && text.contains("tokens[0].outputs[1].path"),
            "{cmd}: {text}"
        );
        if cmd == "once" {
            shown = err
                .lines()
                .find(|l| l.contains("symbolic link"))
                .unwrap_or_default()
                .trim()
                .to_string();
        }
    }
    assert!(
        server.seen().is_empty(),
        "a token was requested for a refused config"
    );

    // Reload: a running sidecar is given the planted output; it refuses the config and keeps the one it runs.
    let cfg = sb.write("run.yaml", &planted(""));
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    std::fs::write(&cfg, &bad).unwrap();
    p.signal("HUP");
    wait_until(Duration::from_secs(10), "the reload refused", || {
        p.log_lines().iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("new config rejected"))
                && l["key"] == "tokens[0].outputs[1].path"
                && l["problem"].as_str().is_some_and(says)
        })
    });
    let issued = server.issued().len();
    wait_until(
        Duration::from_secs(15),
        "refreshes after the refused reload",
        || server.issued().len() >= issued + 2,
    );
    wait_until(
        Duration::from_secs(5),
        "the running config's output current",
        || sb.read("good/token") == server.issued().last().cloned(),
    );
    assert_untouched(&victim, &p.describe());
    drop(p);

    // Directories the sidecar creates for an output owned by the app are root's: the app passes, plants nothing.
    let cfg = sb.write(
        "owned.yaml",
        &planted(&format!(
            "      - {{path: {}/app/a/b/token, uid: 65532, gid: 65532}}\n",
            d.display()
        )),
    );
    let (st, out, err) = run_once(&cfg, "20s");
    assert!(st.success(), "{out}{err}");
    for dir in ["app", "app/a", "app/a/b"] {
        let m = std::fs::metadata(sb.path(dir)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, 65532, 0o750),
            "{dir}"
        );
    }
    let f = std::fs::metadata(sb.path("app/a/b/token")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o777), (65532, 65532, 0o640));
    let plant = as_app(&sb.path("app/a"), "ln -s ../../victim b2", false);
    assert!(
        !plant.status.success(),
        "the app could plant a link in a directory the sidecar made"
    );
    let read = as_app(&d, "cat app/a/b/token", true);
    assert_eq!(
        String::from_utf8_lossy(&read.stdout),
        sb.read("app/a/b/token").unwrap()
    );

    let shown = shown.replace(&d.display().to_string(), "<dir>");
    row.figure(format!(
        "run, once, check: exit 2: `{}`",
        shown.chars().take(150).collect::<String>()
    ));
    row.figure(
        "reload refused, the running config kept refreshing; files in the link's target: 0"
            .to_string(),
    );
    row.figure("created directories root:65532 0750; the app's `ln -s` there: Permission denied; its `cat` of the token: ok".to_string());
    row.pass();
}
