//! Turns the raw YAML (`raw`) into the checked domain types, collecting every problem as "key path: what is wrong and what to do".

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;
use url::Url;

use super::raw::{
    OneOrMany, RawAuthMethod, RawLog, RawLogFormat, RawMode, RawNotify, RawOnExit, RawOutput,
    RawRefresh, RawReload, RawToken,
};
use super::{
    Config, Discovery, Format, HttpConfig, LogConfig, LogFormat, OnExit, OutputConfig, Problem,
    RefreshPolicy, ReloadConfig, TokenConfig,
};
use crate::credentials::CredentialSource;
use crate::token::discovery::Issuer;
use crate::token::{ClientAuth, Grant};

/// Parses and checks config text: the config, or every problem found. Relative paths resolve against `base`, the
/// config file's directory.
pub(crate) fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    match parse_into(text, base, &mut c) {
        Some(cfg) if c.problems.is_empty() => Ok(cfg),
        _ => Err(c.problems),
    }
}

/// For `check` after the config was refused: the config as far as it parsed, so the files and variables it names
/// are checked too and one run reports every problem. What could not be read is replaced by inert stand-ins (an
/// inline credential, a loopback URL, a token with no outputs, defaults), which name no file and so add no problem;
/// each token keeps its index. Never run: `None` when the text is not a YAML mapping. `file` resolves relative paths.
pub(crate) fn salvage(text: &str, file: &Path) -> Option<Config> {
    crate::fsread::yaml_precheck(text, crate::fsread::YAML_MAX_DEPTH).ok()?;
    let mut c = Checker {
        problems: Vec::new(),
    };
    parse_into(text, file.parent().unwrap_or(Path::new("")), &mut c)
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

    /// Deserializes one value, recording the exact key path of every type error and unknown key in it, not only the
    /// first: the key serde refuses is reported and taken out, and the rest is tried again, so a bad key never hides
    /// its siblings' problems. `None` if the value still does not deserialize (a required key is missing, or the
    /// value itself has the wrong type).
    fn field<T: DeserializeOwned>(&mut self, mut value: Value, path: &str) -> Option<T> {
        // Every round removes one key, so the loop ends; a config has at most CONFIG_LIMIT bytes of them.
        loop {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let segments: Vec<Segment> = e.path().iter().cloned().collect();
                    let inner = e.path().to_string();
                    let full = match (path.is_empty(), inner == ".") {
                        (_, true) => path.to_string(),
                        (true, false) => inner,
                        (false, false) => format!("{path}.{inner}"),
                    };
                    self.problem(full, explain_serde(&e.into_inner().to_string()));
                    if !remove_key(&mut value, &segments) {
                        return None;
                    }
                }
            }
        }
    }
}

