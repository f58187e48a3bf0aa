//! The YAML configuration: raw serde structs, parsed once into checked domain types, with every problem named by file and key path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use crate::credentials::CredentialSource;
use crate::output::Format;

/// The most bytes a config file may have; a larger one is refused, not read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A checked configuration: every value here is valid, nothing downstream re-checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub refresh: RefreshPolicy,
    pub reload: ReloadConfig,
    pub on_exit: OnExit,
    /// Where warm-start state and its key live; only this sidecar's uid may write it (`refresh::sink`).
    pub state_dir: Option<PathBuf>,
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `None` means: text on a TTY, JSON otherwise.
    pub format: Option<LogFormat>,
    pub level: String,
}

/// How the refresher schedules refreshes and retries (see `refresh::schedule`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Fractions of the way from issue to `refresh_time` between which the next refresh is drawn.
    pub window: (f64, f64),
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            window: (0.70, 0.85),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadConfig {
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    Keep,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic.
    ClientSecretBasic,
    /// The reference client's Basic: id and secret used as they are.
    ClientSecretBasicRaw,
    /// id and secret in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretBasicRaw => "client_secret_basic_raw",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// One configured token: where to get it, with what, and where to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    pub name: String,
    pub token_url: Url,
    pub client_id: CredentialSource,
    pub client_secret: CredentialSource,
    pub auth_method: AuthMethod,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Vec<String>,
    pub params: BTreeMap<String, String>,
    pub default_lifetime: Duration,
    pub http: HttpConfig,
    pub outputs: Vec<OutputConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpConfig {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    pub path: PathBuf,
    pub format: Format,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One thing wrong with a config: where (key path) and what, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {} problem{} in the configuration",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  {}: {}", self.file.display(), p.message)?;
            } else {
                write!(f, "\n  {}: {}: {}", self.file.display(), p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---- raw forms, as written in YAML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<RawLogFormat>,
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLogFormat {
    Json,
    Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    window: Option<[f64; 2]>,
    min_backoff: Option<HumanDuration>,
    max_backoff: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    poll_interval: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawOnExit {
    Keep,
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    base_url: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_id_file: Option<PathBuf>,
    client_id_env: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    auth_method: Option<AuthMethod>,
    scope: Option<String>,
    audience: Option<String>,
    resource: Option<OneOrMany>,
    params: Option<BTreeMap<String, String>>,
    default_lifetime: Option<HumanDuration>,
    http: Option<RawHttp>,
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    timeout: Option<HumanDuration>,
    connect_timeout: Option<HumanDuration>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: PathBuf,
    format: Option<Format>,
    mode: Option<RawMode>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// A file mode written as an octal string; a bare YAML number is refused because `0640` and `640` read differently.
struct RawMode(String);

impl<'de> Deserialize<'de> for RawMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMode, E> {
                Ok(RawMode(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawMode, E> {
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0640\", not the number {v}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawMode, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written in humantime form (`90s`, `10m`, `1h 30m`).
#[derive(Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or \"10m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {v:?}: {e}; write it like \"90s\" or \"10m\""
                        ))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" instead of {v}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration cannot be the number {v}; write it like \"90s\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration cannot be the number {v}; write it like \"1500ms\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "log",
    "refresh",
    "reload",
    "on_exit",
    "state_dir",
    "tokens",
];

/// Collects problems while a config is being parsed.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserializes one value, recording the exact key path of a type error.
    fn field<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match (path.is_empty(), inner == ".") {
                    (_, true) => path.to_string(),
                    (true, false) => inner,
                    (false, false) => format!("{path}.{inner}"),
                };
                self.problem(full, explain_serde(&e.into_inner().to_string()));
                None
            }
        }
    }
}

/// Rewrites serde's wording into what to do about it.
fn explain_serde(msg: &str) -> String {
    let msg = msg.trim_end_matches('.');
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let expected = expected.trim().trim_start_matches("one of ");
        return format!(
            "unknown key {field}; remove it or fix the spelling (allowed here: {expected})"
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("required key {rest} is missing; add it");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let (v, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let expected = expected.trim().trim_start_matches("one of ");
        return format!("{v} is not allowed here; use one of {expected}");
    }
    msg.to_string()
}

impl Config {
    /// Reads and checks a config file. Referenced files are not opened here; see [`Config::check_files`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                path: String::new(),
                message,
            }],
        };
        let meta =
            std::fs::metadata(path).map_err(|e| err(format!("cannot read the file: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(err(format!(
                "the file is {} bytes; a config larger than {MAX_CONFIG_BYTES} bytes is refused",
                meta.len()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read the file: {e}")))?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `file` is only used to name the source in errors and to resolve relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        let config = parse_into(text, &mut c);
        match config {
            Some(cfg) if c.problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError {
                file: file.to_path_buf(),
                problems: c.problems,
            }),
        }
    }

    /// Warnings that do not stop the config from running.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if matches!(t.client_secret, CredentialSource::Inline(_)) {
                out.push(Problem {
                    path: format!("tokens[{i}].client_secret"),
                    message: "the client secret is written inline in the config; prefer client_secret_file (a mounted Secret) so it can rotate and stays out of ConfigMaps".into(),
                });
            }
        }
        out
    }

    /// Checks every file and variable the config refers to, without contacting any server.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(d) = &self.state_dir {
            if let Err(msg) = crate::output::check_writable(&d.join(".token-vendor-check")) {
                problems.push(Problem {
                    path: "state_dir".into(),
                    message: msg,
                });
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            for (key, src) in [
                ("client_id", &t.client_id),
                ("client_secret", &t.client_secret),
            ] {
                if let Err(e) = src.load() {
                    problems.push(Problem {
                        path: format!("tokens[{i}].{}", src.key_name(key)),
                        message: e.to_string(),
                    });
                }
            }
            if let Err(e) = crate::token::client::build_http_client(&t.http, &t.token_url) {
                problems.push(Problem {
                    path: format!("tokens[{i}].http"),
                    message: e.to_string(),
                });
            }
            for (j, o) in t.outputs.iter().enumerate() {
                if let Err(msg) = crate::output::check_writable(&o.path) {
                    problems.push(Problem {
                        path: format!("tokens[{i}].outputs[{j}].path"),
                        message: msg,
                    });
                }
            }
        }
        problems
    }
}

