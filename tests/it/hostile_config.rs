//! Issue 16 §2 and §4: a config whose YAML aliases would expand past any memory limit, reloaded into a sidecar in a
//! 32 MiB memory cgroup; trace logging written into a watched directory does not feed itself.

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::reliability::report::Row;

/// One token from `url`, output under `out/`, in the sandbox's directory (which is watched: the config is there).
fn config_text(sb: &Sandbox, url: &str, log: &str) -> String {
    let d = sb.dir.path().display();
    format!(
        "listen: \"127.0.0.1:0\"\nlog: {{{log}}}\nrefresh: {{min_backoff: 200ms, max_backoff: 1s}}\nreload: {{poll_interval: 1h}}\ntokens:\n  - name: svc\n    token_url: {url}\n    client_id: the-client\n    client_secret: s3cr3t-config\n    outputs:\n      - {{path: {d}/out/token}}\n"
    )
}

/// A config whose anchors and aliases expand to `outer` x `inner` copies of a `pad`-byte string (nested two deep,
/// within serde_yaml_ng's own repetition limit), from a file of about `pad` bytes.
fn alias_bomb(base: &str, pad: usize, inner: usize, outer: usize) -> String {
    let a = vec!["*a"; inner].join(", ");
    let b = vec!["*b"; outer].join(", ");
    format!(
        "{base}pad: &a {}\nlevel1: &b [{a}]\nlevel2: [{b}]\n",
        "x".repeat(pad)
    )
}

#[test]
#[ignore = "needs root: a memory cgroup (CI runs it)"]
fn h03c_an_alias_bomb_reloaded_in_a_32_mib_cgroup_is_refused_and_the_sidecar_lives() {
    let (pad, inner, outer) = (100_000, 190, 190);
    let expanded_gib = (pad * inner * outer) as f64 / f64::from(1u32 << 30);
    let mut row = Row::new(
        "h03c",
        &format!(
            "the config replaced (then SIGHUP) by a {} KB document whose nested anchors and aliases (depth 2) expand to {expanded_gib:.1} GiB; the sidecar alone in a 32 MiB memory cgroup (swap 0)",
            (pad + 8 * (inner + outer)) / 1000
        ),
        "one `new config rejected` error naming the file, line, column and the alias rule; no OOM kill; alive, /livez 200; the running config keeps refreshing",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(3));
    let good = config_text(&sb, &server.url(), "level: info, format: json");
    let cfg = sb.write("config.yaml", &good);
    let cg = Cgroup::create("alias");
    let mut p = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        sb.dir.path(),
        &[],
    );
    cg.enter(p.pid());
    p.wait_admin();
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let bomb = alias_bomb(&good, pad, inner, outer);
    let tmp = sb.write("config.yaml.new", &bomb);
    std::fs::rename(&tmp, &cfg).unwrap();
    p.signal("HUP");
    let rejected = |p: &Proc| {
        p.log_lines()
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("new config rejected"))
            })
            .collect::<Vec<_>>()
    };
    let dead = |p: &mut Proc| p.child.try_wait().ok().flatten();
    wait_until(
        Duration::from_secs(20),
        "the reload refused (or the sidecar gone)",
        || !rejected(&p).is_empty() || dead(&mut p).is_some(),
    );
    let kills = cg.oom_kills();
    assert_eq!(
        kills,
        0,
        "the sidecar's cgroup saw an OOM kill
{}",
        p.describe()
    );
    assert!(
        dead(&mut p).is_none(),
        "the sidecar died
{}",
        p.describe()
    );
    let lines = rejected(&p);
    let problem = lines[0]["problem"].as_str().unwrap_or_default().to_string();
    assert!(
        problem.contains("line 12 column 6: `&a` is a YAML anchor")
            && problem.contains("refused before parsing")
            && lines[0]["file"].as_str() == cfg.to_str(),
        "{}",
        p.describe()
    );
    // The running config stays: two more tokens are vended and written after the refusal.
    let issued = server.issued().len();
    wait_until(
        Duration::from_secs(15),
        "two refreshes after the refusal",
        || server.issued().len() >= issued + 2,
    );
    assert_eq!(p.get("/livez").0, 200);
    assert!(p.ready(), "{}", p.describe());
    assert_eq!(rejected(&p).len(), 1, "logged once\n{}", p.describe());
    let peak = cg.peak_bytes();
    row.figure(format!(
        "refused in the pre-check: `{}`; cgroup {}: oom_kill {kills}, peak charge {}; {} tokens vended after the refusal",
        problem.chars().take(60).collect::<String>(),
        if cg.v2 { "v2" } else { "v1" },
        peak.map_or("unknown".into(), |b| format!("{:.2} MiB", b as f64 / 1048576.0)),
        server.issued().len() - issued
    ));
    drop(p);
    row.pass();
}

/// How long the trace-logging sidecar is watched, and the most its log may grow meanwhile.
const TRACE_WATCH: Duration = Duration::from_secs(5);
const TRACE_LOG_BOUND: u64 = 256 * 1024;

#[test]
fn h07_trace_logging_into_a_watched_directory_does_not_feed_itself() {
    let mut row = Row::new(
        "h07",
        "`TOKEN_VENDOR_LOG=trace`, stderr written to a file in the config's (watched) directory; a served file changed once",
        &format!(
            "the log grows by less than {} KiB over {} s once started; the change is still seen",
            TRACE_LOG_BOUND / 1024,
            TRACE_WATCH.as_secs()
        ),
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(600));
    let cfg = sb.write(
        "config.yaml",
        &config_text(&sb, &server.url(), "level: info, format: json"),
    );
    let mut p = Proc::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        sb.dir.path(),
        &[("TOKEN_VENDOR_LOG", "trace")],
    );
    p.wait_admin();
    assert_eq!(
        p.stderr.parent(),
        Some(sb.dir.path()),
        "the log is in the watched directory"
    );
    wait_until(Duration::from_secs(10), "first token", || p.ready());
    let size = |p: &Proc| std::fs::metadata(&p.stderr).map_or(0, |m| m.len());
    let start = size(&p);
    let began = Instant::now();
    let mut peak_rate = 0.0f64;
    let mut last = (began, start);
    // A loop writes megabytes a second: stop as soon as the bound is crossed, else watch the whole window.
    while began.elapsed() < TRACE_WATCH && size(&p) - start < TRACE_LOG_BOUND {
        std::thread::sleep(Duration::from_millis(250));
        let now = (Instant::now(), size(&p));
        peak_rate = peak_rate
            .max((now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64() / 1024.0);
        last = now;
    }
    let grown = size(&p) - start;
    assert!(
        grown < TRACE_LOG_BOUND,
        "the trace log grew by {grown} bytes in {:?}: it feeds itself\n{}",
        began.elapsed(),
        tail(&p.logs())
    );
    // The watcher still works at trace level: a served file's change reloads the config.
    std::fs::write(
        &cfg,
        config_text(&sb, &server.url(), "level: info, format: json") + "\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the config change seen", || {
        p.logs().contains("a watched file changed; re-reading")
    });
    row.figure(format!(
        "log grew {grown} bytes in {:.1} s (peak {peak_rate:.1} KiB/s); {} lines in all",
        began.elapsed().as_secs_f64(),
        p.logs().lines().count()
    ));
    row.pass();
}

/// The last lines of a long log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..]
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}
