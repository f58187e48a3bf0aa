//! Scenario 5: crash consistency. The daemon is killed with SIGKILL at random moments while it rewrites its outputs many times a second; after every kill each output is one complete issued token, and a restart clears the temporary files a kill left.

use std::time::Duration;

use rand::Rng;

use super::common::*;
use super::report::Row;
use crate::helpers::*;

#[test]
fn reliability_05_kill_9_never_leaves_a_broken_output() {
    let mut row = Row::new(
        "05",
        "SIGKILL at a random moment (50-400 ms after start) of a daemon rewriting its outputs every 30-60 ms, \
         then a restart; repeated until at least 100 writes",
        "after every kill each output (and the warm-start state file) is one complete token the server issued; \
         temporary files left by a kill are gone once the next run starts; none remain at the end",
    );
    let (seed, mut rng) = seeded_rng("reliability_05");
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue_f(1.3));
    let mut cfg = Cfg::new(&server.url());
    cfg.window = (0.1, 0.2);
    let path = cfg.write(&sb);
    let state_file = sb.path("out/.token.tv-state");

    let (mut writes, mut kills, mut left_temps, mut kills_with_temps) = (0, 0, 0, 0);
    let mut all_written = false;
    let mut previous_temps: Vec<std::path::PathBuf> = Vec::new();
    let mut logs = String::new();
    while (writes < 100 || kills < 20) && kills < 80 {
        let mut p = Proc::run(&path);
        // The stale temporary files of the previous kill are removed before the admin server listens.
        let still: Vec<_> = previous_temps.iter().filter(|t| t.exists()).collect();
        assert!(
            still.is_empty(),
            "temporary files survived a restart: {still:?}"
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
        p.signal("KILL");
        p.wait_exit(Duration::from_secs(5)).expect("killed");
        kills += 1;
        writes += logs_with(&p, "token refreshed and written").len();
        logs.push_str(&p.logs());
        let issued = server.issued();
        if issued.is_empty() {
            continue;
        }
        // Each output that exists is one whole issued token. One may be missing only until the first write of all of
        // them has finished (a kill during the very first write); after that, none may ever be missing.
        let mut present = 0;
        for (rel, format) in &cfg.outputs {
            match std::fs::read(sb.path(rel)) {
                Ok(bytes) => {
                    let t = token_in(format, &bytes)
                        .unwrap_or_else(|e| panic!("{rel} after kill {kills} (seed {seed}): {e}"));
                    assert!(
                        issued.contains(&t),
                        "{rel} after kill {kills}: {t} was never issued"
                    );
                    present += 1;
                }
                Err(e) => assert!(!all_written, "{rel} after kill {kills} (seed {seed}): {e}"),
            }
        }
        all_written |= present == cfg.outputs.len();
        if let Ok(bytes) = std::fs::read(&state_file) {
            // The sealed state: a MAC line, then the JSON record (src/refresh/sink.rs).
            let record = bytes.splitn(2, |b| *b == b'\n').nth(1).unwrap_or_default();
            let t = token_in("json", record)
                .unwrap_or_else(|e| panic!("state file after kill {kills} (seed {seed}): {e}"));
            assert!(issued.contains(&t), "state file holds {t}, never issued");
        }
        previous_temps = sb.temp_files();
        left_temps += previous_temps.len();
        kills_with_temps += usize::from(!previous_temps.is_empty());
    }
    assert!(writes >= 100, "only {writes} writes in {kills} runs");

    // A last start that cannot write anything: what is left is what the restart left.
    server.set(Behavior::error(503, "temporarily_unavailable"));
    let mut p = Proc::run(&path);
    let addr = p.wait_admin();
    wait_until(Duration::from_secs(5), "a failed attempt", || {
        http_get(addr, "/status").is_some_and(|(_, b)| b.contains("temporarily_unavailable"))
    });
    let temps = sb.temp_files();
    assert!(
        temps.is_empty(),
        "temporary files after a restart: {temps:?}"
    );
    check_outputs(&sb, &cfg.outputs, &server.issued()).unwrap();
    row.figure(format!(
        "{kills} kills across {writes} writes; {kills_with_temps} kills left {left_temps} temporary files, all removed by the next start; seed {seed}"
    ));
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    scan(
        &mut row,
        &mut p,
        &[("logs of the killed runs", &logs)],
        &secrets,
    );
    row.pass();
}
