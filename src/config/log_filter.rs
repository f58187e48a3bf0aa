//! What a log filter (`log.level`, `TOKEN_VENDOR_LOG`) says: levels per target, checked by the config and applied by logging.

use tracing_subscriber::filter::Targets;

/// The crate's own target; a bare `trace` applies in full only to it (see [`directives`]).
const OWN_TARGET: &str = "token_vendor";

/// Parses a log filter: comma-separated `level` or `target=level` directives, as in `info` or
/// `warn,token_vendor::refresh=debug` (targets match by prefix). `None` when a directive does not parse, when there
/// is none (an empty filter would silence everything), or when a bare word is not a level: `tracing-subscriber` would
/// take `warning` for a target and the sidecar would log nothing at all, not even its errors.
///
/// Per-target levels are all the filter does: `tracing-subscriber`'s `EnvFilter` would add span and field
/// directives, and its regex engine made the binary 0.33 MB larger (0.23 MB of text, which is all resident in every
/// sidecar: BENCHMARKS.md, 1 token).
pub(crate) fn filter(s: &str) -> Option<Targets> {
    let d = directives(s);
    let bare_word = d.split(',').any(|d| {
        !d.contains('=')
            && d.parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
    });
    if d.is_empty() || bare_word {
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

#[cfg(test)]
mod tests {
    use super::{directives, filter};

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
        for bad in [
            "",
            " , ",
            "a=b=c",
            "token_vendor=loud",
            "warning",
            "verbose",
            "info,notify",
        ] {
            assert!(filter(bad).is_none(), "{bad:?}");
        }
    }
}
