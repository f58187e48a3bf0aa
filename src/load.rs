//! The one loader of a config file, used by `run`, `once`, reload and `check`: read it (bounded, regular files only), parse it (`config`, which opens no file), then the checks that look at the file system and the environment (outputs that would overwrite what the sidecar reads or keeps, outputs through a planted symlink, plain http through a proxy); `once` and `check` then open every file it names (`open_files`).

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, NotifyConfig, Problem};
use crate::fsread::{read_bounded, ReadError, CONFIG_LIMIT};
use crate::notify::PidFileError;
use crate::token::auth::{read_assertion, AuthError, ClientAuth, KeyIdSource};
use crate::token::error::chain;
use crate::token::http::build_http_client;
use crate::token::transport::env_proxy_carries;

/// Reads and checks a config file and what it implies on this machine.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_partial(path).map_err(|(e, _)| e)
}

/// [`load`], and when the config is refused, the config as far as it parsed ([`crate::config::salvage`]), so the
/// `check` command can open the files it names too.
pub(crate) fn load_partial(path: &Path) -> Result<Config, (ConfigError, Option<Box<Config>>)> {
    let bytes = read(path).map_err(|e| (one_problem(path, e.to_string()), None))?;
    from_bytes_partial(&bytes, path)
}

/// The bytes of a config file: a regular file (a FIFO, device or directory is refused without blocking) of at
/// most CONFIG_LIMIT bytes, counted as they are read. Blocking: call it off the runtime thread.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    read_bounded(path, CONFIG_LIMIT, true)
}

/// Checks config bytes read by [`read`]: UTF-8 only, then [`Config::parse`], then the file-system and environment
/// checks. Every problem is reported: a token the parser refused does not hide another token's output conflict.
pub(crate) fn from_bytes(bytes: &[u8], file: &Path) -> Result<Config, ConfigError> {
    from_bytes_partial(bytes, file).map_err(|(e, _)| e)
}

fn from_bytes_partial(
    bytes: &[u8],
    file: &Path,
) -> Result<Config, (ConfigError, Option<Box<Config>>)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            one_problem(file, format!("the file is not UTF-8 text: {e}")),
            None,
        )
    })?;
    match Config::parse(text, file) {
        Ok(config) => {
            let problems = environment_problems(file, &config);
            if problems.is_empty() {
                Ok(config)
            } else {
                let e = ConfigError {
                    file: file.to_path_buf(),
                    problems,
                };
                Err((e, Some(Box::new(config))))
            }
        }
        Err(mut e) => {
            let partial = crate::config::salvage(text, file).map(Box::new);
            if let Some(p) = &partial {
                // The parser may have named the same key already (two outputs with one path): one line per key.
                for extra in environment_problems(file, p) {
                    if !e.problems.iter().any(|q| q.path == extra.path) {
                        e.problems.push(extra);
                    }
                }
            }
            Err((e, partial))
        }
    }
}

fn one_problem(file: &Path, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            message,
        }],
    }
}

/// The checks that look at the file system (canonical paths, link owners) and the environment (proxies).
fn environment_problems(file: &Path, config: &Config) -> Vec<Problem> {
    let mut problems = output_conflicts(file, config);
    problems.extend(insecure_via_proxy(config));
    problems.extend(planted_symlinks(config));
    problems
}

/// Every file and variable a config refers to, opened as the daemon would open it: what `check` and `once` add to
/// [`load`] before anything is sent (`run` and reload do not: a credential may appear after start).
pub fn open_files(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(d) = &config.state_dir {
        if let Err(e) = crate::output::check_writable(&d.join(".token-vendor-check")) {
            problems.push(Problem {
                path: "state_dir".into(),
                message: e.to_string(),
            });
        }
    }
    for (i, t) in config.tokens.iter().enumerate() {
        auth_files(i, &t.auth, &mut problems);
        for (key, message) in t.grant.check_files(std::time::SystemTime::now()) {
            problems.push(Problem {
                path: format!("tokens[{i}].{key}"),
                message,
            });
        }
        for (key, src) in t.auth.sources() {
            if let Err(e) = src.load() {
                problems.push(Problem {
                    path: format!("tokens[{i}].{}", src.key_name(key)),
                    message: chain(&e),
                });
            }
        }
        if let Err(e) = build_http_client(&t.http, &t.token_url) {
            problems.push(Problem {
                path: format!("tokens[{i}].http"),
                message: chain(&e),
            });
        }
        if let Some(NotifyConfig::Signal { pid_file, .. }) = &t.notify {
            // Missing is normal before the app runs (a warning, see `pid_file_warnings`); anything else there that
            // names no process is a wrong path.
            match crate::notify::read_pid_file(pid_file) {
                Ok(_) | Err(PidFileError::Missing(_)) => {}
                Err(e) => problems.push(Problem {
                    path: format!("tokens[{i}].notify.signal.pid_file"),
                    message: chain(&e),
                }),
            }
        }
        for (j, o) in t.outputs.iter().enumerate() {
            if let Err(e) = crate::output::check_writable(&o.path) {
                problems.push(Problem {
                    path: format!("tokens[{i}].outputs[{j}].path"),
                    message: e.to_string(),
                });
            }
        }
    }
    problems
}

