//! The `check` command: the config, then every file and variable it refers to (credentials and the subject token readable, CA and client certificate parseable, output directories writable, a signal hook's pid file valid if present), without contacting any server.

use std::path::Path;

use crate::config::{Config, NotifyConfig, Problem};
use crate::notify::PidFileError;
use crate::token::auth::{read_assertion, AuthError, ClientAuth, KeyIdSource};
use crate::token::error::chain;
use crate::token::http::build_http_client;

/// What `check` found: problems make it fail, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Validates a config file and everything it refers to.
pub fn check(path: &Path) -> Report {
    match crate::load::load_partial(path) {
        Err((mut e, partial)) => {
            // Structural problems do not hide file and environment ones: what parsed far enough is opened too.
            if let Some(partial) = partial {
                e.problems.extend(check_files(&partial));
            }
            Report {
                problems: e.problems,
                warnings: Vec::new(),
            }
        }
        Ok(c) => {
            let mut warnings = c.warnings();
            warnings.extend(pid_file_warnings(&c));
            Report {
                problems: check_files(&c),
                warnings,
            }
        }
    }
}

/// Every file and variable a valid config refers to, opened as the daemon would open it.
pub fn check_files(config: &Config) -> Vec<Problem> {
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
        ClientAuth::ClientAssertionFile { path, .. } => {
            if let Err(e) = read_assertion(path) {
                push("client_assertion_file", chain(&e));
            }
        }
        _ => {}
    }
}

/// Signal hooks whose pid file is not there yet: fine while the app has not started, worth a word otherwise.
pub fn pid_file_warnings(config: &Config) -> Vec<Problem> {
    config
        .tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.notify {
            Some(NotifyConfig::Signal { pid_file, .. }) if !pid_file.exists() => Some(Problem {
                path: format!("tokens[{i}].notify.signal.pid_file"),
                message: format!(
                    "{} does not exist yet; the app is to write its process id there (read before every signal; no signal is sent while it is missing)",
                    pid_file.display()
                ),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_hook_pid_file_is_checked_if_present_warned_about_if_not_and_never_an_output() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("secret"), "s").unwrap();
        let cfg = d.join("config.yaml");
        let y = format!(
            "tokens:\n  - name: a\n    token_url: https://idp.example/token\n    client_id: id\n    client_secret_file: {d}/secret\n    outputs: [{{path: {d}/token}}]\n    notify: {{signal: {{pid_file: {d}/app.pid}}}}\n",
            d = d.display()
        );
        std::fs::write(&cfg, &y).unwrap();
        let r = check(&cfg);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(r.warnings[0].path, "tokens[0].notify.signal.pid_file");
        assert!(r.warnings[0].message.contains("does not exist yet"));
        std::fs::write(d.join("app.pid"), "4242\n").unwrap();
        let r = check(&cfg);
        assert!(r.problems.is_empty() && r.warnings.is_empty(), "{r:?}");
        std::fs::write(d.join("app.pid"), "not a pid, maybe a secret").unwrap();
        let r = check(&cfg);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].path, "tokens[0].notify.signal.pid_file");
        assert!(
            r.problems[0].message.contains("does not hold a process id")
                && !r.problems[0].message.contains("secret"),
            "{:?}",
            r.problems
        );
        let out = y.replace(
            &format!("outputs: [{{path: {}/token}}]", d.display()),
            &format!("outputs: [{{path: {}/app.pid}}]", d.display()),
        );
        std::fs::write(&cfg, &out).unwrap();
        let p = check(&cfg).problems;
        assert!(
            p.iter().any(|p| p.path == "tokens[0].outputs[0].path"
                && p.message.contains("the pid file of tokens[0].notify")),
            "{p:?}"
        );
    }
}
