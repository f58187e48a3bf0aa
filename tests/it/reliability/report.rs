//! Results of the reliability suite: every scenario test records its row in `target/reliability/<id>.json` and
//! re-renders `target/reliability/reliability.md` from all rows present (under a lock, by atomic rename). Tests never
//! touch tracked files: `scripts/reliability-report` runs the suite and copies that rendering to `docs/reliability.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::helpers::repo_root;

/// The command that regenerates `docs/reliability.md`.
pub const COMMAND: &str = "scripts/reliability-report";

/// Where the rendering is written, under the rows' directory.
pub const RENDERED: &str = "reliability.md";

/// Every row the first table ("Reliability and security") should have, in order: (id, scenario). A row not
/// recorded yet shows as "not run".
pub const ROWS: &[(&str, &str)] = &[
    (
        "01a",
        "1. Fault while a token is published: HTTP 500 with an HTML page",
    ),
    ("01b", "1. Fault: HTTP 503 with Retry-After"),
    ("01c", "1. Fault: HTTP 429 with Retry-After"),
    ("01d", "1. Fault: hang past the client timeout"),
    ("01e", "1. Fault: body dripped one byte per second"),
    ("01f", "1. Fault: connection reset mid-body"),
    ("01g", "1. Fault: truncated JSON"),
    ("01h", "1. Fault: HTTP 200 with an HTML login page"),
    ("01i", "1. Fault: 10 MiB body with Content-Length"),
    ("01j", "1. Fault: 10 MiB body without Content-Length"),
    ("01k", "1. Fault: token_type mac"),
    ("01l", "1. Fault: invalid_client (401)"),
    ("01m", "1. Fault: invalid_scope (400)"),
    (
        "01n",
        "1. Fault: secret rotated on the server, old one revoked",
    ),
    ("01o", "1. Accepted: token_type bearer (lower case)"),
    ("01p", "1. Accepted: expires_in as a numeric string"),
    ("01q", "1. Fault: expires_in zero"),
    ("01r", "1. Fault: expires_in negative"),
    ("01s", "1. Accepted: expires_in absent, JWT with exp"),
    ("01t", "1. Accepted: expires_in absent, opaque token"),
    ("01u", "1. Accepted: expires_in absurdly large"),
    ("02", "2. Outage across refresh_time"),
    ("03a", "3. Permanent error: invalid_client request rate"),
    (
        "03b",
        "3. Permanent error: Kubernetes-style secret rotation",
    ),
    ("04", "4. Torn reads by a separate reader process"),
    ("05", "5. Crash consistency under kill -9"),
    ("06a", "6. Full disk (ENOSPC on a 64 KiB tmpfs)"),
    ("06b", "6. Read-only bind mount"),
    ("07a", "7. `run` starts while the token server is down"),
    (
        "07b",
        "7. `once --timeout 5s` while the token server is down",
    ),
    ("08a", "8. SIGTERM during an in-flight request"),
    ("08b", "8. SIGTERM during writes"),
    ("08c", "8. SIGHUP reloads the config"),
    ("09a", "9. Reload: broken YAML"),
    ("09b", "9. Reload: unknown key"),
    ("09c", "9. Reload: config file deleted mid-run"),
    ("10", "10. Leak check with hostile echoes and debug logging"),
    ("11a", "11. Hostile input: token-response parser (proptest)"),
    ("11b", "11. Hostile input: config parser (proptest)"),
    (
        "12a",
        "12. TLS: self-signed CA refused without ca_file, accepted with it",
    ),
    ("12b", "12. TLS: client certificate (mTLS)"),
];