fn parse_into(text: &str, c: &mut Checker) -> Option<Config> {
    let root: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            c.problem(at, format!("not valid YAML: {e}"));
            return None;
        }
    };
    let Value::Mapping(map) = root else {
        c.problem("", "the config must be a YAML mapping with a `tokens` list");
        return None;
    };
    let mut top: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in map {
        match k.as_str() {
            Some(k) if TOP_KEYS.contains(&k) => {
                top.insert(k.to_string(), v);
            }
            Some(k) => c.problem(
                k,
                format!(
                    "unknown key `{k}`; remove it or fix the spelling (allowed here: {})",
                    TOP_KEYS.join(", ")
                ),
            ),
            None => c.problem("", "keys must be strings"),
        }
    }

    let listen = match top.remove("listen") {
        None => Some(SocketAddr::from(([0u16; 8], 8099))),
        Some(v) => c
            .field::<String>(v, "listen")
            .and_then(|s| match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.problem(
                        "listen",
                        format!(
                            "{s:?} is not an address such as \"[::]:8099\" or \"127.0.0.1:8099\""
                        ),
                    );
                    None
                }
            }),
    };

    let log = match top.remove("log") {
        None => Some(LogConfig {
            format: None,
            level: "info".into(),
        }),
        Some(v) => c.field::<RawLog>(v, "log").and_then(|raw| {
            let level = raw.level.unwrap_or_else(|| "info".into());
            if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
                c.problem(
                    "log.level",
                    format!("{level:?} is not a log level; use error, warn, info, debug or trace"),
                );
                return None;
            }
            Some(LogConfig {
                format: raw.format.map(|f| match f {
                    RawLogFormat::Json => LogFormat::Json,
                    RawLogFormat::Text => LogFormat::Text,
                }),
                level,
            })
        }),
    };

    let refresh = match top.remove("refresh") {
        None => Some(RefreshPolicy::default()),
        Some(v) => c
            .field::<RawRefresh>(v, "refresh")
            .and_then(|raw| refresh_policy(raw, c)),
    };

    let reload = match top.remove("reload") {
        None => Some(ReloadConfig {
            poll_interval: Duration::from_secs(60),
        }),
        Some(v) => c.field::<RawReload>(v, "reload").and_then(|raw| {
            let poll_interval = raw.poll_interval.map_or(Duration::from_secs(60), |d| d.0);
            if poll_interval < Duration::from_millis(100) {
                c.problem("reload.poll_interval", "must be at least 100ms");
                return None;
            }
            Some(ReloadConfig { poll_interval })
        }),
    };

    let on_exit = match top.remove("on_exit") {
        None => Some(OnExit::Keep),
        Some(v) => c.field::<RawOnExit>(v, "on_exit").map(|r| match r {
            RawOnExit::Keep => OnExit::Keep,
            RawOnExit::Remove => OnExit::Remove,
        }),
    };

    let state_dir = match top.remove("state_dir") {
        None => Some(None),
        Some(v) => c.field::<PathBuf>(v, "state_dir").and_then(|p| {
            if p.as_os_str().is_empty() {
                c.problem(
                    "state_dir",
                    "must be a directory path, absolute or relative to the working directory",
                );
                return None;
            }
            Some(Some(p))
        }),
    };

    let tokens = match top.remove("tokens") {
        None => {
            c.problem(
                "tokens",
                "required key `tokens` is missing; list at least one token",
            );
            None
        }
        Some(Value::Sequence(items)) => {
            if items.is_empty() {
                c.problem("tokens", "the list is empty; configure at least one token");
            }
            let parsed: Vec<Option<TokenConfig>> = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let path = format!("tokens[{i}]");
                    c.field::<RawToken>(v, &path)
                        .and_then(|raw| token_config(raw, &path, c))
                })
                .collect();
            check_unique(&parsed, c);
            parsed.into_iter().collect::<Option<Vec<_>>>()
        }
        Some(_) => {
            c.problem("tokens", "must be a list of tokens");
            None
        }
    };

    Some(Config {
        listen: listen?,
        log: log?,
        refresh: refresh?,
        reload: reload?,
        on_exit: on_exit?,
        state_dir: state_dir?,
        tokens: tokens?,
    })
}

