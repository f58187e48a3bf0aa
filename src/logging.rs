//! Log output: JSON lines for machines, text for people; to stderr.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::log_filter::filter;
use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `TOKEN_VENDOR_LOG` (a [`filter`]) overrides the configured level.
pub fn init(cfg: &LogConfig) {
    let targets = std::env::var("TOKEN_VENDOR_LOG")
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
    let registry = tracing_subscriber::registry().with(targets);
    let _ = if json {
        registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init()
    } else {
        registry.with(layer.compact()).try_init()
    };
}

/// Colour only for a person at a terminal: never into a file or pipe, and never when `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
