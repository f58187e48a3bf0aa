//! Issue 9 §1: a planted, forged, stale or foreign warm-start state never makes a token "valid"; a genuine one still does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ring::hmac;
use token_vendor::{rfc3339, seal, KEY_FILE};

use crate::helpers::*;
use crate::reliability::report::Row;

const PLANTED: &str = "planted-token-0123456789";

fn config(sb: &Sandbox, url: &str) -> PathBuf {
    let d = sb.dir.path().display().to_string();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nstate_dir: {d}/state\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret: s\n    outputs:\n      - {{path: {d}/out/token}}\n      - {{path: {d}/out/token.json, format: json}}\n"
        ),
    )
}

/// A first run that leaves a genuine state and the key behind; returns the config path and the genuine state bytes.
fn first_run(sb: &Sandbox, server: &TokenServer) -> (PathBuf, Vec<u8>) {
    let cfg = config(sb, &server.url());
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(5)).unwrap();
    let state =
        std::fs::read(sb.path("state/svc.tv-state")).expect("the first run saved its state");
    (cfg, state)
}

fn key(sb: &Sandbox) -> hmac::Key {
    let bytes = std::fs::read(sb.path("state").join(KEY_FILE)).expect("key file");
    hmac::Key::new(hmac::HMAC_SHA256, &bytes)
}

