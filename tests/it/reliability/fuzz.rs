//! Scenario 11: hostile input. Proptest feeds the token-response parser and the config parser tens of thousands of
//! random, structured and mutated inputs: no panic, invariants on everything accepted, and memory bounded (measured
//! by a counting allocator that tracks only the thread under test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use serde_json::{json, Map, Value};

use token_vendor::{
    jwt_exp, parse_token_response, render, Config, Format, TokenRecord, MAX_LIFETIME,
};

use super::report::Row;

// ---- memory accounting for the current thread only ----

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let now = CURRENT.get() + delta;
            CURRENT.set(now);
            if now > PEAK.get() {
                PEAK.set(now);
            }
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the wrapper only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        note(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            note(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the peak bytes this thread had allocated meanwhile.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    CURRENT.set(0);
    PEAK.set(0);
    TRACK.set(true);
    let r = f();
    TRACK.set(false);
    (r, PEAK.get().max(0) as usize)
}

fn cases() -> u32 {
    std::env::var("RELIABILITY_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn runner() -> TestRunner {
    TestRunner::new(PtConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..PtConfig::default()
    })
}

/// Statistics of one proptest run.
#[derive(Default)]
struct Stats {
    cases: Cell<u64>,
    accepted: Cell<u64>,
    peak: Cell<usize>,
    largest: Cell<usize>,
}

impl Stats {
    fn add(&self, len: usize, accepted: bool, peak: usize) {
        self.cases.set(self.cases.get() + 1);
        self.accepted.set(self.accepted.get() + u64::from(accepted));
        self.peak.set(self.peak.get().max(peak));
        self.largest.set(self.largest.get().max(len));
    }
}

// ---- token responses ----

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn odd_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(1.3),
            json!(1e300),
            json!(-1e300),
            json!(5e-324),
            json!(315_360_000),
            json!(315_360_001),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(3600),
        ]),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        odd_number(),
        ".{0,40}".prop_map(Value::from),
        "[-+0-9 .eExX_]{0,16}".prop_map(Value::from),
        jwt().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JWT-shaped token whose payload's `exp` is anything at all.
fn jwt() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            odd_number(),
            ".{0,8}".prop_map(Value::from),
            Just(Value::Null)
        ],
        "[A-Za-z0-9_-]{0,12}",
        any::<bool>(),
    )
        .prop_map(|(exp, sig, valid_json)| {
            let payload = if valid_json {
                json!({"sub": "x", "exp": exp}).to_string()
            } else {
                format!("{{\"exp\": {exp}")
            };
            format!("{}.{}.{sig}", b64(r#"{"alg":"none"}"#), b64(&payload))
        })
}

/// Close to a real response, so the success path is exercised often.
fn near_valid() -> impl Strategy<Value = Map<String, Value>> {
    let token = prop_oneof![
        4 => "[!-~]{1,64}".prop_map(Value::from),
        2 => jwt().prop_map(Value::from),
        1 => ".{0,20}".prop_map(Value::from),
        1 => json_value(),
    ];
    let token_type = prop_oneof![
        6 => prop::sample::select(vec!["Bearer", "bearer", "BEARER"]).prop_map(Value::from),
        1 => prop::sample::select(vec!["mac", "", "Bearer ", "Bearer\u{0}", "DPoP"]).prop_map(Value::from),
        1 => leaf(),
    ];
    let expires_in = prop_oneof![
        3 => odd_number(),
        1 => "[-+0-9 .eE]{0,12}".prop_map(Value::from),
        1 => leaf(),
    ];
    (
        prop::option::weighted(0.95, token),
        prop::option::weighted(0.9, token_type),
        prop::option::weighted(0.8, expires_in),
        prop::option::of(leaf()),
        prop::collection::btree_map(
            "[a-z_]{1,12}",
            prop_oneof![3 => leaf(), 1 => json_value()],
            0..3,
        ),
    )
        .prop_map(|(t, ty, e, scope, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [
                ("access_token", t),
                ("token_type", ty),
                ("expires_in", e),
                ("scope", scope),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m
        })
}

/// Random byte edits of a serialized near-valid response.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        near_valid(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    )
        .prop_map(|(m, edits)| {
            let mut b = serde_json::to_vec(&m).unwrap();
            for (at, byte, op) in edits {
                let i = if b.is_empty() { 0 } else { at.index(b.len()) };
                match op {
                    0 if !b.is_empty() => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ if !b.is_empty() => {
                        b.remove(i);
                    }
                    _ => b.push(byte),
                }
            }
            b
        })
}

fn response_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512),
        8 => near_valid().prop_map(|m| serde_json::to_vec(&m).unwrap()),
        2 => mutated(),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => "[ \\[\\]{}\",:0-9a-z_]{0,256}".prop_map(String::into_bytes),
    ]
}

