//! The `check` command: the config, then every file and variable it refers to (credentials and the subject token readable, CA and client certificate parseable, output directories writable, a signal hook's pid file valid if present), without contacting any server (`load` reads and opens; this module reports).

use std::path::Path;

use crate::config::{Config, NotifyConfig, Problem};
use crate::load::open_files;

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
                e.problems.extend(open_files(&partial));
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
                problems: open_files(&c),
                warnings,
            }
        }
    }
}

/// Signal hooks whose pid file is not there yet: fine while the app has not started, worth a word otherwise.
pub(crate) fn pid_file_warnings(config: &Config) -> Vec<Problem> {
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
