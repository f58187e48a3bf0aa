//! Shared parts of the reliability suite: configs, output checks, admin queries, a readiness probe, memory figures and the leak scan.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::report::Row;
use crate::helpers::*;

/// The four outputs every scenario writes, one per format: (path below the sandbox, format).
pub const OUTPUTS: [(&str, &str); 4] = [
    ("out/token", "raw"),
    ("out/token.header", "header"),
    ("out/token.json", "json"),
    ("out/token.env", "env"),
];

pub fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A daemon config with short timings; every field has a default suited to the suite.
pub struct Cfg {
    pub url: String,
    pub client_id: String,
    pub secret: String,
    /// Absolute path of the client secret file; written by `write` unless it exists.
    pub secret_file: Option<PathBuf>,
    pub window: (f64, f64),
    pub min_backoff: &'static str,
    pub max_backoff: &'static str,
    pub timeout: &'static str,
    /// Extra `http` keys, each starting with ", ".
    pub http: String,
    pub poll: &'static str,
    pub level: &'static str,
    /// Extra token keys, each line indented by four spaces.
    pub extra: String,
    /// Extra top-level lines.
    pub top: String,
    /// Outputs: (path below the sandbox, format).
    pub outputs: Vec<(String, &'static str)>,
}

impl Cfg {
    pub fn new(url: &str) -> Cfg {
        Cfg {
            url: url.to_string(),
            client_id: format!("cid-{}", rand_hex()),
            secret: format!("csecret-{}{}", rand_hex(), rand_hex()),
            secret_file: None,
            window: (0.05, 0.1),
            min_backoff: "200ms",
            max_backoff: "1s",
            timeout: "1s",
            http: String::new(),
            poll: "60s",
            level: "info",
            extra: String::new(),
            top: String::new(),
            outputs: OUTPUTS.iter().map(|(p, f)| (p.to_string(), *f)).collect(),
        }
    }

    /// Everything that must never appear in logs or admin answers (issued tokens are added by the caller).
    pub fn secrets(&self) -> Vec<String> {
        vec![self.secret.clone(), self.client_id.clone()]
    }

    pub fn yaml(&self, sb: &Sandbox) -> String {
        let d = sb.dir.path().display();
        let secret_file = self
            .secret_file
            .clone()
            .unwrap_or_else(|| sb.path("secret"));
        let mut y = format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: {}, format: json}}\nrefresh: {{window: [{}, {}], min_backoff: {}, max_backoff: {}}}\nreload: {{poll_interval: {}}}\n{}tokens:\n  - name: svc\n    token_url: {}\n    client_id: {}\n    client_secret_file: {}\n    http: {{timeout: {}, connect_timeout: {}{}}}\n{}    outputs:\n",
            self.level,
            self.window.0,
            self.window.1,
            self.min_backoff,
            self.max_backoff,
            self.poll,
            self.top,
            self.url,
            self.client_id,
            secret_file.display(),
            self.timeout,
            self.timeout,
            self.http,
            self.extra,
        );
        for (p, f) in &self.outputs {
            y.push_str(&format!("      - {{path: {d}/{p}, format: {f}}}\n"));
        }
        y
    }

    /// Writes the secret file (if missing) and `c.yaml`; returns the config path.
    pub fn write(&self, sb: &Sandbox) -> PathBuf {
        let secret_file = self
            .secret_file
            .clone()
            .unwrap_or_else(|| sb.path("secret"));
        if std::fs::symlink_metadata(&secret_file).is_err() {
            std::fs::write(&secret_file, format!("{}\n", self.secret)).unwrap();
        }
        sb.write("c.yaml", &self.yaml(sb))
    }
}

/// The access token in one output file, or why the bytes are not one complete token.
pub fn token_in(format: &str, bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let plain = |t: &str| -> Result<String, String> {
        if !t.is_empty() && t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            Ok(t.to_string())
        } else {
            Err(format!("not a token: {t:?}"))
        }
    };
    match format {
        "raw" => plain(text),
        "header" => plain(
            text.strip_prefix("Bearer ")
                .ok_or_else(|| format!("no Bearer prefix: {text:?}"))?,
        ),
        "json" => {
            let j: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("bad JSON ({e}): {text:?}"))?;
            for k in ["issued_at", "refresh_time", "expires_at"] {
                j[k].as_str()
                    .and_then(|s| humantime::parse_rfc3339(s).ok())
                    .ok_or_else(|| format!("bad {k}: {text:?}"))?;
            }
            if j["token_type"] != "Bearer" || !j["expires_in"].is_number() {
                return Err(format!("bad fields: {text:?}"));
            }
            plain(j["access_token"].as_str().unwrap_or(""))
        }
        "env" => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            match lines.as_slice() {
                [a, b, c]
                    if a.starts_with("ACCESS_TOKEN=")
                        && *b == "TOKEN_TYPE=Bearer\n"
                        && c.starts_with("EXPIRES_AT=")
                        && c.ends_with('\n') =>
                {
                    humantime::parse_rfc3339(c["EXPIRES_AT=".len()..].trim_end())
                        .map_err(|_| format!("bad EXPIRES_AT: {text:?}"))?;
                    plain(a["ACCESS_TOKEN=".len()..].trim_end())
                }
                _ => Err(format!("not a complete env file: {text:?}")),
            }
        }
        other => Err(format!("unknown format {other}")),
    }
}

/// The bytes of every configured output (`None` for a missing file).
pub fn snapshot(sb: &Sandbox, outputs: &[(String, &str)]) -> Vec<Option<Vec<u8>>> {
    outputs
        .iter()
        .map(|(p, _)| std::fs::read(sb.path(p)).ok())
        .collect()
}

