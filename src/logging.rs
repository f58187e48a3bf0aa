//! Log output: JSON lines for machines, text for people; to stderr.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// The crate's own target; a bare `trace` applies in full only to it (see [`directives`]).
const OWN_TARGET: &str = "token_vendor";

/// Installs the global subscriber. `TOKEN_VENDOR_LOG` (a [`filter`]) overrides the configured level.
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("TOKEN_VENDOR_LOG")
        .ok()
        .and_then(|f| filter(&f))
        .or_else(|| filter(&cfg.level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let json = match cfg.format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init()
    } else {
        registry.with(layer.compact()).try_init()
    };
}

/// Parses a log filter: comma-separated `level`, `target` or `target=level` directives, as in `info` or
/// `warn,token_vendor::refresh=debug` (targets match by prefix). `None` when a directive does not parse or there is
/// none (an empty filter would silence everything).
///
/// Per-target levels are all the filter does: `tracing-subscriber`'s `EnvFilter` would add span and field
/// directives, and its regex engine made the binary 0.33 MB larger (0.23 MB of text, which is all resident in every
/// sidecar: BENCHMARKS.md, 1 token).
pub(crate) fn filter(s: &str) -> Option<Targets> {
    let d = directives(s);
    if d.is_empty() {
        return None;
    }
    d.parse().ok()
}

/// `filter` with the other crates' `trace` output left off unless the filter names them: a bare `trace` becomes
/// `debug` for every crate plus `trace` for token-vendor's own target. The file watcher logs every inotify event it
/// reads at `trace`; with stderr going to a file in a watched directory each of those lines is itself an event, and
/// the loop wrote a gigabyte in seconds. `notify=trace` (or any other crate named) still gets exactly what it says.
fn directives(filter: &str) -> String {
    let parts: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let names_own = parts.iter().any(|d| {
        d.split(['=', '['])
            .next()
            .is_some_and(|t| t == OWN_TARGET || t.starts_with("token_vendor::"))
    });
    let mut out = Vec::with_capacity(parts.len() + 1);
    let mut own = None;
    for d in parts {
        match d.parse::<tracing_subscriber::filter::LevelFilter>() {
            Ok(level) if level > tracing_subscriber::filter::LevelFilter::DEBUG => {
                out.push("debug".to_string());
                own = Some(level);
            }
            _ => out.push(d.to_string()),
        }
    }
    if let (Some(level), false) = (own, names_own) {
        out.push(format!("{OWN_TARGET}={level}"));
    }
    out.join(",")
}

/// Colour only for a person at a terminal: never into a file or pipe, and never when `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{colour, directives, filter};
    use std::ffi::OsStr;

    #[test]
    fn other_crates_trace_only_when_named() {
        for (given, want) in [
            ("trace", "debug,token_vendor=trace"),
            ("TRACE", "debug,token_vendor=trace"),
            ("debug", "debug"),
            ("info", "info"),
            ("trace,hyper=info", "debug,hyper=info,token_vendor=trace"),
            (
                "trace,notify=trace",
                "debug,notify=trace,token_vendor=trace",
            ),
            ("trace,token_vendor=info", "debug,token_vendor=info"),
            (
                "token_vendor::watch=trace,warn",
                "token_vendor::watch=trace,warn",
            ),
            ("notify", "notify"),
            (" trace , ", "debug,token_vendor=trace"),
        ] {
            assert_eq!(directives(given), want, "{given}");
        }
    }

    #[test]
    fn a_filter_is_levels_per_target_and_never_empty() {
        use tracing::Level;
        let f = filter("warn,token_vendor::refresh=debug").unwrap_or_default();
        assert!(f.would_enable("token_vendor::refresh::sink", &Level::DEBUG));
        assert!(!f.would_enable("token_vendor::refresh", &Level::TRACE));
        assert!(!f.would_enable("token_vendor::watch", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::WARN));
        let f = filter("trace").unwrap_or_default();
        assert!(f.would_enable("token_vendor::watch", &Level::TRACE));
        assert!(!f.would_enable("notify::inotify", &Level::TRACE));
        assert!(f.would_enable("notify::inotify", &Level::DEBUG));
        for bad in ["", " , ", "a=b=c", "token_vendor=loud"] {
            assert!(filter(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
