//! A token's `notify` block, checked into [`NotifyConfig`]: how the app learns that its token changed (`crate::notify` does it).

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::raw::{RawNotify, RawNotifyHttp, RawNotifySignal};

/// How long one POST to the app may take when `timeout` is not set.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `timeout` of one POST: the app is on loopback, so a longer wait only hides a hung listener.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run after each successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotifyConfig {
    /// POST `{"token", "refresh_time"}` to a loopback URL, retried with backoff until the next publish.
    Http { url: Url, timeout: Duration },
    /// Send `signal` to the pid read from `pid_file` right before each send; never retried.
    Signal {
        pid_file: PathBuf,
        signal: SignalName,
    },
}

impl NotifyConfig {
    /// The hook's kind as `/status` and the logs name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            NotifyConfig::Http { .. } => "http",
            NotifyConfig::Signal { .. } => "signal",
        }
    }
}

/// A signal the sidecar may send: one an app can take as "reload", or TERM/INT for an app that restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalName {
    pub(crate) name: &'static str,
    pub(crate) number: i32,
}

/// The signals `notify.signal.signal` accepts, by their `SIG` names. KILL, STOP and the core-dumping signals are
/// not among them: none of them tells an app anything it could act on.
const SIGNALS: &[SignalName] = &[
    SignalName {
        name: "SIGHUP",
        number: libc::SIGHUP,
    },
    SignalName {
        name: "SIGUSR1",
        number: libc::SIGUSR1,
    },
    SignalName {
        name: "SIGUSR2",
        number: libc::SIGUSR2,
    },
    SignalName {
        name: "SIGWINCH",
        number: libc::SIGWINCH,
    },
    SignalName {
        name: "SIGALRM",
        number: libc::SIGALRM,
    },
    SignalName {
        name: "SIGINT",
        number: libc::SIGINT,
    },
    SignalName {
        name: "SIGTERM",
        number: libc::SIGTERM,
    },
];

impl SignalName {
    /// `SIGHUP` or `HUP`, upper case, as `kill -l` and most docs write it.
    pub(crate) fn parse(s: &str) -> Option<SignalName> {
        let full = if s.starts_with("SIG") {
            s.to_string()
        } else {
            format!("SIG{s}")
        };
        SIGNALS.iter().copied().find(|sig| sig.name == full)
    }
}

/// The notify hook, or the problems as (config path, message); `at` is the token's path (`tokens[0]`).
pub(crate) fn notify(raw: RawNotify, at: &str) -> Result<NotifyConfig, Vec<(String, String)>> {
    let at = format!("{at}.notify");
    match (raw.http, raw.signal) {
        (Some(_), Some(_)) => Err(vec![(
            at,
            "set http or signal, not both: a token notifies its app one way".into(),
        )]),
        (None, None) => Err(vec![(
            at,
            "set http (a POST to the app on loopback) or signal (a signal to the pid in a pid file), or remove notify"
                .into(),
        )]),
        (Some(h), None) => http(h, &at),
        (None, Some(s)) => signal(s, &at),
    }
}

fn http(raw: RawNotifyHttp, at: &str) -> Result<NotifyConfig, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let key = format!("{at}.http.url");
    let url = match Url::parse(&raw.url) {
        Err(e) => {
            problems.push((key, format!("{:?} is not a valid URL: {e}", raw.url)));
            None
        }
        Ok(u) if u.scheme() != "http" => {
            problems.push((
                key,
                format!(
                    "{:?}: use http:// (the app is on loopback in the same pod; the hook speaks no TLS)",
                    raw.url
                ),
            ));
            None
        }
        Ok(u) if !crate::token::transport::is_loopback(&u) => {
            problems.push((
                key,
                format!(
                    "{:?} is not a loopback address: the hook only tells the app in the same pod (127.0.0.1, [::1] or localhost), never another host",
                    raw.url
                ),
            ));
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            problems.push((key, "credentials in the URL are not allowed".into()));
            None
        }
        Ok(u) => Some(u),
    };
    let timeout = raw.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > MAX_HTTP_TIMEOUT {
        problems.push((
            format!("{at}.http.timeout"),
            "must be greater than zero and at most 1m".into(),
        ));
    }
    match url {
        Some(url) if problems.is_empty() => Ok(NotifyConfig::Http { url, timeout }),
        _ => Err(problems),
    }
}