fn refresh_policy(raw: RawRefresh, c: &mut Checker) -> Option<RefreshPolicy> {
    let d = RefreshPolicy::default();
    let window = raw.window.map_or(d.window, |[a, b]| (a, b));
    let min_backoff = raw.min_backoff.map_or(d.min_backoff, |x| x.0);
    let max_backoff = raw.max_backoff.map_or(d.max_backoff, |x| x.0);
    let mut ok = true;
    if !(window.0 > 0.0 && window.0 <= window.1 && window.1 < 1.0) {
        c.problem(
            "refresh.window",
            format!(
                "[{}, {}] is not a window: use two fractions 0 < low <= high < 1, such as [0.70, 0.85]",
                window.0, window.1
            ),
        );
        ok = false;
    }
    if min_backoff < Duration::from_millis(10) {
        c.problem(
            "refresh.min_backoff",
            "must be at least 10ms, or retries would spin",
        );
        ok = false;
    }
    if max_backoff < min_backoff {
        c.problem(
            "refresh.max_backoff",
            "must not be smaller than refresh.min_backoff",
        );
        ok = false;
    }
    ok.then_some(RefreshPolicy {
        window,
        min_backoff,
        max_backoff,
    })
}

fn check_unique(tokens: &[Option<TokenConfig>], c: &mut Checker) {
    let mut names = BTreeSet::new();
    let mut paths = BTreeMap::new();
    for (i, t) in tokens.iter().enumerate() {
        let Some(t) = t else { continue };
        if !names.insert(t.name.clone()) {
            c.problem(
                format!("tokens[{i}].name"),
                format!("the name {:?} is used twice; names must be unique", t.name),
            );
        }
        for (j, o) in t.outputs.iter().enumerate() {
            if let Some(prev) = paths.insert(o.path.clone(), format!("tokens[{i}].outputs[{j}]")) {
                c.problem(
                    format!("tokens[{i}].outputs[{j}].path"),
                    format!(
                        "{} is already written by {prev}; every output needs its own file",
                        o.path.display()
                    ),
                );
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-')
}

/// Form fields the request builds itself; `params` may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "resource",
];

fn token_config(raw: RawToken, at: &str, c: &mut Checker) -> Option<TokenConfig> {
    let before = c.problems.len();
    if !valid_name(&raw.name) {
        c.problem(
            format!("{at}.name"),
            format!("{:?} is not a valid name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", raw.name),
        );
    }
    let http = raw.http.map_or_else(default_http, |h| HttpConfig {
        timeout: h.timeout.map_or(Duration::from_secs(10), |d| d.0),
        connect_timeout: h.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
        ca_file: h.ca_file,
        client_cert_file: h.client_cert_file,
        client_key_file: h.client_key_file,
        allow_insecure_http: h.allow_insecure_http.unwrap_or(false),
    });
    if http.timeout.is_zero() || http.connect_timeout.is_zero() {
        c.problem(format!("{at}.http"), "timeouts must be greater than zero");
    }
    if http.client_cert_file.is_some() != http.client_key_file.is_some() {
        c.problem(
            format!("{at}.http"),
            "client_cert_file and client_key_file go together for mutual TLS: set both or neither",
        );
    }

    let token_url = token_url(
        raw.token_url.as_deref(),
        raw.base_url.as_deref(),
        http.allow_insecure_http,
        at,
        c,
    );
    let client_id = credential(
        at,
        "client_id",
        raw.client_id,
        raw.client_id_file,
        raw.client_id_env,
        c,
    );
    let client_secret = credential(
        at,
        "client_secret",
        raw.client_secret,
        raw.client_secret_file,
        raw.client_secret_env,
        c,
    );

    let params = raw.params.unwrap_or_default();
    for k in params.keys() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            c.problem(
                format!("{at}.params.{k}"),
                format!(
                    "`{k}` is set by token-vendor itself; use the dedicated key instead of params"
                ),
            );
        }
    }
    let resource = match raw.resource {
        None => Vec::new(),
        Some(OneOrMany::One(r)) => vec![r],
        Some(OneOrMany::Many(r)) => r,
    };
    let default_lifetime = raw
        .default_lifetime
        .map_or(Duration::from_secs(300), |d| d.0);
    if default_lifetime < Duration::from_secs(2) {
        c.problem(format!("{at}.default_lifetime"), "must be at least 2s");
    }

    if raw.outputs.is_empty() {
        c.problem(format!("{at}.outputs"), "list at least one output file");
    }
    let outputs: Vec<OutputConfig> = raw
        .outputs
        .into_iter()
        .enumerate()
        .filter_map(|(j, o)| output_config(o, &format!("{at}.outputs[{j}]"), c))
        .collect();

    if c.problems.len() != before {
        return None;
    }
    Some(TokenConfig {
        name: raw.name,
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        auth_method: raw.auth_method.unwrap_or(AuthMethod::ClientSecretBasic),
        scope: raw.scope.filter(|s| !s.trim().is_empty()),
        audience: raw.audience,
        resource,
        params,
        default_lifetime,
        http,
        outputs,
    })
}