#[test]
fn reliability_11a_token_response_parser_survives_hostile_input() {
    let mut row = Row::new(
        "11a",
        "proptest: random bytes, random JSON, near-valid responses (odd `access_token`, `token_type`, `expires_in`, \
         JWT `exp` of any type and size) and byte-level mutations of them",
        "no panic; an accepted token has a lifetime in (0, 10 years], refresh_time no later than expiry (never valid when the lifetime is shorter than its buffer), renders in every \
         output format and survives the warm-start record round trip; peak memory per parse <= 64 KiB + 64 x input",
    );
    let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let stats = Stats::default();
    runner()
        .run(&response_bytes(), |body| {
            let (result, peak) =
                peak_of(|| parse_token_response(&body, issued_at, Duration::from_secs(300)));
            prop_assert!(
                peak <= 64 * 1024 + 64 * body.len(),
                "{peak} bytes for a {}-byte body",
                body.len()
            );
            stats.add(body.len(), result.is_ok(), peak);
            if let Ok(t) = result {
                prop_assert!(
                    !t.lifetime.is_zero() && t.lifetime <= MAX_LIFETIME,
                    "{:?}",
                    t.lifetime
                );
                prop_assert!(t.refresh_time() <= t.expires_at());
                // A lifetime shorter than its buffer is never valid, like the reference client's.
                if t.refresh_time() <= t.issued_at {
                    prop_assert!(!t.valid_at(issued_at) && t.usable_span().is_zero());
                } else {
                    prop_assert!(t.valid_at(issued_at) && !t.usable_span().is_zero());
                }
                for f in [Format::Raw, Format::Header, Format::Json, Format::Env] {
                    prop_assert!(!render(f, &t).is_empty());
                }
                // The record keeps milliseconds: a shorter lifetime rounds to nothing and is (rightly) not adopted.
                let back = TokenRecord::from_token(&t, None).into_token();
                if t.lifetime >= Duration::from_millis(2) {
                    prop_assert!(back.is_some_and(|(b, _)| b.secret() == t.secret()));
                }
            }
            if let Some(s) = std::str::from_utf8(&body).ok().filter(|s| s.len() < 4096) {
                let _ = jwt_exp(s);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stats.accepted.get() > u64::from(cases()) / 20,
        "too few accepted cases to mean much"
    );
    row.figure(format!(
        "{} cases, {} accepted; largest input {} B; worst peak {} KiB",
        stats.cases.get(),
        stats.accepted.get(),
        stats.largest.get(),
        stats.peak.get().div_ceil(1024)
    ));
    row.pass();
}

// ---- configs ----

const GOOD: &str = "listen: \"127.0.0.1:0\"\nlog: {level: info}\nrefresh: {window: [0.7, 0.85], min_backoff: 1s, max_backoff: 60s}\nreload: {poll_interval: 60s}\non_exit: keep\ntokens:\n  - name: svc\n    token_url: https://idp.example/token\n    client_id: abc\n    client_secret_file: /run/secret\n    scope: read write\n    resource: [https://api.example]\n    params: {tenant: acme}\n    http: {timeout: 10s, ca_file: /etc/ca.pem}\n    outputs:\n      - {path: /tmp/tv/token, format: raw, mode: \"0640\"}\n      - {path: /tmp/tv/token.json, format: json, uid: 1000, gid: 1000}\n";

fn yaml_leaf() -> impl Strategy<Value = serde_yaml_ng::Value> {
    use serde_yaml_ng::Value as Y;
    prop_oneof![
        Just(Y::Null),
        any::<bool>().prop_map(Y::from),
        any::<i64>().prop_map(Y::from),
        any::<f64>().prop_map(Y::from),
        prop::sample::select(vec![
            "10s",
            "0s",
            "-1s",
            "1e400s",
            "18446744073709551615s",
            "5",
            "1h 30m",
            "100ms",
            "0640",
            "0777",
            "0o600",
            "raw",
            "json",
            "env",
            "header",
            "keep",
            "remove",
            "client_secret_post",
            "https://idp.example/token",
            "http://idp.example/token",
            "http://127.0.0.1:9/token",
            "ftp://x",
            "/tmp/x",
            "",
            "/",
            "[::]:8099",
            "debug",
        ])
        .prop_map(Y::from),
        ".{0,24}".prop_map(Y::from),
    ]
}

fn yaml_value() -> impl Strategy<Value = serde_yaml_ng::Value> {
    yaml_leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_yaml_ng::Value::Sequence),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                serde_yaml_ng::Value::Mapping(kv.into_iter().map(|(k, v)| (k.into(), v)).collect())
            }),
        ]
    })
}

