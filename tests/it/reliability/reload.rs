//! Scenario 9: reloads of a broken config, a config with an unknown key, and a deleted config: the running config
//! keeps refreshing, each error is logged once with its key path, and the reload metric counts it.

use std::time::Duration;

use super::common::*;
use super::report::Row;
use crate::helpers::*;

/// Waits (by polling) for `n` more tokens to be issued and one of them written: proof that the old config still runs.
fn keeps_refreshing(server: &TokenServer, sb: &Sandbox, n: usize) {
    let start = server.issued().len();
    wait_until(Duration::from_secs(10), "more refreshes", || {
        server.issued().len() >= start + n
    });
    wait_until(Duration::from_secs(5), "a newer token written", || {
        sb.read("out/token")
            .is_some_and(|t| server.issued()[start..].contains(&t))
    });
}

/// A negative check ("logged once") needs re-reads of the same config to have happened, proven rather than slept
/// for: the main loop handles one event at a time and logs each SIGHUP before re-reading, so once the second of two
/// SIGHUPs is logged, the first one's re-read is done (and the 200 ms re-reads keep running in between).
fn let_rereads_pass(p: &Proc) {
    let hups = || logs_with(p, "reload requested (SIGHUP)").len();
    let before = hups();
    for n in 1..=2 {
        p.signal("HUP");
        wait_until(Duration::from_secs(10), "a SIGHUP re-read", || {
            hups() >= before + n
        });
    }
}

/// Replaces the config by rename, as an editor or a ConfigMap update does: a write in place can be read half-done
/// by the 200 ms re-read, which is a second (empty-document) error the scenario does not inject.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn reliability_09_bad_reloads_keep_the_running_config() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3));
    let mut cfg = Cfg::new(&server.url());
    cfg.poll = "200ms";
    std::fs::create_dir_all(sb.path("logs")).unwrap();
    let path = cfg.write(&sb);
    let good = std::fs::read_to_string(&path).unwrap();
    // Logs go elsewhere, so the config directory changes only when the test changes it.
    let mut p = Proc::spawn(
        &["run", "--config", path.to_str().unwrap()],
        &sb.path("logs"),
        &[],
    );
    wait_ready(&mut p, Duration::from_secs(10));
    let addr = p.wait_admin();
    let errors = || {
        http_get(addr, "/metrics").map_or(-1.0, |(_, m)| {
            metric(
                &m,
                "token_vendor_config_reloads_total",
                &[("result", "error")],
            )
        })
    };
    let secrets = cfg.secrets();

    // 9a: broken YAML.
    let mut row = Row::new(
        "09a",
        "the config file is replaced by broken YAML (re-read every 200 ms and on two SIGHUPs)",
        "the running config keeps refreshing; one `new config rejected` log line naming the line and column; \
         `token_vendor_config_reloads_total{result=\"error\"}` = 1",
    );
    let mark = log_len(&sb);
    replace(&path, &format!("{good}  - name: [unclosed\n"));
    wait_until(Duration::from_secs(5), "a reload error", || errors() == 1.0);
    let_rereads_pass(&p);
    let logs = p_logs_since(&sb, mark);
    keeps_refreshing(&server, &sb, 3);
    let rejected = rejected_lines(&logs);
    assert_eq!(rejected.len(), 1, "{logs}");
    assert!(
        rejected[0]["key"].as_str().unwrap().starts_with("line "),
        "{}",
        rejected[0]
    );
    assert_eq!(errors(), 1.0);
    row.figure(format!(
        "logged once: key `{}`",
        rejected[0]["key"].as_str().unwrap()
    ));
    scan(&mut row, &mut p, &[], &secrets_now(&secrets, &server));
    row.pass();

    // 9b: an unknown key.
    let mut row = Row::new(
        "09b",
        "the config gains an unknown key `tokens[0].scopes` (re-read every 200 ms and on two SIGHUPs)",
        "the running config keeps refreshing; one `new config rejected` log line with key `tokens[0].scopes`; \
         the error count goes to 2",
    );
    let mark = log_len(&sb);
    replace(
        &path,
        &good.replace("    client_id:", "    scopes: read\n    client_id:"),
    );
    wait_until(Duration::from_secs(5), "a second reload error", || {
        errors() == 2.0
    });
    let_rereads_pass(&p);
    let logs = p_logs_since(&sb, mark);
    keeps_refreshing(&server, &sb, 3);
    let rejected = rejected_lines(&logs);
    assert_eq!(rejected.len(), 1, "{logs}");
    assert_eq!(rejected[0]["key"], "tokens[0].scopes", "{}", rejected[0]);
    assert!(rejected[0]["problem"]
        .as_str()
        .unwrap()
        .contains("unknown key"));
    assert_eq!(errors(), 2.0);
    let problem = rejected[0]["problem"].as_str().unwrap();
    row.figure(format!(
        "logged once: {}",
        problem.split(';').next().unwrap()
    ));
    scan(&mut row, &mut p, &[], &secrets_now(&secrets, &server));
    row.pass();

    // 9c: the file disappears, then a good one returns.
    let mut row = Row::new(
        "09c",
        "the config file is deleted mid-run (re-read every 200 ms and on two SIGHUPs), later restored with a change",
        "the running config keeps refreshing; one `cannot re-read the config` log line; the error count goes to 3; \
         the restored file is applied (success count 1)",
    );
    let mark = log_len(&sb);
    std::fs::remove_file(&path).unwrap();
    wait_until(Duration::from_secs(5), "a third reload error", || {
        errors() == 3.0
    });
    let_rereads_pass(&p);
    let logs = p_logs_since(&sb, mark);
    keeps_refreshing(&server, &sb, 3);
    let unreadable: Vec<_> = log_values(&logs)
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot re-read the config"))
        })
        .collect();
    assert_eq!(unreadable.len(), 1, "{logs}");
    assert_eq!(errors(), 3.0);
    assert!(http_get(addr, "/readyz").is_some_and(|r| r.0 == 200));
    replace(
        &path,
        &good.replace("    client_id:", "    scope: read\n    client_id:"),
    );
    wait_until(
        Duration::from_secs(5),
        "the restored config applied",
        || {
            http_get(addr, "/metrics").is_some_and(|(_, m)| {
                metric(
                    &m,
                    "token_vendor_config_reloads_total",
                    &[("result", "success")],
                ) == 1.0
            })
        },
    );
    wait_until(
        Duration::from_secs(10),
        "a token requested with the new scope",
        || {
            server
                .seen()
                .last()
                .is_some_and(|s| s.form.get("scope").is_some_and(|v| v == &["read"]))
        },
    );
    row.figure("logged once; the restored config was applied and used".to_string());
    scan(&mut row, &mut p, &[], &secrets_now(&secrets, &server));
    row.pass();
}

fn secrets_now(secrets: &[String], server: &TokenServer) -> Vec<String> {
    let mut s = secrets.to_vec();
    s.extend(server.issued());
    s
}

fn log_files(sb: &Sandbox) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(sb.path("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "stderr"))
        .collect();
    v.sort();
    v
}

fn log_len(sb: &Sandbox) -> usize {
    log_files(sb)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default().len())
        .sum()
}

fn p_logs_since(sb: &Sandbox, from: usize) -> String {
    let all: String = log_files(sb)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    all[from.min(all.len())..].to_string()
}

fn log_values(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn rejected_lines(logs: &str) -> Vec<serde_json::Value> {
    log_values(logs)
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("new config rejected"))
        })
        .collect()
}
