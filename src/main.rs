//! The `token-vendor` binary: parse the command line, set up logging, run the chosen mode, turn the result into an exit code.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tokio::sync::mpsc;

use token_vendor::app::{self, Control};
use token_vendor::cli::{Cli, Command};
use token_vendor::clock::Clock;
use token_vendor::config::{Config, LogConfig, LogFormat};
use token_vendor::{demo, logging, shutdown};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("token-vendor: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Once { config, timeout } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            logging::init(&cfg.log);
            let result = runtime.block_on(app::once(&cfg, timeout, Clock::System));
            once_result(result)
        }
        Command::Run { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            logging::init(&cfg.log);
            token_vendor::limits::raise_fd_limit();
            for w in cfg.warnings() {
                tracing::warn!(file = %config.display(), key = %w.path, "{}", w.message);
            }
            tracing::info!(version = env!("CARGO_PKG_VERSION"), tokens = cfg.tokens.len(), file = %config.display(), "token-vendor starting");
            runtime.block_on(daemon(config.clone(), cfg))
        }
        Command::Demo {
            dir,
            listen,
            lifetime,
            once,
        } => {
            logging::init(&LogConfig {
                format: Some(LogFormat::Text),
                level: "info".into(),
            });
            runtime.block_on(run_demo(&dir, listen, lifetime, once))
        }
    }
}

fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("token-vendor: {e}");
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let (problems, warnings) = app::check(path);
    for w in &warnings {
        eprintln!("warning: {}: {}: {}", path.display(), w.path, w.message);
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        let at = if p.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", p.path)
        };
        eprintln!("error: {}: {at}{}", path.display(), p.message);
    }
    eprintln!(
        "{}: {} problem(s); nothing was contacted",
        path.display(),
        problems.len()
    );
    ExitCode::from(EXIT_CONFIG)
}

fn once_result(result: Result<Vec<app::OnceFailure>, String>) -> ExitCode {
    match result {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            for f in failures {
                // Most errors already name the token URL; say it once either way.
                let at = if f.error.contains(&f.url) {
                    String::new()
                } else {
                    format!(" ({})", f.url)
                };
                eprintln!(
                    "token-vendor: token {} FAILED after {} attempt(s): {}{at}",
                    f.token, f.attempts, f.error
                );
            }
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("token-vendor: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Signals become controls: the first SIGTERM/SIGINT stops gracefully, a second exits at once; SIGHUP reloads.
fn controls() -> std::io::Result<mpsc::UnboundedReceiver<Control>> {
    let mut signals = shutdown::listen()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stopping = false;
        while let Some(sig) = signals.recv().await {
            match sig {
                shutdown::Signal::Reload => {
                    let _ = tx.send(Control::Reload);
                }
                shutdown::Signal::Stop(name) if stopping => {
                    tracing::warn!(signal = name, "second stop signal: exiting now");
                    std::process::exit(i32::from(EXIT_RUNTIME));
                }
                shutdown::Signal::Stop(name) => {
                    tracing::info!(signal = name, "stop signal received");
                    stopping = true;
                    let _ = tx.send(Control::Stop);
                }
            }
        }
    });
    Ok(rx)
}

async fn daemon(path: std::path::PathBuf, cfg: Config) -> ExitCode {
    let control = match controls() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match app::run(path, cfg, Clock::System, control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("token-vendor: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run_demo(
    dir: &Path,
    listen: std::net::SocketAddr,
    lifetime: std::time::Duration,
    once: bool,
) -> ExitCode {
    let endpoint = match demo::start_endpoint(lifetime).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("token-vendor: cannot start the demo endpoint: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    tracing::warn!(url = %format!("http://{endpoint}/token"), "DEVELOPMENT ONLY: started the built-in demo token endpoint; `run` and `once` never use it");
    // The demo's config is a real file, so it can be read, edited and reloaded like any other.
    let path = dir.join("demo-config.yaml");
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, demo::config_yaml(dir, endpoint, listen)));
    if let Err(e) = written {
        eprintln!("token-vendor: cannot write {}: {e}", path.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    let Some(cfg) = load(&path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    tracing::info!(dir = %dir.display(), files = "token, token.header, token.json, token.env", "demo: writing a fresh token every ~{}s; watch with: watch -n1 cat {}/token.json", lifetime.as_secs() * 3 / 4, dir.display());
    if once {
        return once_result(
            app::once(&cfg, std::time::Duration::from_secs(10), Clock::System).await,
        );
    }
    tracing::info!("demo: readiness at http://{listen}/readyz, status at http://{listen}/status; Ctrl-C to stop");
    let control = match controls() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("token-vendor: cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match app::run(path, cfg, Clock::System, control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-vendor: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
