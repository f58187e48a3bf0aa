//! Scenario 4: torn reads. A separate process (python3) reads every output in a tight loop while the daemon refreshes many times a second; every read must be one complete token that the server issued.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::*;
use super::report::Row;
use crate::helpers::*;

/// Reads the outputs given as FORMAT=PATH until the stop file appears; prints a JSON summary.
const READER: &str = r#"
import json, os, re, sys
stop, out = sys.argv[1], sys.argv[2]
files = [a.split("=", 1) for a in sys.argv[3:]]
tok = re.compile(r"^[\x21-\x7e]+$")
reads, errors, seen = 0, [], {f: set() for f, _ in files}
def token(fmt, b):
    t = b.decode("utf-8")
    if fmt == "raw":
        v = t
    elif fmt == "header":
        assert t.startswith("Bearer "), "no Bearer prefix"
        v = t[len("Bearer "):]
    elif fmt == "json":
        j = json.loads(t)
        assert j["token_type"] == "Bearer" and isinstance(j["expires_in"], (int, float)), "fields"
        for k in ("issued_at", "refresh_time", "expires_at"):
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", j[k]), k
        v = j["access_token"]
    else:
        lines = t.split("\n")
        assert len(lines) == 4 and lines[3] == "", "line count"
        assert lines[0].startswith("ACCESS_TOKEN=") and lines[1] == "TOKEN_TYPE=Bearer", "keys"
        assert re.match(r"^EXPIRES_AT=\d{4}-\d\d-\d\dT[\d:.]+Z$", lines[2]), "EXPIRES_AT"
        v = lines[0][len("ACCESS_TOKEN="):]
    assert tok.match(v), "token characters"
    return v
while not os.path.exists(stop):
    for fmt, path in files:
        reads += 1
        b = None
        try:
            with open(path, "rb") as f:
                b = f.read()
            seen[fmt].add(token(fmt, b))
        except Exception as e:
            if len(errors) < 20:
                errors.append("%s: %s: %r" % (path, e, b[:200] if b is not None else None))
json.dump({"reads": reads, "errors": errors, "seen": {f: sorted(s) for f, s in seen.items()}}, open(out + ".tmp", "w"))
os.rename(out + ".tmp", out)
"#;

#[test]
fn reliability_04_readers_never_see_a_torn_token() {
    let mut row = Row::new(
        "04",
        "a 1.3 s token refreshed every 30-60 ms while a separate python3 process opens and reads all four outputs \
         in a tight loop",
        "at least 200 refreshes; every read is complete and parses in its format; every token read (raw, header, \
         json `access_token`, env) is one the server issued",
    );
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue_f(1.3));
    let mut cfg = Cfg::new(&server.url());
    cfg.window = (0.1, 0.2);
    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    wait_ready(&mut p, Duration::from_secs(10));
    sb.write("reader.py", READER);
    let stop = sb.path("reader.stop");
    let result = sb.path("reader.json");
    let mut args = vec![
        sb.path("reader.py").display().to_string(),
        stop.display().to_string(),
        result.display().to_string(),
    ];
    for (p, f) in &cfg.outputs {
        args.push(format!("{f}={}", sb.path(p).display()));
    }
    let mut reader = Command::new("python3")
        .args(&args)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(sb.path("reader.stderr")).unwrap())
        .spawn()
        .expect("python3");
    let n0 = server.issued().len();
    let started = Instant::now();
    let ok = eventually(Duration::from_secs(60), || {
        server.issued().len() >= n0 + 200
    });
    std::fs::write(&stop, b"").unwrap();
    let finished = eventually(Duration::from_secs(10), || result.exists());
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(
        ok,
        "only {} refreshes\n{}",
        server.issued().len() - n0,
        p.describe()
    );
    assert!(
        finished,
        "the reader did not finish: {}",
        sb.read("reader.stderr").unwrap_or_default()
    );
    let took = started.elapsed().as_secs_f64();
    let refreshes = server.issued().len() - n0;
    let summary: serde_json::Value =
        serde_json::from_str(&sb.read("reader.json").unwrap()).unwrap();
    let errors = summary["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "torn or invalid reads: {errors:#?}");
    let issued = server.issued();
    let mut distinct = 0;
    for (_, f) in &cfg.outputs {
        let seen = summary["seen"][f].as_array().unwrap();
        for t in seen {
            assert!(
                issued.iter().any(|i| i == t.as_str().unwrap()),
                "{f}: {t} was never issued"
            );
        }
        distinct = distinct.max(seen.len());
    }
    let reads = summary["reads"].as_u64().unwrap();
    assert!(reads >= 1000, "only {reads} reads");
    assert!(distinct >= 50, "the reader saw only {distinct} tokens");
    let (_, metrics) = p.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "token_vendor_output_write_errors_total",
            &[("token", "svc")]
        ),
        0.0
    );
    row.figure(format!(
        "{refreshes} refreshes in {took:.1} s; {reads} reads by the reader, 0 torn; {distinct} distinct tokens seen per file"
    ));
    let mut secrets = cfg.secrets();
    secrets.extend(issued);
    scan(&mut row, &mut p, &[], &secrets);
    row.pass();
}