/// The second table, "Hostile environment" (issue 9's scenarios): ids start with `h` (`h01`, `h02a`, ...), in order.
/// Scenario tests add their row here and use the same `Row` API.
pub const ROWS_HOSTILE: &[(&str, &str)] = &[
    (
        "h01a",
        "H1. Warm-start state: forged record, chosen token, no valid MAC",
    ),
    (
        "h01b",
        "H1. Warm-start state: record owned by the output uid (root)",
    ),
    ("h01c", "H1. Warm-start state: record issued in the future"),
    ("h01d", "H1. Warm-start state: lifetime of years"),
    ("h01e", "H1. Warm-start state: FIFO at the state path"),
    ("h01f", "H1. Warm-start state: symlink to another file"),
    ("h01g", "H1. Warm-start state: genuine state still adopted"),
    (
        "h02a",
        "H2. Admin port flood: 2,000 idle + 200 slow-header connections for 30 s",
    ),
    (
        "h02b",
        "H2. Admin port flood under a 32 MiB memory cgroup (root)",
    ),
    (
        "h03a",
        "H3. Config, credential and CA paths that are FIFOs, /dev/zero, directories (check, run)",
    ),
    (
        "h03b",
        "H3. Hostile config by reload: FIFO, /dev/zero, directory, 150,000-level nesting",
    ),
    (
        "h03c",
        "H3. Hostile config by reload: YAML alias bomb in a 32 MiB memory cgroup (root)",
    ),
    (
        "h04a",
        "H4. mTLS client certificate rotated in place (cert-manager / Secret update)",
    ),
    ("h04b", "H4. CA file rotated in place"),
    (
        "h04c",
        "H4. TLS files caught half-written during a rotation",
    ),
    (
        "h05b",
        "H5. Output directory swapped for a symlink after start",
    ),
    (
        "h05c",
        "H5. Output path through a symlink planted before start by another uid (root)",
    ),
    (
        "h06a",
        "H6. Discovered token endpoint: https issuer, proxy rule (at start, on a refetch, from the saved document)",
    ),
    (
        "h06b",
        "H6. Server text with control characters and 1 MB in every field (token, exchange, discovery)",
    ),
    (
        "h06c",
        "H6. A token that lives 0 s or less (`run` and `once`)",
    ),
    ("h07", "H7. Trace logging into a watched directory"),
];

/// Both tables: (heading, rows).
fn tables() -> [(&'static str, &'static [(&'static str, &'static str)]); 2] {
    [
        ("Reliability and security", ROWS),
        ("Hostile environment", ROWS_HOSTILE),
    ]
}

#[derive(Serialize, Deserialize, Clone)]
struct Record {
    id: String,
    scenario: String,
    injected: String,
    checked: String,
    result: String,
    figures: Vec<String>,
    seconds: f64,
    leak_texts: u64,
    leak_bytes: u64,
    recorded_at: String,
}

/// One row being measured. Dropped without `pass`, it records FAIL (during a panic) or `incomplete`.
pub struct Row {
    rec: Record,
    started: Instant,
    done: bool,
}

impl Row {
    pub fn new(id: &str, injected: &str, checked: &str) -> Row {
        let scenario = ROWS
            .iter()
            .chain(ROWS_HOSTILE)
            .find(|(i, _)| *i == id)
            .unwrap_or_else(|| {
                panic!("row {id} is not listed in report::ROWS or report::ROWS_HOSTILE")
            })
            .1;
        Row {
            rec: Record {
                id: id.into(),
                scenario: scenario.into(),
                injected: injected.into(),
                checked: checked.into(),
                result: String::new(),
                figures: Vec::new(),
                seconds: 0.0,
                leak_texts: 0,
                leak_bytes: 0,
                recorded_at: String::new(),
            },
            started: Instant::now(),
            done: false,
        }
    }

    /// A measured figure for the table ("requests during outage: 7").
    pub fn figure(&mut self, text: impl Into<String>) {
        self.rec.figures.push(text.into());
    }

    /// Counts texts scanned for secrets and tokens (all with zero hits, or the test would have failed).
    pub fn scanned(&mut self, texts: u64, bytes: u64) {
        self.rec.leak_texts += texts;
        self.rec.leak_bytes += bytes;
    }

    pub fn pass(mut self) {
        self.finish("pass");
    }

    /// The scenario could not run here (for example: cannot mount). Records the row as NOT RUN with the reason and
    /// fails the test: a scenario that did not run must never count as passed. Tests that need root are marked
    /// `#[ignore = "needs root: ..."]` instead, and `scripts/test` runs them where they can run.
    pub fn skip(mut self, why: &str) {
        self.rec.figures.push(format!("did not run: {why}"));
        self.finish("NOT RUN");
        panic!("row {} did not run: {why}", self.rec.id);
    }