/// Checks that every output holds one complete token that the server issued; returns the tokens found.
pub fn check_outputs(
    sb: &Sandbox,
    outputs: &[(String, &str)],
    issued: &[String],
) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for (p, f) in outputs {
        let bytes = std::fs::read(sb.path(p)).map_err(|e| format!("{p}: {e}"))?;
        let t = token_in(f, &bytes).map_err(|e| format!("{p}: {e}"))?;
        if !issued.contains(&t) {
            return Err(format!("{p}: {t:?} was never issued"));
        }
        found.push(t);
    }
    Ok(found)
}

/// The times in `out/token.json`: (access_token, issued_at, refresh_time, expires_at, expires_in).
pub fn json_times(sb: &Sandbox) -> Option<(String, SystemTime, SystemTime, SystemTime, f64)> {
    let j: serde_json::Value = serde_json::from_str(&sb.read("out/token.json")?).ok()?;
    let t = |k: &str| humantime::parse_rfc3339(j[k].as_str()?).ok();
    Some((
        j["access_token"].as_str()?.to_string(),
        t("issued_at")?,
        t("refresh_time")?,
        t("expires_at")?,
        j["expires_in"].as_f64()?,
    ))
}

/// Polls `/status` of the (only) token until `ok` holds for it; panics with the last one after `timeout`. State is
/// published by the refresher task after the files are written, so an assertion on it must wait, not read once.
pub fn wait_status(
    p: &mut Proc,
    timeout: Duration,
    what: &str,
    mut ok: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let addr = p.wait_admin();
    let mut last = serde_json::Value::Null;
    let done = eventually(timeout, || {
        last = http_get(addr, "/status")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .map(|v| v["tokens"][0].clone())
            .unwrap_or(serde_json::Value::Null);
        ok(&last)
    });
    assert!(
        done,
        "timed out after {timeout:?} waiting for {what} in /status; last: {last}\n{}",
        p.describe()
    );
    last
}

/// `/status` of the (only) token.
pub fn status(p: &mut Proc) -> serde_json::Value {
    let (code, body) = p.get("/status");
    assert_eq!(code, 200, "/status: {body}\n{}", p.describe());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["tokens"][0].clone()
}

/// One sample of a Prometheus text body; 0 when the series is absent.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series, value) = match rest.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        if !(series.is_empty() || series.starts_with('{')) {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// Resident and peak resident memory of a process, in KiB.
pub fn mem_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One look at the admin server.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub wall: SystemTime,
    pub ready: u16,
    pub live: u16,
    pub latency: Duration,
}

/// Polls `/readyz` and `/livez` in the background until stopped.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Probe {
    pub fn start(addr: SocketAddr, every: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let at = Instant::now();
                let wall = SystemTime::now();
                let ready = http_get(addr, "/readyz").map_or(0, |r| r.0);
                let live = http_get(addr, "/livez").map_or(0, |r| r.0);
                out.push(Sample {
                    at,
                    wall,
                    ready,
                    live,
                    latency: at.elapsed(),
                });
                std::thread::sleep(every);
            }
            out
        });
        Probe {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Scans everything the process said (logs, stdout, and the admin answers if it still runs) plus `extra` for every
/// secret and token; panics on a hit, else counts the texts in the row.
pub fn scan(row: &mut Row, p: &mut Proc, extra: &[(&str, &str)], secrets: &[String]) {
    let mut texts: Vec<(String, String)> = vec![
        ("stderr (log lines)".into(), p.logs()),
        ("stdout".into(), p.out()),
    ];
    if p.child.try_wait().ok().flatten().is_none() {
        for path in ["/status", "/readyz", "/livez", "/metrics"] {
            let (_, body) = p.get(path);
            texts.push((path.to_string(), body));
        }
    }
    for (what, t) in extra {
        texts.push((what.to_string(), t.to_string()));
    }
    let secrets: Vec<String> = secrets.iter().filter(|s| s.len() >= 6).cloned().collect();
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_no_leaks(&refs, &secrets);
    row.scanned(
        texts.len() as u64,
        texts.iter().map(|(_, t)| t.len() as u64).sum(),
    );
}

/// Log lines whose message starts with `prefix`.
pub fn logs_with(p: &Proc, prefix: &str) -> Vec<serde_json::Value> {
    p.log_lines()
        .into_iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .collect()
}

/// Waits until `/readyz` answers 200.
pub fn wait_ready(p: &mut Proc, timeout: Duration) {
    let addr = p.wait_admin();
    let ok = eventually(timeout, || {
        http_get(addr, "/readyz").is_some_and(|r| r.0 == 200)
    });
    assert!(ok, "not ready within {timeout:?}\n{}", p.describe());
}

/// A mount point that is unmounted (lazily, so a busy file cannot stop it) when dropped.
pub struct Mount(pub PathBuf);

impl Mount {
    /// Runs `mount ARGS`; `None` when this machine cannot (not root, no CAP_SYS_ADMIN).
    pub fn new(target: &Path, args: &[&str]) -> Option<Mount> {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "mount {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Mount(target.to_path_buf()))
    }

    pub fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", opts])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts} {}", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A random generator whose seed is printed, and taken from `RELIABILITY_SEED` when set, so a failing run can be repeated.
pub fn seeded_rng(test: &str) -> (u64, rand::rngs::StdRng) {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (set RELIABILITY_SEED to repeat)");
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}