fn default_http() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        allow_insecure_http: false,
    }
}

/// `token_url` wins; else the reference client's `urljoin(base_url, "/api/v2/token")`, which replaces the base URL's path.
fn token_url(
    token_url: Option<&str>,
    base_url: Option<&str>,
    insecure_ok: bool,
    at: &str,
    c: &mut Checker,
) -> Option<Url> {
    let (key, url) = match (token_url, base_url) {
        (Some(t), _) => ("token_url", Url::parse(t).map_err(|e| (t, e))),
        (None, Some(b)) => (
            "base_url",
            Url::parse(b)
                .and_then(|u| u.join("/api/v2/token"))
                .map_err(|e| (b, e)),
        ),
        (None, None) => {
            c.problem(at, "set token_url (or base_url, from which token_url defaults to <base_url>/api/v2/token)");
            return None;
        }
    };
    let url = match url {
        Ok(u) => u,
        Err((s, e)) => {
            c.problem(
                format!("{at}.{key}"),
                format!("{s:?} is not a valid URL: {e}"),
            );
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if insecure_ok || is_loopback(&url) => {}
        "http" => {
            c.problem(
                format!("{at}.{key}"),
                "http:// sends the client secret in clear text; use https://, or set http.allow_insecure_http: true if you must",
            );
            return None;
        }
        other => {
            c.problem(
                format!("{at}.{key}"),
                format!("unsupported scheme {other:?}; use https://"),
            );
            return None;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        c.problem(
            format!("{at}.{key}"),
            "credentials in the URL are not allowed; use client_id and client_secret_file",
        );
        return None;
    }
    Some(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn credential(
    at: &str,
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    c: &mut Checker,
) -> Option<CredentialSource> {
    let set = [inline.is_some(), file.is_some(), env.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if set != 1 {
        let what = if set == 0 {
            "is missing"
        } else {
            "is given more than once"
        };
        c.problem(
            at,
            format!("{key} {what}: set exactly one of {key}, {key}_file or {key}_env"),
        );
        return None;
    }
    if let Some(v) = inline {
        if v.is_empty() {
            c.problem(format!("{at}.{key}"), "must not be empty");
            return None;
        }
        return Some(CredentialSource::inline(v));
    }
    if let Some(f) = file {
        return Some(CredentialSource::File(f));
    }
    let name = env.unwrap_or_default();
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        c.problem(
            format!("{at}.{key}_env"),
            format!("{name:?} is not an environment variable name"),
        );
        return None;
    }
    Some(CredentialSource::Env(name))
}

fn output_config(raw: RawOutput, at: &str, c: &mut Checker) -> Option<OutputConfig> {
    let mode = match raw.mode {
        None => 0o640,
        Some(RawMode(s)) => {
            match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => {
                    if m & 0o400 == 0 {
                        c.problem(format!("{at}.mode"), format!("{s:?} does not let the owner read the file; use \"0640\" or \"0600\""));
                        return None;
                    }
                    if m & 0o007 != 0 {
                        c.problem(
                        format!("{at}.mode"),
                        format!("{s:?} lets every user of the node read the token; use \"0640\" with a group, or \"0600\""),
                    );
                        return None;
                    }
                    m
                }
                _ => {
                    c.problem(
                        format!("{at}.mode"),
                        format!("{s:?} is not an octal file mode such as \"0640\""),
                    );
                    return None;
                }
            }
        }
    };
    let path = raw.path;
    if path.as_os_str().is_empty()
        || path.file_name().is_none()
        || path.to_string_lossy().ends_with('/')
    {
        c.problem(
            format!("{at}.path"),
            format!("{:?} is not a file path", path.display().to_string()),
        );
        return None;
    }
    Some(OutputConfig {
        path,
        format: raw.format.unwrap_or(Format::Raw),
        mode,
        uid: raw.uid,
        gid: raw.gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Config, ConfigError> {
        Config::parse(y, Path::new("test.yaml"))
    }

    fn problems(y: &str) -> Vec<String> {
        parse(y)
            .expect_err("config should be refused")
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    const GOOD: &str = r#"
tokens:
  - name: benchling
    base_url: https://tenant.benchling.com/anything
    client_id: my-client
    client_secret_file: /run/secret
    outputs:
      - path: /tmp/tv/token
"#;

    #[test]
    fn defaults_and_base_url_join() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen.to_string(), "[::]:8099");
        assert_eq!(c.refresh, RefreshPolicy::default());
        assert_eq!(c.on_exit, OnExit::Keep);
        let t = &c.tokens[0];
        assert_eq!(
            t.token_url.as_str(),
            "https://tenant.benchling.com/api/v2/token"
        );
        assert_eq!(t.auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(t.outputs[0].mode, 0o640);
        assert_eq!(t.outputs[0].format, Format::Raw);
        assert_eq!(t.http.timeout, Duration::from_secs(10));
    }

    #[test]
    fn token_url_wins_over_base_url() {
        let y = GOOD.replace(
            "    client_id:",
            "    token_url: https://idp.example/oauth2/token\n    client_id:",
        );
        assert_eq!(
            parse(&y).unwrap().tokens[0].token_url.as_str(),
            "https://idp.example/oauth2/token"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let p = problems(&GOOD.replace("    client_id:", "    scopes: x\n    client_id:"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("tokens[0].scopes: unknown key `scopes`"),
            "{p:?}"
        );
        let p = problems(&format!("lisen: x\n{GOOD}"));
        assert!(p[0].starts_with("lisen: unknown key `lisen`"), "{p:?}");
        let p = problems(&GOOD.replace(
            "      - path: /tmp/tv/token",
            "      - path: /tmp/tv/token\n        fromat: raw",
        ));
        assert!(
            p[0].starts_with("tokens[0].outputs[0].fromat: unknown key `fromat`"),
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let y = r#"
listen: nowhere
refresh: {window: [0.9, 0.5], min_backoff: 10}
tokens:
  - name: Bad_Name
    token_url: http://idp.example/token
    client_id: a
    client_id_env: B
    client_secret: s
    outputs: [{path: /tmp/x, mode: "0644"}]
  - name: ok
    token_url: ftp://x
    client_id: a
    client_secret_env: S
    outputs: [{path: /tmp/x, mode: 644}]
"#;
        let p = problems(y);
        let joined = p.join("\n");
        for needle in [
            "listen: \"nowhere\" is not an address",
            "refresh.min_backoff: a duration needs a unit",
            "tokens[0].name: \"Bad_Name\" is not a valid name",
            "tokens[0].token_url: http:// sends the client secret in clear text",
            "tokens[0]: client_id is given more than once",
            "tokens[0].outputs[0].mode: \"0644\" lets every user",
            "tokens[1].outputs[0].mode: mode must be a quoted octal string",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn window_and_backoff_are_checked() {
        let p = problems(&format!("refresh: {{window: [0.9, 0.5]}}\n{GOOD}"));
        assert!(p[0].starts_with("refresh.window:"), "{p:?}");
        let p = problems(&format!(
            "refresh: {{min_backoff: 10s, max_backoff: 1s}}\n{GOOD}"
        ));
        assert!(p[0].starts_with("refresh.max_backoff:"), "{p:?}");
    }

    #[test]
    fn http_is_allowed_on_loopback_or_when_told() {
        for host in ["127.0.0.1:9", "localhost:9", "[::1]:9"] {
            let y = GOOD.replace(
                "https://tenant.benchling.com/anything",
                &format!("http://{host}"),
            );
            assert!(parse(&y).is_ok(), "{host}");
        }
        let y = GOOD.replace(
            "https://tenant.benchling.com/anything",
            "http://idp.internal",
        );
        assert!(parse(&y).is_err());
        let y = format!("{y}    http: {{allow_insecure_http: true}}\n");
        assert!(parse(&y).is_ok());
    }

    #[test]
    fn duplicate_names_and_outputs_are_refused() {
        let y = format!("{GOOD}{}", GOOD.replace("tokens:\n", ""));
        let p = problems(&y).join("\n");
        assert!(
            p.contains("tokens[1].name: the name \"benchling\" is used twice"),
            "{p}"
        );
        assert!(p.contains("tokens[1].outputs[0].path: /tmp/tv/token is already written by tokens[0].outputs[0]"), "{p}");
    }

    #[test]
    fn reserved_params_and_missing_pieces() {
        let y = GOOD.replace(
            "    outputs:",
            "    params: {grant_type: password}\n    outputs:",
        );
        assert!(problems(&y)[0].starts_with("tokens[0].params.grant_type:"));
        let p = problems("tokens:\n  - name: a\n    outputs: []\n").join("\n");
        assert!(p.contains("tokens[0]: set token_url"), "{p}");
        assert!(p.contains("tokens[0]: client_id is missing"), "{p}");
        assert!(p.contains("tokens[0]: client_secret is missing"), "{p}");
        assert!(
            p.contains("tokens[0].outputs: list at least one output file"),
            "{p}"
        );
        assert!(problems("tokens: []\n")[0].starts_with("tokens: the list is empty"));
        assert!(problems(": : :\n")[0].contains("not valid YAML"));
    }

    #[test]
    fn debug_never_shows_an_inline_secret() {
        let y = GOOD.replace(
            "client_secret_file: /run/secret",
            "client_secret: hunter2-very-secret",
        );
        let c = parse(&y).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"), "{dbg}");
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn the_error_names_the_file() {
        let e = parse("tokens: 3\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("test.yaml: tokens: must be a list"), "{text}");
    }
}