/// Removes the mapping key at `path` inside `v`; false when `path` does not end in a mapping key (the value itself,
/// or an element of a list, which cannot go without renumbering its siblings).
fn remove_key(v: &mut Value, path: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = path.split_last() else {
        return false;
    };
    let mut at = v;
    for s in parents {
        at = match (s, at) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(x) => x,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Mapping(m) => m.remove(key.as_str()).is_some(),
        _ => false,
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

fn parse_into(text: &str, base: &Path, c: &mut Checker) -> Option<Config> {
    let mut root: Value = match serde_yaml_ng::from_str(text) {
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
    resolve_relative_paths(&mut root, base);
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
            if super::log_filter::filter(&level).is_none() {
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
                    "must be a directory path, absolute or relative to the config file's directory",
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
                .map(|(i, v)| parse_token(v, i, c))
                .collect();
            check_unique(&parsed, c);
            Some(
                parsed
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.unwrap_or_else(|| inert_token(i)))
                    .collect(),
            )
        }
        Some(_) => {
            c.problem("tokens", "must be a list of tokens");
            None
        }
    };

    // Stand-ins for what could not be read: a config with problems is never run (see `parse` and `salvage`).
    Some(Config {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([0u16; 8], 8099))),
        log: log.unwrap_or_else(|| LogConfig {
            format: None,
            level: "info".into(),
        }),
        refresh: refresh.unwrap_or_default(),
        reload: reload.unwrap_or(ReloadConfig {
            poll_interval: Duration::from_secs(60),
        }),
        on_exit: on_exit.unwrap_or(OnExit::Keep),
        state_dir: state_dir.flatten(),
        tokens: tokens.unwrap_or_default(),
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
    "client_assertion",
    "client_assertion_type",
    "scope",
    "audience",
    "resource",
];

/// One entry of `tokens`. Its outputs are read one by one, so a bad output neither hides the token's other keys nor
/// renumbers the outputs after it.
fn parse_token(v: Value, i: usize, c: &mut Checker) -> Option<TokenConfig> {
    let at = format!("tokens[{i}]");
    let Value::Mapping(mut m) = v else {
        c.problem(
            at,
            "each token must be a mapping of keys such as name, token_url and outputs",
        );
        return None;
    };
    if !m.contains_key("name") {
        c.problem(
            format!("{at}.name"),
            "required key `name` is missing; add it",
        );
        // A stand-in so the token's other keys are still checked; the config is refused anyway.
        m.insert("name".into(), format!("unnamed-token-{i}").into());
    }
    let outputs = match m.insert("outputs".into(), Value::Sequence(Vec::new())) {
        None => {
            c.problem(
                format!("{at}.outputs"),
                "required key `outputs` is missing; list at least one output file",
            );
            Vec::new()
        }
        Some(Value::Sequence(items)) => {
            if items.is_empty() {
                c.problem(format!("{at}.outputs"), "list at least one output file");
            }
            items
                .into_iter()
                .enumerate()
                .map(|(j, o)| c.field::<RawOutput>(o, &format!("{at}.outputs[{j}]")))
                .collect()
        }
        Some(_) => {
            c.problem(format!("{at}.outputs"), "must be a list of outputs");
            Vec::new()
        }
    };
    let raw = c.field::<RawToken>(Value::Mapping(m), &at)?;
    Some(token_config(raw, outputs, &at, c))
}

/// The stand-in for a token that could not be read at all: it names no file, so `check` finds nothing in it.
fn inert_token(i: usize) -> TokenConfig {
    let inline = || CredentialSource::inline("-".into());
    TokenConfig {
        name: format!("unreadable-token-{i}"),
        token_url: stand_in_url(),
        discovery: None,
        auth: ClientAuth::SecretPost {
            client_id: inline(),
            client_secret: inline(),
        },
        grant: Grant::ClientCredentials,
        scope: None,
        audience: None,
        resource: Vec::new(),
        params: BTreeMap::new(),
        default_lifetime: Duration::from_secs(300),
        http: HttpConfig::default(),
        outputs: Vec::new(),
        notify: None,
    }
}

/// Stands in for a token URL that could not be read (loopback plain HTTP: building a client for it reads nothing).
fn stand_in_url() -> Url {
    Url::parse("http://127.0.0.1/").expect("a constant, valid URL")
}

/// Returns a token config even when problems were recorded, with stand-ins for what could not be read: a config
/// with problems is refused anyway, and `salvage` still opens the files this token names.
fn token_config(
    raw: RawToken,
    raw_outputs: Vec<Option<RawOutput>>,
    at: &str,
    c: &mut Checker,
) -> TokenConfig {
    let auto = raw.auth_method == Some(RawAuthMethod::Auto);
    // `auto` is checked as the method its credentials imply; the document decides at run time (`Discovery`).
    let method = if auto {
        Some(if raw.private_key_file.is_some() {
            RawAuthMethod::PrivateKeyJwt
        } else if raw.client_assertion_file.is_some() {
            RawAuthMethod::ClientAssertionFile
        } else {
            RawAuthMethod::ClientSecretBasic
        })
    } else {
        raw.auth_method
    };
    let discovery = discovery(&raw, auto, at, c);
    let issuer = discovery.as_ref().map(|d| d.issuer.as_str());
    let keyed = super::auth::keyed(&raw, method, issuer, at, &mut c.problems);
    if !valid_name(&raw.name) {
        c.problem(
            format!("{at}.name"),
            format!("{:?} is not a valid name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", raw.name),
        );
    }
    let http = raw.http.map_or_else(HttpConfig::default, |h| HttpConfig {
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

    let token_url = match (&discovery, &raw.issuer) {
        (Some(d), _) => Some(d.issuer.url().clone()),
        // A bad issuer was reported by `discovery`; do not also ask for a token_url.
        (None, Some(_)) => None,
        (None, None) => token_url(
            raw.token_url.as_deref(),
            raw.base_url.as_deref(),
            http.allow_insecure_http,
            at,
            c,
        ),
    };
    let public = method == Some(RawAuthMethod::None);
    let id_given =
        raw.client_id.is_some() || raw.client_id_file.is_some() || raw.client_id_env.is_some();
    let secret_given = raw.client_secret.is_some()
        || raw.client_secret_file.is_some()
        || raw.client_secret_env.is_some();
    if public && secret_given {
        c.problem(
            at,
            "auth_method: none is a public client: remove the client_secret keys",
        );
    }
    // A public client may leave out its id; every other method needs one.
    let client_id = if public && !id_given {
        None
    } else {
        credential(
            at,
            "client_id",
            raw.client_id,
            raw.client_id_file,
            raw.client_id_env,
            c,
        )
    };
    let client_secret = (keyed.is_none() && !public)
        .then(|| {
            credential(
                at,
                "client_secret",
                raw.client_secret,
                raw.client_secret_file,
                raw.client_secret_env,
                c,
            )
        })
        .flatten();

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

    let outputs: Vec<Option<OutputConfig>> = raw_outputs
        .into_iter()
        .enumerate()
        .map(|(j, o)| output_config(o?, &format!("{at}.outputs[{j}]"), c))
        .collect();
    // Every output is checked above; only those before the first unreadable one are kept, so the outputs keep
    // their indices in what `check` reports about their files.
    let outputs: Vec<OutputConfig> = outputs.into_iter().map_while(|o| o).collect();

    let method = method.unwrap_or(RawAuthMethod::ClientSecretBasic);
    if method == RawAuthMethod::ClientSecretBasicRaw {
        if let Some(CredentialSource::Inline(id)) = &client_id {
            if secrecy::ExposeSecret::expose_secret(id).contains(':') {
                c.problem(
                    format!("{at}.client_id"),
                    "contains ':' which HTTP Basic cannot carry raw; use client_secret_basic",
                );
            }
        }
    }

    let grant_keys = super::grant::RawGrantKeys {
        grant: raw.grant,
        subject_token_file: raw.subject_token_file,
        subject_token_type: raw.subject_token_type,
        requested_token_type: raw.requested_token_type,
    };
    let grant = super::grant::grant(grant_keys, &params, at).unwrap_or_else(|problems| {
        c.problems.extend(problems);
        Grant::ClientCredentials
    });
    let notify = raw.notify.and_then(|v| {
        let before = c.problems.len();
        let n = c.field::<RawNotify>(v, &format!("{at}.notify"))?;
        // A key refused inside (and taken out) is the problem: not also "set http or signal".
        if c.problems.len() > before {
            return None;
        }
        super::notify::notify(n, at)
            .map_err(|problems| problems.into_iter().for_each(|(p, m)| c.problem(p, m)))
            .ok()
    });
    let inline = || CredentialSource::inline("-".into());
    let auth = if method == RawAuthMethod::None {
        ClientAuth::None { client_id }
    } else {
        let client_id = client_id.unwrap_or_else(inline);
        match (method, client_secret) {
            (_, None) => match keyed.flatten() {
                Some(k) => k.into_auth(client_id),
                None => ClientAuth::SecretPost {
                    client_id,
                    client_secret: inline(),
                },
            },
            (RawAuthMethod::ClientSecretBasic, Some(client_secret)) => ClientAuth::SecretBasic {
                client_id,
                client_secret,
            },
            (RawAuthMethod::ClientSecretBasicRaw, Some(client_secret)) => {
                ClientAuth::SecretBasicRaw {
                    client_id,
                    client_secret,
                }
            }
            // Named, not `_`, so a new method cannot silently become client_secret_post. The keyed methods skip
            // the secret (`keyed` refused it), and `none` and `auto` were settled above: only client_secret_post
            // really comes here with a secret.
            (
                RawAuthMethod::ClientSecretPost
                | RawAuthMethod::PrivateKeyJwt
                | RawAuthMethod::ClientAssertionFile
                | RawAuthMethod::None
                | RawAuthMethod::Auto,
                Some(client_secret),
            ) => ClientAuth::SecretPost {
                client_id,
                client_secret,
            },
        }
    };
    TokenConfig {
        name: raw.name,
        token_url: token_url.unwrap_or_else(stand_in_url),
        discovery,
        auth,
        grant,
        scope: raw.scope.filter(|s| !s.trim().is_empty()),
        audience: raw.audience,
        resource,
        params,
        default_lifetime,
        http,
        outputs,
        notify,
    }
}

/// `issuer:` (OIDC discovery), checked for syntax only: no server is contacted here. `auth_method: auto` needs it.
fn discovery(raw: &RawToken, auto: bool, at: &str, c: &mut Checker) -> Option<Discovery> {
    let Some(text) = raw.issuer.as_deref() else {
        if auto {
            c.problem(
                format!("{at}.auth_method"),
                "auto picks from the issuer's discovery document, so it needs issuer: (and no token_url); without it, name the method (client_secret_basic, client_secret_post, private_key_jwt, client_assertion_file)",
            );
        }
        return None;
    };
    if raw.token_url.is_some() || raw.base_url.is_some() {
        let other = if raw.token_url.is_some() {
            "token_url"
        } else {
            "base_url"
        };
        c.problem(
            format!("{at}.issuer"),
            format!("set issuer (the token endpoint is then discovered) or {other}, not both; remove one"),
        );
        return None;
    }
    match Issuer::parse(text) {
        Ok(issuer) => Some(Discovery { issuer, auto }),
        Err(e) => {
            c.problem(format!("{at}.issuer"), e.to_string());
            None
        }
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
            c.problem(at, "set token_url (or base_url, from which token_url defaults to <base_url>/api/v2/token, or issuer, from whose discovery document it is read)");
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
        "http" if insecure_ok || crate::token::transport::is_loopback(&url) => {}
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
    // A bad mode is reported and the output kept (with the default mode) so `check` still opens its directory.
    let mode = match raw.mode {
        None => 0o640,
        Some(RawMode(s)) => {
            match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => {
                    if m & 0o400 == 0 {
                        c.problem(format!("{at}.mode"), format!("{s:?} does not let the owner read the file; use \"0640\" or \"0600\""));
                    } else if m & 0o007 != 0 {
                        c.problem(
                        format!("{at}.mode"),
                        format!("{s:?} lets every user of the node read the token; use \"0640\" with a group, or \"0600\""),
                    );
                    }
                    m
                }
                _ => {
                    c.problem(
                        format!("{at}.mode"),
                        format!("{s:?} is not an octal file mode such as \"0640\""),
                    );
                    0o640
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

/// Every file path in the config (`state_dir`, an output's `path`, every `*_file` key, whatever method or grant it
/// belongs to) that is relative is taken relative to the config file's directory, not the working directory: the
/// config means the same wherever the process is started. One pass over the YAML, before any key is read, so a new
/// `*_file` key is covered without a line here. `params` are form fields, not paths, and are left alone.
fn resolve_relative_paths(v: &mut Value, base: &Path) {
    if base.as_os_str().is_empty() {
        return;
    }
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                if key == "params" {
                    continue;
                }
                let is_path = key == "path" || key == "state_dir" || key.ends_with("_file");
                match val {
                    Value::String(s)
                        if is_path && !s.is_empty() && Path::new(s.as_str()).is_relative() =>
                    {
                        *s = base.join(s.as_str()).to_string_lossy().into_owned();
                    }
                    _ => resolve_relative_paths(val, base),
                }
            }
        }
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|i| resolve_relative_paths(i, base)),
        _ => {}
    }
}

#[cfg(test)]
mod relative_path_tests {
    use super::*;

    #[test]
    fn every_file_key_and_output_path_resolves_against_the_config_directory_but_params_do_not() {
        let mut v: Value = serde_yaml_ng::from_str(
            "state_dir: st\ntokens:\n  - client_secret_file: s\n    private_key_file: /abs/k\n    http: {ca_file: ca.pem}\n    params: {x_file: keep}\n    outputs: [{path: out/t}]\n",
        )
        .unwrap();
        resolve_relative_paths(&mut v, Path::new("/etc/tv"));
        let t = &v["tokens"][0];
        assert_eq!(v["state_dir"].as_str(), Some("/etc/tv/st"));
        assert_eq!(t["client_secret_file"].as_str(), Some("/etc/tv/s"));
        assert_eq!(t["private_key_file"].as_str(), Some("/abs/k"));
        assert_eq!(t["http"]["ca_file"].as_str(), Some("/etc/tv/ca.pem"));
        assert_eq!(t["params"]["x_file"].as_str(), Some("keep"));
        assert_eq!(t["outputs"][0]["path"].as_str(), Some("/etc/tv/out/t"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::auth::AssertionAudience;

    fn token(keys: &str) -> Result<TokenConfig, Vec<String>> {
        let y = format!("tokens:\n  - name: t\n{keys}    outputs: [{{path: /tmp/tv/t}}]\n");
        parse(&y, Path::new("/etc/tv"))
            .map(|mut c| c.tokens.remove(0))
            .map_err(|p| {
                p.into_iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect()
            })
    }

    #[test]
    fn issuer_replaces_token_url_and_auto_needs_it() {
        let t = token("    issuer: https://idp.example/realms/x\n    client_id: c\n    client_secret_file: /s\n    auth_method: auto\n").unwrap();
        let d = t.discovery.expect("discovery");
        assert_eq!(d.issuer.as_str(), "https://idp.example/realms/x");
        assert!(d.auto);
        assert_eq!(t.token_url.as_str(), "https://idp.example/realms/x");
        // auto with a secret starts as Basic (RFC 8414's default); the document may move it to post.
        assert_eq!(t.auth.name(), "client_secret_basic");
        let t = token(
            "    issuer: https://idp.example/\n    client_id: c\n    client_secret_file: /s\n",
        )
        .unwrap();
        assert!(!t.discovery.expect("discovery").auto);

        for (keys, want) in [
            (
                "    issuer: https://idp.example\n    token_url: https://idp.example/t\n",
                "tokens[0].issuer: set issuer (the token endpoint is then discovered) or token_url, not both",
            ),
            (
                "    issuer: https://idp.example\n    base_url: https://idp.example\n",
                "tokens[0].issuer: set issuer (the token endpoint is then discovered) or base_url, not both",
            ),
            ("", "tokens[0]: set token_url (or base_url"),
            (
                "    token_url: https://idp.example/t\n    auth_method: auto\n",
                "tokens[0].auth_method: auto picks from the issuer's discovery document, so it needs issuer:",
            ),
            (
                "    issuer: http://idp.example\n",
                "tokens[0].issuer: issuer \"http://idp.example\" is not usable: must be https",
            ),
            (
                "    issuer: https://idp.example/?tenant=1\n",
                "tokens[0].issuer: issuer \"https://idp.example/?tenant=1\" is not usable: must not have a query",
            ),
            ("    issuer: idp.example\n", "tokens[0].issuer: issuer \"idp.example\" is not usable: not a URL"),
        ] {
            let problems = token(&format!("{keys}    client_id: c\n    client_secret_file: /s\n"))
                .expect_err(keys);
            assert!(problems.iter().any(|p| p.starts_with(want)), "{keys}: {problems:?}");
            // Exactly one problem about where the endpoint comes from, not a cascade.
            assert_eq!(problems.len(), 1, "{keys}: {problems:?}");
        }
    }

    #[test]
    fn auto_takes_the_method_its_credentials_imply_and_issuer_is_an_assertion_audience() {
        let t = token("    issuer: https://idp.example/r\n    client_id: c\n    auth_method: auto\n    private_key_file: /k.pem\n    assertion_audience: issuer\n").unwrap();
        let ClientAuth::PrivateKeyJwt(k) = &t.auth else {
            panic!("{:?}", t.auth.name())
        };
        assert_eq!(
            k.audience,
            AssertionAudience::Literal("https://idp.example/r".into())
        );
        let t = token("    issuer: https://idp.example\n    client_id: c\n    auth_method: auto\n    client_assertion_file: /sa\n").unwrap();
        assert_eq!(t.auth.name(), "client_assertion_file");
        // Without discovery, `issuer` as an audience is still refused.
        let p = token("    token_url: https://idp.example/t\n    client_id: c\n    auth_method: private_key_jwt\n    private_key_file: /k.pem\n    assertion_audience: issuer\n").unwrap_err();
        assert!(
            p[0].starts_with("tokens[0].assertion_audience: `issuer` needs issuer:"),
            "{p:?}"
        );
        // auto with no credential at all: the secret is what is missing.
        let p = token("    issuer: https://idp.example\n    client_id: c\n    auth_method: auto\n")
            .unwrap_err();
        assert!(
            p.iter()
                .any(|p| p.starts_with("tokens[0]") && p.contains("client_secret")),
            "{p:?}"
        );
    }
}