/// The genuine record's JSON with the planted token and `edit` applied.
fn planted_record(genuine: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> (String, Vec<u8>) {
    let text = std::str::from_utf8(genuine).unwrap();
    let (_, json) = text.split_once('\n').unwrap();
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["access_token"] = PLANTED.into();
    edit(&mut v);
    let fp = v["fingerprint"].as_str().unwrap().to_string();
    (fp, serde_json::to_vec_pretty(&v).unwrap())
}

/// Starts the second run, polls `/readyz` and the outputs from the first moment, and checks the planted token is
/// never served, a real token is requested, and the refusal is logged exactly once with `expect` in it.
fn second_run_refuses(sb: &Sandbox, server: &TokenServer, cfg: &Path, row: &mut Row, expect: &str) {
    let before = server.seen().len();
    let p = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        sb.dir.path(),
        &[],
    );
    let started = Instant::now();
    let (mut polls, mut not_ready_polls) = (0, 0);
    let mut ready_at = None;
    while started.elapsed() < Duration::from_secs(15) {
        for f in ["out/token", "out/token.json"] {
            let content = sb.read(f).unwrap_or_default();
            assert!(
                !content.contains(PLANTED),
                "the planted token reached {f}\n{}",
                p.describe()
            );
        }
        if let Some(addr) = admin_addr(&p) {
            if let Some((code, _)) = http_get(addr, "/readyz") {
                polls += 1;
                if code == 200 {
                    let served = sb.read("out/token").unwrap_or_default();
                    assert!(
                        server.issued().contains(&served),
                        "/readyz said 200 while out/token holds {served:?}, not a token the server issued\n{}",
                        p.describe()
                    );
                    assert!(server.seen().len() > before, "ready without a request");
                    ready_at.get_or_insert(started.elapsed());
                    if polls > 5 {
                        break;
                    }
                } else {
                    not_ready_polls += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready_at = ready_at.unwrap_or_else(|| panic!("never ready\n{}", p.describe()));
    assert_eq!(
        server.seen().len(),
        before + 1,
        "exactly one real token request\n{}",
        p.describe()
    );
    let logs = p.logs();
    assert!(
        !logs.contains(PLANTED),
        "the planted token leaked into the log"
    );
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ignored the saved token") || l.contains("warm start is off"))
        .collect();
    assert_eq!(refusals.len(), 1, "one refusal line\n{}", p.describe());
    assert!(
        refusals[0].contains(expect),
        "{expect:?} in {}",
        refusals[0]
    );
    assert!(
        !logs.contains("adopted the still-valid token"),
        "{}",
        p.describe()
    );
    row.figure(format!("/readyz polls: {polls} ({not_ready_polls} not ready), ready after {ready_at:.2?}, 1 request"));
    row.figure(format!("logged once: {expect}"));
}

fn admin_addr(p: &Proc) -> Option<std::net::SocketAddr> {
    p.log_lines().iter().find_map(|l| {
        l["message"]
            .as_str()
            .filter(|m| m.starts_with("admin server listening"))
            .and_then(|_| l["addr"].as_str()?.parse().ok())
    })
}

fn write_0600(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

#[test]
fn h01a_a_forged_record_with_a_chosen_token_is_not_adopted() {
    let mut row = Row::new(
        "h01a",
        "state file replaced by a record for a chosen token with a made-up MAC, then with none",
        "never adopted or served; one warning; a real token is requested",
    );
    for mac in [true, false] {
        let sb = Sandbox::new();
        let server = TokenServer::start(Behavior::issue(600));
        let (cfg, genuine) = first_run(&sb, &server);
        let (_, rec) = planted_record(&genuine, |_| {});
        let bytes = if mac {
            [
                format!("token-vendor-state-v1 {}\n", "00".repeat(32)).into_bytes(),
                rec,
            ]
            .concat()
        } else {
            rec
        };
        write_0600(&sb.path("state/svc.tv-state"), &bytes);
        second_run_refuses(&sb, &server, &cfg, &mut row, "valid MAC");
    }
    row.pass();
}

#[test]
#[ignore = "needs root"]
fn h01b_a_record_owned_by_the_output_uid_is_not_adopted() {
    let mut row = Row::new(
        "h01b",
        "a correctly sealed record for a chosen token, chowned to uid 65532 (an outputs[].uid)",
        "never adopted or served; one warning naming the owner",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let (cfg, genuine) = first_run(&sb, &server);
    let (fp, rec) = planted_record(&genuine, |_| {});
    let path = sb.path("state/svc.tv-state");
    write_0600(&path, &seal(&key(&sb), &fp, &rec));
    std::os::unix::fs::chown(&path, Some(65532), Some(65532)).unwrap();
    second_run_refuses(&sb, &server, &cfg, &mut row, "owned by uid 65532");
    row.pass();
}

#[test]
fn h01c_a_record_issued_in_the_future_is_not_adopted() {
    let mut row = Row::new(
        "h01c",
        "a correctly sealed record issued 1 h in the future (clock ran ahead when saved)",
        "never adopted or served; one warning",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let (cfg, genuine) = first_run(&sb, &server);
    let later = SystemTime::now() + Duration::from_secs(3600);
    let (fp, rec) = planted_record(&genuine, |v| {
        v["issued_at"] = rfc3339(later).into();
        v["expires_at"] = rfc3339(later + Duration::from_secs(600)).into();
        v["refresh_time"] = rfc3339(later + Duration::from_secs(540)).into();
    });
    write_0600(&sb.path("state/svc.tv-state"), &seal(&key(&sb), &fp, &rec));
    second_run_refuses(&sb, &server, &cfg, &mut row, "in the future");
    row.pass();
}

#[test]
fn h01d_a_record_with_a_lifetime_of_years_is_not_adopted() {
    let mut row = Row::new(
        "h01d",
        "a record with a 20-year lifetime, sealed and unsealed",
        "never adopted or served; one warning each",
    );
    for sealed in [true, false] {
        let sb = Sandbox::new();
        let server = TokenServer::start(Behavior::issue(600));
        let (cfg, genuine) = first_run(&sb, &server);
        let now = SystemTime::now();
        let years = Duration::from_secs(20 * 365 * 86400);
        let (fp, rec) = planted_record(&genuine, |v| {
            v["issued_at"] = rfc3339(now).into();
            v["expires_in"] = years.as_secs_f64().into();
            v["expires_at"] = rfc3339(now + years).into();
            v["refresh_time"] = rfc3339(now + years - Duration::from_secs(60)).into();
        });
        let bytes = if sealed {
            seal(&key(&sb), &fp, &rec)
        } else {
            rec
        };
        write_0600(&sb.path("state/svc.tv-state"), &bytes);
        second_run_refuses(
            &sb,
            &server,
            &cfg,
            &mut row,
            if sealed { "unusable" } else { "valid MAC" },
        );
    }
    row.pass();
}

#[test]
fn h01e_a_fifo_at_the_state_path_is_ignored_without_hanging() {
    let mut row = Row::new(
        "h01e",
        "a FIFO (no writer) at the state file's name",
        "no hang; never ready for a planted token; one warning",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let (cfg, _) = first_run(&sb, &server);
    let path = sb.path("state/svc.tv-state");
    std::fs::remove_file(&path).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo (coreutils) must be installed");
    assert!(st.success());
    second_run_refuses(&sb, &server, &cfg, &mut row, "FIFO");
    row.pass();
}

#[test]
fn h01f_a_symlink_at_the_state_path_is_not_followed() {
    let mut row = Row::new(
        "h01f",
        "the state file's name is a symlink to a file holding a record",
        "not followed; never adopted or served; one warning",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let (cfg, genuine) = first_run(&sb, &server);
    let (fp, rec) = planted_record(&genuine, |_| {});
    let elsewhere = sb.path("elsewhere");
    write_0600(&elsewhere, &seal(&key(&sb), &fp, &rec));
    let path = sb.path("state/svc.tv-state");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    second_run_refuses(&sb, &server, &cfg, &mut row, "symbolic link");
    row.pass();
}

#[test]
fn h01g_a_genuine_state_is_still_adopted_without_a_request() {
    let mut row = Row::new(
        "h01g",
        "restart after kill -9 with the genuine state of the previous run",
        "ready at once, zero token requests, same token served",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let (cfg, _) = first_run(&sb, &server);
    let token = sb.read("out/token").unwrap();
    let meta = std::fs::metadata(sb.path("state/svc.tv-state")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let mut p = Proc::run(&cfg);
    assert!(
        p.ready(),
        "a genuine state makes the restart ready at once\n{}",
        p.describe()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.seen().len(),
        1,
        "no token request on a warm start\n{}",
        p.describe()
    );
    assert_eq!(sb.read("out/token").unwrap(), token);
    assert!(
        p.logs().contains("adopted the still-valid token"),
        "{}",
        p.describe()
    );
    row.figure("token requests on restart: 0");
    row.pass();
}

#[test]
fn state_dir_is_parsed_and_checked() {
    use token_vendor::Config;
    let base = "tokens:\n  - name: a\n    token_url: https://idp.example/token\n    client_id: c\n    client_secret: s\n    outputs: [{path: /tmp/x/token}]\n";
    let c = Config::parse(
        &format!("state_dir: /var/run/tv/state\n{base}"),
        Path::new("c.yaml"),
    )
    .unwrap();
    assert_eq!(c.state_dir.as_deref(), Some(Path::new("/var/run/tv/state")));
    assert_eq!(
        Config::parse(base, Path::new("c.yaml")).unwrap().state_dir,
        None
    );
    let e = Config::parse(&format!("state_dir: \"\"\n{base}"), Path::new("c.yaml")).unwrap_err();
    assert_eq!(e.problems[0].path, "state_dir", "{e:?}");
    // `check`: a state_dir below a regular file cannot be created.
    let sb = Sandbox::new();
    sb.write("file", "x");
    let c = Config::parse(
        &format!("state_dir: {}\n{base}", sb.path("file/state").display()),
        Path::new("c.yaml"),
    )
    .unwrap();
    let problems = token_vendor::open_files(&c);
    assert!(
        problems
            .iter()
            .any(|p| p.path == "state_dir" && p.message.contains("not a directory")),
        "{problems:?}"
    );
}