    fn finish(&mut self, result: &str) {
        self.done = true;
        self.rec.result = result.into();
        self.rec.seconds = self.started.elapsed().as_secs_f64();
        self.rec.recorded_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        if let Err(e) = record(&self.rec) {
            eprintln!("reliability report: cannot record {}: {e}", self.rec.id);
        }
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        if !self.done {
            let r = if std::thread::panicking() {
                "FAIL"
            } else {
                "incomplete"
            };
            self.finish(r);
        }
    }
}

/// `target/reliability`, next to the test binary's profile directory.
fn results_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/it-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .filter(|t| t.join("debug").exists() || t.join("release").exists())
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("reliability")
}

static LOCK: Mutex<()> = Mutex::new(());

fn record(rec: &Record) -> std::io::Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    write_atomically(
        &dir.join(format!("{}.json", rec.id)),
        serde_json::to_string_pretty(rec)?.as_bytes(),
    )?;
    let mut rows = Vec::new();
    for e in std::fs::read_dir(&dir)?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            if let Some(r) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            {
                rows.push(r);
            }
        }
    }
    write_atomically(&dir.join(RENDERED), render(&rows).as_bytes())
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn render(rows: &[Record]) -> String {
    let mut out = String::new();
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let _ = writeln!(out, "# Reliability and security results\n");
    let _ = writeln!(
        out,
        "Generated from the test suite's results (`tests/it/reliability/`), not by hand: every scenario test records \
         its row under `target/reliability/` when it finishes, and `{COMMAND}` runs the suite and writes this file \
         from those rows (last written {now}). Each row's own time of recording is in \
         `target/reliability/<id>.json`.\n"
    );
    let _ = writeln!(
        out,
        "The real `token-vendor` binary runs against token servers on 127.0.0.1 that the tests script at run time. \
         Every scenario also scans every log line, `/status`, `/readyz`, `/livez`, `/metrics` body and error message \
         it saw for every client secret, client id and issued token (scenario 10).\n"
    );
    let (mut pass, mut other, mut listed, mut texts, mut bytes) = (0, 0, 0, 0u64, 0u64);
    for (heading, table) in tables() {
        let _ = writeln!(out, "## {heading}\n");
        if table.is_empty() {
            let _ = writeln!(out, "No scenarios yet.\n");
            continue;
        }
        let _ = writeln!(
            out,
            "| # | Scenario | Injected | Checked | Result | Measured | Time |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
        for (id, scenario) in table {
            listed += 1;
            let Some(r) = rows.iter().find(|r| r.id == *id) else {
                other += 1;
                let _ = writeln!(out, "| {id} | {} | | | **not run** | | |", cell(scenario));
                continue;
            };
            if r.result == "pass" {
                pass += 1;
            } else {
                other += 1;
            }
            texts += r.leak_texts;
            bytes += r.leak_bytes;
            let mut figures = r.figures.join("; ");
            if r.leak_texts > 0 && r.result == "pass" {
                if !figures.is_empty() {
                    figures.push_str("; ");
                }
                figures.push_str(&format!(
                    "leak scan: {} texts, {} KiB, 0 hits",
                    r.leak_texts,
                    r.leak_bytes.div_ceil(1024)
                ));
            }
            let result = if r.result == "pass" {
                "pass".to_string()
            } else {
                format!("**{}**", r.result)
            };
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {} | {result} | {} | {:.1} s |",
                cell(&r.scenario),
                cell(&r.injected),
                cell(&r.checked),
                cell(&figures),
                r.seconds
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "{pass} of {listed} rows pass{}. Leak scan over all rows: {texts} texts, {} KiB, 0 hits.",
        if other == 0 {
            String::new()
        } else {
            format!("; {other} do not")
        },
        bytes.div_ceil(1024)
    );
    out
}

#[test]
fn every_row_id_is_listed_once_and_hostile_ids_start_with_h() {
    let mut ids: Vec<&str> = ROWS.iter().chain(ROWS_HOSTILE).map(|(i, _)| *i).collect();
    assert!(ROWS.iter().all(|(i, _)| !i.starts_with('h')));
    assert!(ROWS_HOSTILE.iter().all(|(i, _)| i.starts_with('h')));
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a row id is listed twice");
    // A rendering without any recorded row says "not run" for every listed row, in both tables.
    let text = render(&[]);
    assert_eq!(text.matches("**not run**").count(), n);
    assert!(
        text.contains("## Reliability and security") && text.contains("## Hostile environment")
    );
}
