//! The `check` command: the config, then every file and variable it refers to (credentials and the subject token readable, CA and client certificate parseable, output directories writable, a signal hook's pid file valid if present), without contacting any server.

use std::path::{Path, PathBuf};

use crate::config::{Config, NotifyConfig, Problem};
use crate::notify::PidFileError;
use crate::token::error::chain;
use crate::token::http::build_http_client;
use crate::token::transport::env_proxy_carries;

/// What `check` found: problems make it fail, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Validates a config file and everything it refers to.
pub fn check(path: &Path) -> Report {
    match Config::load(path) {
        Err(mut e) => {
            // Structural problems do not hide file and environment ones: what parsed far enough is opened too.
            if let Some(partial) = crate::config::salvage(path) {
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
        if let Err(message) = crate::output::check_writable(&d.join(".token-vendor-check")) {
            problems.push(Problem {
                path: "state_dir".into(),
                message,
            });
        }
    }
    for (i, t) in config.tokens.iter().enumerate() {
        crate::config::auth::check_files(i, &t.auth, &mut problems);
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
            if let Err(message) = crate::output::check_writable(&o.path) {
                problems.push(Problem {
                    path: format!("tokens[{i}].outputs[{j}].path"),
                    message,
                });
            }
        }
    }
    problems
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

/// Outputs that would overwrite a file the sidecar reads or keeps: the config, a credential or key file (whatever
/// the client authentication and grant read: `files()`), a CA or client certificate/key, a state file, a file
/// inside `state_dir`, or another output. Paths are compared canonicalised where they exist, so a symlink or `..`
/// does not hide a clash. Today an output pointed at the client secret file would replace the secret with a token.
pub fn output_conflicts(config_path: &Path, config: &Config) -> Vec<Problem> {
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
pub fn insecure_via_proxy(config: &Config) -> Vec<Problem> {
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
pub fn planted_symlinks(config: &Config) -> Vec<Problem> {
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
}
