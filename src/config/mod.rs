//! The checked configuration: domain types that are valid by construction, loaded from YAML (`raw`) through `validate`, with every problem named by file and key path.
//!
//! The data flows one way: config → credentials / client authentication (`token::auth`) → token client →
//! refresher → sinks (output files). Config holds the domain types of the request (`ClientAuth`, `Grant`,
//! `HttpConfig`) and is pure: it opens no file, not even its own (`crate::load` reads it and runs the checks that look
//! at the file system and the environment; `crate::check` opens the files it names).

pub(crate) mod auth;
mod grant;
pub(crate) mod log_filter;
pub(crate) mod notify;
pub(crate) mod raw;
mod validate;
pub(crate) use validate::salvage;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::credentials::CredentialSource;
pub(crate) use crate::token::discovery::Discovery;
pub(crate) use crate::token::http::HttpConfig;
use crate::token::{ClientAuth, Grant};
pub(crate) use notify::NotifyConfig;

/// A checked configuration: every value here is valid, nothing downstream re-checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) listen: SocketAddr,
    pub log: LogConfig,
    pub refresh: RefreshPolicy,
    pub(crate) reload: ReloadConfig,
    pub(crate) on_exit: OnExit,
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

/// How the refresher schedules refreshes and retries (see `schedule`).
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
pub(crate) struct ReloadConfig {
    pub(crate) poll_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnExit {
    Keep,
    Remove,
}

/// One configured token: where to get it, with what, and where to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    pub(crate) name: String,
    /// The token endpoint; with `discovery`, the issuer's URL until the document names the endpoint at run time.
    pub(crate) token_url: Url,
    /// `issuer:` configured: the token endpoint (and with `auth_method: auto`, the method) comes from discovery.
    pub(crate) discovery: Option<Discovery>,
    /// How the client authenticates; reads its credentials as they are at each request.
    pub(crate) auth: ClientAuth,
    pub(crate) grant: Grant,
    pub(crate) scope: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) resource: Vec<String>,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) default_lifetime: Duration,
    pub(crate) http: HttpConfig,
    pub outputs: Vec<OutputConfig>,
    /// Told after each successful publish that the token changed (`crate::notify`).
    pub(crate) notify: Option<NotifyConfig>,
}

/// The format of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The access token alone, no trailing newline.
    Raw,
    /// `Bearer <token>`, what the reference client's `get_authorization_header` returns.
    Header,
    /// The token with its times, RFC 3339 UTC.
    Json,
    /// `KEY=value` lines a shell can `source`.
    Env,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    pub(crate) path: PathBuf,
    pub(crate) format: Format,
    pub(crate) mode: u32,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
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
    pub(crate) file: PathBuf,
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

impl Config {
    /// Parses and checks config text; `file` is only used to name the source in errors and to resolve relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        // A deeply nested document costs the parser time and stack, and aliases memory, out of proportion to its size:
        // refuse them first.
        if let Err(e) = crate::fsread::yaml_precheck(text, crate::fsread::YAML_MAX_DEPTH) {
            return Err(ConfigError {
                file: file.to_path_buf(),
                problems: vec![Problem {
                    path: String::new(),
                    message: e.to_string(),
                }],
            });
        }
        let base = file.parent().unwrap_or(Path::new(""));
        validate::parse(text, base).map_err(|problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        })
    }

    /// Warnings that do not stop the config from running.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            for (key, src) in t.auth.sources() {
                if key == "client_secret" && matches!(src, CredentialSource::Inline(_)) {
                    out.push(Problem {
                        path: format!("tokens[{i}].client_secret"),
                        message: "the client secret is written inline in the config; prefer client_secret_file (a mounted Secret) so it can rotate and stays out of ConfigMaps".into(),
                    });
                }
            }
        }
        out
    }
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
        assert_eq!(t.auth.name(), "client_secret_basic");
        assert_eq!(t.grant, Grant::ClientCredentials);
        assert_eq!(t.outputs[0].mode, 0o640);
        assert_eq!(t.outputs[0].format, Format::Raw);
        assert_eq!(t.http.timeout, Duration::from_secs(10));
    }

    #[test]
    fn log_level_is_a_filter_whose_bare_words_are_levels() {
        for ok in ["debug", "warn,token_vendor::refresh=debug", "TRACE"] {
            let c = parse(&format!("log: {{level: \"{ok}\"}}\n{GOOD}")).unwrap();
            assert_eq!(c.log.level, ok);
        }
        for bad in ["warning", "info,notify", "", "a=b=c"] {
            let p = problems(&format!("log: {{level: \"{bad}\"}}\n{GOOD}"));
            assert_eq!(
                p,
                [format!(
                    "log.level: {bad:?} is not a log level; use error, warn, info, debug or trace"
                )]
            );
        }
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
        for field in ["client_assertion", "client_assertion_type"] {
            let y = GOOD.replace(
                "    outputs:",
                &format!("    params: {{{field}: x}}\n    outputs:"),
            );
            assert!(
                problems(&y)[0].starts_with(&format!("tokens[0].params.{field}:")),
                "{field}"
            );
        }
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
    fn a_colon_in_a_literal_client_id_is_refused_for_raw_basic_only() {
        let y = GOOD.replace("client_id: my-client", "client_id: \"tenant:app\"");
        assert!(parse(&y).is_ok(), "client_secret_basic encodes the colon");
        let raw = y.replace(
            "    outputs:",
            "    auth_method: client_secret_basic_raw\n    outputs:",
        );
        assert_eq!(
            problems(&raw),
            vec!["tokens[0].client_id: contains ':' which HTTP Basic cannot carry raw; use client_secret_basic"]
        );
        // From a file the id is only known at request time (see token::auth).
        let from_file = raw.replace("client_id: \"tenant:app\"", "client_id_file: /run/id");
        assert!(parse(&from_file).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("a: {}{}\n", "[".repeat(150_000), "]".repeat(150_000));
        let p = problems(&deep);
        assert!(p[0].contains("nested more than 64 levels"), "{p:?}");
    }

    #[test]
    fn an_alias_bomb_is_refused_before_parsing_naming_file_line_and_why() {
        // Nine levels of ten aliases each: 10^9 nodes once expanded, from a few hundred bytes.
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            y.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = parse(&format!("{GOOD}bomb: *a8\n{y}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.yaml: line 9 column 7: `*a8` is a YAML alias; anchors and aliases are refused before parsing"),
            "{e}"
        );
    }

    #[test]
    fn the_error_names_the_file() {
        let e = parse("tokens: 3\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("test.yaml: tokens: must be a list"), "{text}");
    }
}
