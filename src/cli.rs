//! The command line: `run`, `once`, `check`, `demo`, `schema`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 ok; 1 runtime failure (a token could not be vended, the port is taken); 2 usage or config error.

Quick start:  token-vendor demo            (a built-in development token endpoint; files appear in ./tokens)
Kubernetes:   token-vendor run --config /etc/token-vendor/config.yaml";

/// Vends OAuth2 client-credentials tokens to files, refreshed well before they expire.
#[derive(Debug, Parser)]
#[command(name = "token-vendor", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: keep every token fresh on disk and serve /readyz /livez /metrics /status.
    Run {
        /// The YAML config file.
        #[arg(long, short, env = "TOKEN_VENDOR_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Vend every token once, write every output, and exit (init containers, CI jobs).
    Once {
        /// The YAML config file.
        #[arg(long, short, env = "TOKEN_VENDOR_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Give up on transient errors after this long (permanent errors fail at once).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Validate the config and every file it refers to, without contacting any server.
    Check {
        /// The YAML config file.
        #[arg(long, short, env = "TOKEN_VENDOR_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Try it out: a built-in DEVELOPMENT token endpoint on 127.0.0.1, tokens written to --dir until Ctrl-C.
    Demo {
        /// Where to write the token files.
        #[arg(long, default_value = "./tokens")]
        dir: PathBuf,
        /// The admin server's address.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
        /// Lifetime of the demo tokens (short, so refreshes are visible).
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        lifetime: Duration,
        /// Vend and write once, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the JSON Schema of a `tokens[]` entry of the config file (keys and types; `check` does the rest).
    Schema,
}
