//! The `check` command: the config, then every file and variable it refers to (credentials readable, CA and client certificate parseable, output directories writable), without contacting any server.

use std::path::Path;

use crate::config::{Config, Problem};
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
    match Config::load(path) {
        Err(e) => Report {
            problems: e.problems,
            warnings: Vec::new(),
        },
        Ok(c) => Report {
            problems: check_files(&c),
            warnings: c.warnings(),
        },
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