/// Keys of the real schema mostly, some unknown.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "listen", "log", "refresh", "reload", "on_exit", "tokens", "name", "token_url", "base_url", "client_id",
            "client_id_file", "client_id_env", "client_secret", "client_secret_file", "client_secret_env",
            "auth_method", "scope", "audience", "resource", "params", "default_lifetime", "http", "timeout",
            "connect_timeout", "ca_file", "client_cert_file", "client_key_file", "allow_insecure_http", "outputs",
            "path", "format", "mode", "uid", "gid", "window", "min_backoff", "max_backoff", "poll_interval", "level",
        ])
        .prop_map(String::from),
        1 => "[a-z_]{1,10}",
    ]
}

/// A structured config: the real shape with random values in it.
fn structured_config() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), yaml_value()), 0..3),
        prop::collection::vec(
            (
                prop::collection::vec(
                    (key(), prop_oneof![3 => yaml_leaf(), 1 => yaml_value()]),
                    0..6,
                ),
                prop::collection::vec(prop::collection::vec((key(), yaml_leaf()), 0..4), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(top, tokens)| {
            use serde_yaml_ng::{Mapping, Value as Y};
            let mut m = Mapping::new();
            for (k, v) in top {
                m.insert(k.into(), v);
            }
            let tokens: Vec<Y> = tokens
                .into_iter()
                .map(|(fields, outputs)| {
                    let mut t = Mapping::new();
                    t.insert("name".into(), "svc".into());
                    t.insert("token_url".into(), "https://idp.example/token".into());
                    t.insert("client_id".into(), "abc".into());
                    t.insert("client_secret".into(), "xyz".into());
                    for (k, v) in fields {
                        t.insert(k.into(), v);
                    }
                    let outs: Vec<Y> = outputs
                        .into_iter()
                        .map(|o| {
                            let mut om = Mapping::new();
                            om.insert("path".into(), "/tmp/tv/token".into());
                            for (k, v) in o {
                                om.insert(k.into(), v);
                            }
                            Y::Mapping(om)
                        })
                        .collect();
                    t.insert("outputs".into(), Y::Sequence(outs));
                    Y::Mapping(t)
                })
                .collect();
            m.insert("tokens".into(), Y::Sequence(tokens));
            serde_yaml_ng::to_string(&Y::Mapping(m)).unwrap_or_default()
        })
}

fn mutated_config() -> impl Strategy<Value = String> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..10).prop_map(
        |edits| {
            let mut b = GOOD.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at.index(b.len().max(1)).min(b.len().saturating_sub(1));
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        },
    )
}