/// What `check` adds for these methods, without contacting a server: each file readable and regular, the key
/// parses and matches `alg`, the certificate carries the key, the assertion file holds a JWT. Each problem names
/// the key path.
fn auth_files(i: usize, auth: &ClientAuth, problems: &mut Vec<Problem>) {
    let mut push = |key: &str, message: String| {
        problems.push(Problem {
            path: format!("tokens[{i}].{key}"),
            message,
        })
    };
    match auth {
        ClientAuth::PrivateKeyJwt(k) => {
            if let Err(e) = k.signer() {
                let path = match &e {
                    AuthError::Key { path, .. } => Some(path.as_path()),
                    AuthError::Read(r) => Some(r.path()),
                    _ => None,
                };
                let key = match (&k.key_id, path) {
                    (KeyIdSource::Certificate(c), Some(p)) if c == p => "certificate_file",
                    _ => "private_key_file",
                };
                push(key, chain(&e));
            }
        }
        ClientAuth::ClientAssertionFile { path, .. } => match read_assertion(path) {
            Err(e) => push("client_assertion_file", chain(&e)),
            // Expired and not rotated: the server would refuse it, as an expired subject token (`Grant::check_files`).
            Ok((_, Some(exp))) if exp <= unix_now() => push(
                "client_assertion_file",
                chain(&AuthError::AssertionExpired {
                    path: path.clone(),
                    exp,
                }),
            ),
            Ok(_) => {}
        },
        _ => {}
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Outputs that would overwrite a file the sidecar reads or keeps: the config, a credential or key file (whatever
/// the client authentication and grant read: `files()`), a CA or client certificate/key, a state file, a file
/// inside `state_dir`, or another output. Paths are compared canonicalised where they exist, so a symlink or `..`
/// does not hide a clash. Today an output pointed at the client secret file would replace the secret with a token.
fn output_conflicts(config_path: &Path, config: &Config) -> Vec<Problem> {
    use crate::refresh::sink::{state_file_for, STATE_SUFFIX};
    let mut protected: Vec<(String, PathBuf)> =
        vec![("the config file".into(), canon(config_path))];
    for (i, t) in config.tokens.iter().enumerate() {
        for f in t.auth.files().into_iter().chain(t.grant.files()) {
            protected.push((
                format!("a file tokens[{i}] reads its credentials from"),
                canon(f),
            ));
        }
        if let Some(NotifyConfig::Signal { pid_file, .. }) = &t.notify {
            protected.push((
                format!("the pid file of tokens[{i}].notify"),
                canon(pid_file),
            ));
        }
        for (key, f) in [
            ("ca_file", &t.http.ca_file),
            ("client_cert_file", &t.http.client_cert_file),
            ("client_key_file", &t.http.client_key_file),
        ] {
            if let Some(f) = f {
                protected.push((format!("tokens[{i}].http.{key}"), canon(f)));
            }
        }
        let state = match (&config.state_dir, t.outputs.first()) {
            (Some(d), _) => Some(d.join(format!("{}{STATE_SUFFIX}", t.name))),
            (None, Some(o)) => Some(state_file_for(&o.path)),
            (None, None) => None,
        };
        if let Some(s) = state {
            protected.push((
                format!("the warm-start state file of tokens[{i}]"),
                canon(&s),
            ));
        }
    }
    let state_dir = config.state_dir.as_deref().map(canon);
    let mut problems = Vec::new();
    let mut outputs: Vec<(String, PathBuf)> = Vec::new();
    for (i, t) in config.tokens.iter().enumerate() {
        for (j, o) in t.outputs.iter().enumerate() {
            let key = format!("tokens[{i}].outputs[{j}].path");
            let p = canon(&o.path);
            let mut clash: Option<String> = protected
                .iter()
                .find(|(_, q)| *q == p)
                .map(|(what, _)| format!("it is {what}"));
            if clash.is_none() {
                if let Some(d) = state_dir.as_ref().filter(|d| p.starts_with(d)) {
                    clash = Some(format!("it lies inside state_dir {}", d.display()));
                }
            }
            if clash.is_none() {
                clash = outputs
                    .iter()
                    .find(|(_, q)| *q == p)
                    .map(|(other, _)| format!("it is the same file as {other}"));
            }
            if let Some(why) = clash {
                problems.push(Problem {
                    path: key.clone(),
                    message: format!(
                        "{} would be overwritten with a token: {why}; choose another path",
                        o.path.display()
                    ),
                });
            }
            outputs.push((key, p));
        }
    }
    problems
}

/// Tokens on plain `http://` without `allow_insecure_http` (allowed only because the host is loopback) whose
/// request a proxy from the environment would carry: then the client secret would leave the pod in clear
/// ([`env_proxy_carries`], the rule a discovered endpoint is held to as well).
fn insecure_via_proxy(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, t) in config.tokens.iter().enumerate() {
        if t.token_url.scheme() != "http" || t.http.allow_insecure_http {
            continue;
        }
        if env_proxy_carries(&t.token_url) {
            problems.push(Problem {
                path: format!("tokens[{i}].token_url"),
                // The proxy's address is not shown: it may carry a password.
                message: format!(
                    "http:// is allowed without allow_insecure_http only straight to a loopback address, but a proxy from the environment (HTTP_PROXY/http_proxy or ALL_PROXY/all_proxy) would carry this request and the client secret in clear; add {} to NO_PROXY, use https://, or set http.allow_insecure_http: true",
                    t.token_url.host_str().unwrap_or("the host")
                ),
            });
        }
    }
    problems
}

/// Outputs whose path passes through a symbolic link that someone other than root or this sidecar could have put
/// there ([`crate::output::planted_symlink`]): a restart, reload or `once` would otherwise write the token wherever it
/// points. Refused like a link swapped in after start.
fn planted_symlinks(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, t) in config.tokens.iter().enumerate() {
        for (j, o) in t.outputs.iter().enumerate() {
            if let Some(why) = crate::output::planted_symlink(&o.path) {
                problems.push(Problem {
                    path: format!("tokens[{i}].outputs[{j}].path"),
                    message: why,
                });
            }
        }
    }
    problems
}

/// The canonical form of `p`: symlinks resolved in its longest existing ancestor, `.` and `..` resolved lexically
/// in the part that does not exist yet.
fn canon(p: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut rest = Vec::new();
    let mut base = lexical.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(base) {
            return rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflicts(dir: &Path, extra: &str, outputs: &str) -> Vec<String> {
        let cfg = dir.join("config.yaml");
        let y = format!(
            "{extra}tokens:\n  - name: a\n    token_url: https://idp.example/token\n    client_id: id\n    client_secret_file: {d}/secret\n    http: {{ca_file: {d}/ca.pem}}\n    outputs: [{outputs}]\n",
            d = dir.display()
        );
        std::fs::write(&cfg, &y).unwrap();
        let c = Config::parse(&y, &cfg).unwrap();
        output_conflicts(&cfg, &c)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn an_output_may_not_overwrite_what_the_sidecar_reads_or_keeps() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("secret"), "s").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("link")).unwrap();
        assert!(conflicts(d, "", &format!("{{path: {}/token}}", d.display())).is_empty());
        for (extra, out, why) in [
            (
                "",
                format!("{}/secret", d.display()),
                "reads its credentials",
            ),
            (
                "",
                format!("{}/sub/../secret", d.display()),
                "reads its credentials",
            ),
            ("", format!("{}/link", d.display()), "reads its credentials"),
            (
                "",
                format!("{}/config.yaml", d.display()),
                "the config file",
            ),
            ("", format!("{}/ca.pem", d.display()), "http.ca_file"),
            ("", format!("{}/.t.tv-state", d.display()), "state file"),
            (
                &format!("state_dir: {}/sub\n", d.display()) as &str,
                format!("{}/sub/x", d.display()),
                "inside state_dir",
            ),
        ] {
            let p = conflicts(
                d,
                extra,
                &format!("{{path: {}/t}}, {{path: {out}}}", d.display()),
            );
            assert_eq!(p.len(), 1, "{out}: {p:?}");
            assert!(
                p[0].starts_with("tokens[0].outputs[1].path:") && p[0].contains(why),
                "{p:?}"
            );
        }
        let p = conflicts(
            d,
            "",
            &format!("{{path: {d}/t}}, {{path: {d}/sub/../t}}", d = d.display()),
        );
        assert!(
            p[0].contains("same file as tokens[0].outputs[0].path"),
            "{p:?}"
        );
    }

    #[test]
    fn special_files_are_refused_by_load() {
        let dir = tempfile::tempdir().unwrap();
        for p in [Path::new("/dev/zero"), dir.path()] {
            let e = load(p).unwrap_err().to_string();
            assert!(e.contains("not a regular file; refused"), "{e}");
        }
    }
}