fn signal(raw: RawNotifySignal, at: &str) -> Result<NotifyConfig, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let name = raw.signal.as_deref().unwrap_or("SIGHUP");
    let signal = SignalName::parse(name);
    if signal.is_none() {
        let allowed: Vec<&str> = SIGNALS.iter().map(|s| s.name).collect();
        problems.push((
            format!("{at}.signal.signal"),
            format!(
                "{name:?} is not a signal the sidecar sends; use one of {}",
                allowed.join(", ")
            ),
        ));
    }
    let pid_file = raw.pid_file;
    if pid_file.as_os_str().is_empty()
        || pid_file.file_name().is_none()
        || pid_file.to_string_lossy().ends_with('/')
    {
        problems.push((
            format!("{at}.signal.pid_file"),
            format!(
                "{:?} is not a file path: name the file the app writes its process id to",
                pid_file.display().to_string()
            ),
        ));
    }
    match signal {
        Some(signal) if problems.is_empty() => Ok(NotifyConfig::Signal { pid_file, signal }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, NotifyConfig};
    use std::path::Path;
    use std::time::Duration;

    fn token(notify: &str) -> Result<Option<NotifyConfig>, Vec<String>> {
        let y = format!(
            "tokens:\n  - name: t\n    token_url: https://idp.example/t\n    client_id: c\n    client_secret_file: /s\n    outputs: [{{path: /tmp/tv/t}}]\n{notify}"
        );
        Config::parse(&y, Path::new("/etc/tv/config.yaml"))
            .map(|mut c| c.tokens.remove(0).notify)
            .map_err(|e| {
                e.problems
                    .into_iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect()
            })
    }

    #[test]
    fn no_notify_block_means_no_hook() {
        assert_eq!(token(""), Ok(None));
    }

    #[test]
    fn http_on_loopback_with_its_default_timeout() {
        for url in [
            "http://127.0.0.1:8080/-/token",
            "http://127.9.9.9/x?y=1",
            "http://[::1]:9/",
            "http://localhost:8080/reload",
            "http://LOCALHOST/",
        ] {
            let n = token(&format!("    notify: {{http: {{url: \"{url}\"}}}}\n"))
                .unwrap_or_else(|e| panic!("{url}: {e:?}"))
                .expect("a hook");
            let NotifyConfig::Http { url: u, timeout } = n else {
                panic!("{n:?}")
            };
            assert_eq!(timeout, Duration::from_secs(2), "{url}");
            assert_eq!(u.scheme(), "http");
        }
        let n = token("    notify: {http: {url: \"http://127.0.0.1:1/\", timeout: 250ms}}\n")
            .unwrap()
            .unwrap();
        assert!(
            matches!(n, NotifyConfig::Http { timeout, .. } if timeout == Duration::from_millis(250))
        );
    }

    #[test]
    fn http_elsewhere_than_loopback_is_refused_with_the_reason() {
        for (url, why) in [
            ("http://10.0.0.7:8080/", "is not a loopback address"),
            ("http://app.default.svc/", "is not a loopback address"),
            (
                "http://localhost.evil.example/",
                "is not a loopback address",
            ),
            ("http://0.0.0.0:80/", "is not a loopback address"),
            ("https://127.0.0.1/", "use http://"),
            ("ftp://127.0.0.1/", "use http://"),
            ("127.0.0.1:8080", "is not a valid URL"),
            ("not a url", "is not a valid URL"),
            ("http://u:p@127.0.0.1/", "credentials in the URL"),
        ] {
            let p = token(&format!("    notify: {{http: {{url: \"{url}\"}}}}\n")).unwrap_err();
            assert_eq!(p.len(), 1, "{url}: {p:?}");
            assert!(
                p[0].starts_with("tokens[0].notify.http.url: ") && p[0].contains(why),
                "{url}: {p:?}"
            );
        }
    }

    #[test]
    fn http_timeout_bounds_and_unknown_keys() {
        for t in ["0s", "61s"] {
            let p = token(&format!(
                "    notify: {{http: {{url: \"http://127.0.0.1/\", timeout: {t}}}}}\n"
            ))
            .unwrap_err();
            assert_eq!(
                p,
                vec!["tokens[0].notify.http.timeout: must be greater than zero and at most 1m"]
            );
        }
        let p =
            token("    notify: {http: {url: \"http://127.0.0.1/\", timeout: 5}}\n").unwrap_err();
        assert!(
            p[0].starts_with("tokens[0].notify.http.timeout: a duration needs a unit"),
            "{p:?}"
        );
        let p =
            token("    notify: {http: {url: \"http://127.0.0.1/\", method: PUT}}\n").unwrap_err();
        assert!(
            p[0].starts_with("tokens[0].notify.http.method: unknown key `method`"),
            "{p:?}"
        );
        let p = token("    notify: {command: reload.sh}\n").unwrap_err();
        assert_eq!(p.len(), 1, "no cascade: {p:?}");
        assert!(
            p[0].starts_with("tokens[0].notify.command: unknown key `command`"),
            "{p:?}"
        );
        let p = token("    notify: {http: {timeout: 1s}}\n").unwrap_err();
        assert_eq!(
            p,
            vec!["tokens[0].notify.http: required key `url` is missing; add it"]
        );
        let p = token("    notify: SIGHUP\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("tokens[0].notify: "), "{p:?}");
    }

    #[test]
    fn exactly_one_kind() {
        let p = token("    notify: {}\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("tokens[0].notify: set http"), "{p:?}");
        let p = token(
            "    notify: {http: {url: \"http://127.0.0.1/\"}, signal: {pid_file: /run/app.pid}}\n",
        )
        .unwrap_err();
        assert_eq!(
            p,
            vec![
                "tokens[0].notify: set http or signal, not both: a token notifies its app one way"
            ]
        );
    }

    #[test]
    fn signal_defaults_to_sighup_and_takes_names_with_or_without_sig() {
        let n = token("    notify: {signal: {pid_file: app.pid}}\n")
            .unwrap()
            .unwrap();
        let NotifyConfig::Signal { pid_file, signal } = n else {
            panic!("{n:?}")
        };
        // Relative to the config file's directory, like every other *_file key.
        assert_eq!(pid_file, Path::new("/etc/tv/app.pid"));
        assert_eq!((signal.name, signal.number), ("SIGHUP", libc::SIGHUP));
        for (written, number) in [
            ("USR1", libc::SIGUSR1),
            ("SIGUSR2", libc::SIGUSR2),
            ("SIGTERM", libc::SIGTERM),
        ] {
            let n = token(&format!(
                "    notify: {{signal: {{pid_file: /run/app.pid, signal: {written}}}}}\n"
            ))
            .unwrap()
            .unwrap();
            assert!(
                matches!(n, NotifyConfig::Signal { signal, .. } if signal.number == number),
                "{written}"
            );
        }
    }

    #[test]
    fn signals_that_tell_the_app_nothing_and_bad_pid_files_are_refused() {
        for sig in [
            "SIGKILL", "KILL", "SIGSTOP", "sighup", "hup", "SIGSEGV", "\"\"",
        ] {
            let p = token(&format!(
                "    notify: {{signal: {{pid_file: /run/app.pid, signal: {sig}}}}}\n"
            ))
            .unwrap_err();
            assert_eq!(p.len(), 1, "{sig}: {p:?}");
            assert!(
                p[0].starts_with("tokens[0].notify.signal.signal: ")
                    && p[0].contains("use one of SIGHUP, SIGUSR1"),
                "{sig}: {p:?}"
            );
        }
        for f in ["\"\"", "/run/"] {
            let p = token(&format!("    notify: {{signal: {{pid_file: {f}}}}}\n")).unwrap_err();
            assert!(
                p[0].starts_with("tokens[0].notify.signal.pid_file: ")
                    && p[0].contains("is not a file path"),
                "{f}: {p:?}"
            );
        }
        let p = token("    notify: {signal: {signal: SIGHUP}}\n").unwrap_err();
        assert!(
            p[0].starts_with("tokens[0].notify.signal: required key `pid_file` is missing"),
            "{p:?}"
        );
    }
}