/// YAML's own weapons: alias bombs, deep nesting, tags, long scalars.
fn yaml_weapons() -> impl Strategy<Value = String> {
    prop_oneof![
        // Small ones here; the big ones run once each in `alias_bombs_are_refused_in_bounded_memory`.
        (1usize..4, 1usize..8).prop_map(|(levels, width)| alias_bomb(levels, width)),
        (1usize..400).prop_map(|d| format!("tokens: {}{}\n", "[".repeat(d), "]".repeat(d))),
        (1usize..400).prop_map(|d| format!(
            "tokens:\n{}",
            (0..d)
                .map(|i| format!("{}- \n", " ".repeat(i * 2)))
                .collect::<String>()
        )),
        prop::sample::select(vec![
            "!!binary", "!!str", "!!int", "!!float", "!custom", "!!map", "!!seq", "!!null"
        ])
        .prop_map(|tag| format!("tokens:\n  - name: {tag} svc\n    outputs: {tag} []\n")),
        (1usize..50_000).prop_map(|n| format!("tokens:\n  - name: {}\n", "a".repeat(n))),
        Just("tokens: *undefined\n".to_string()),
        Just("? [a, b]\n: c\ntokens: []\n".to_string()),
        Just("tokens: []\ntokens: []\n".to_string()),
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => ".{0,400}",
        4 => structured_config(),
        3 => mutated_config(),
        1 => yaml_weapons(),
    ]
}

fn alias_bomb(levels: usize, width: usize) -> String {
    let mut y = format!("a0: &a0 [{}]\n", vec!["x"; width].join(", "));
    for i in 1..levels {
        y.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); width].join(", ")
        ));
    }
    y.push_str(&format!("tokens: *a{}\n", levels - 1));
    y
}

#[test]
fn reliability_11b_config_parser_survives_hostile_input() {
    let mut row = Row::new(
        "11b",
        "proptest: random text, the real schema filled with random values (odd durations, modes, URLs, types), \
         byte-level mutations of a full config, and YAML weapons (alias bombs up to 12^9 nodes, nesting to depth \
         400, tags, 50 KB scalars, duplicate and complex keys)",
        "no panic; every refusal names at least one problem; an accepted config is checked (window within (0, 1), \
         min_backoff <= max_backoff, >= 1 token, >= 1 output each) and its Debug shows no inline secret; peak \
         memory per parse <= 32 MiB",
    );
    let stats = Stats::default();
    let mut bombs = 0;
    for levels in [4, 6, 9] {
        for width in [4, 12] {
            let text = alias_bomb(levels, width);
            let (result, peak) = peak_of(|| Config::parse(&text, Path::new("bomb.yaml")));
            assert!(
                peak <= 32 << 20,
                "{peak} bytes for a {width}^{levels} alias bomb"
            );
            assert!(result.is_err());
            stats.add(text.len(), false, peak);
            bombs += 1;
        }
    }
    runner()
        .run(&config_text(), |text| {
            let (result, peak) = peak_of(|| Config::parse(&text, Path::new("fuzz.yaml")));
            prop_assert!(
                peak <= 32 << 20,
                "{peak} bytes for a {}-byte config",
                text.len()
            );
            stats.add(text.len(), result.is_ok(), peak);
            match result {
                Ok(c) => {
                    prop_assert!(c.refresh.window.0 > 0.0 && c.refresh.window.1 < 1.0);
                    prop_assert!(c.refresh.min_backoff <= c.refresh.max_backoff);
                    prop_assert!(!c.tokens.is_empty());
                    prop_assert!(c.tokens.iter().all(|t| !t.outputs.is_empty()));
                    let dbg = format!("{c:?}");
                    prop_assert!(!dbg.contains("\"xyz\""), "{dbg}");
                }
                Err(e) => prop_assert!(!e.problems.is_empty()),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stats.accepted.get() > 0,
        "no generated config was ever accepted"
    );
    row.figure(format!(
        "{} cases ({bombs} large alias bombs, all refused), {} accepted; largest input {} KiB; worst peak {} KiB",
        stats.cases.get(),
        stats.accepted.get(),
        stats.largest.get().div_ceil(1024),
        stats.peak.get().div_ceil(1024)
    ));
    row.pass();
}
