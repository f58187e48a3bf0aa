//! The `token-vendor` binary: parse the command line, set up logging, run the chosen mode, and print any error once, with its causes, choosing the exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tokio::sync::mpsc;

use token_vendor::{
    error_chain, Cli, Clock, Command, Config, Control, Error, LogConfig, LogFormat, Signal,
};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    if let Command::Schema = cli.command {
        print!("{}", token_vendor::token_schema_text());
        return ExitCode::SUCCESS;
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// The one place an error is printed: with its cause chain, and the exit code it calls for.
fn report(e: &Error) -> ExitCode {
    match e {
        Error::TokensFailed(failures) => {
            for f in failures {
                eprintln!("token-vendor: {f}");
            }
        }
        Error::NotSent(problems) => {
            eprintln!("token-vendor: {problems}");
            eprintln!("token-vendor: {}", token_vendor::NOT_SENT);
        }
        e => {
            let line = error_chain(e);
            if matches!(e, Error::Start(_) | Error::Listen { .. }) {
                // The daemon logs to its log stream too, where a supervisor looks first.
                tracing::error!("{line}");
            }
            eprintln!("token-vendor: {line}");
        }
    }
    ExitCode::from(e.exit_code())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Check { .. } | Command::Schema => unreachable!("handled in main"),
        Command::Once { config, timeout } => {
            let rt = runtime()?;
            let cfg = token_vendor::load(&config)?;
            token_vendor::init_logging(&cfg.log);
            rt.block_on(token_vendor::once(&config, &cfg, timeout, Clock::System))
        }
        Command::Run { config } => {
            let rt = runtime()?;
            let cfg = token_vendor::load(&config)?;
            token_vendor::init_logging(&cfg.log);
            token_vendor::raise_fd_limit();
            for w in cfg.warnings() {
                tracing::warn!(file = %config.display(), key = %w.path, "{}", w.message);
            }
            tracing::info!(version = env!("CARGO_PKG_VERSION"), tokens = cfg.tokens.len(), file = %config.display(), "token-vendor starting");
            rt.block_on(daemon(config, cfg))
        }
        Command::Demo {
            dir,
            listen,
            lifetime,
            once,
        } => {
            let rt = runtime()?;
            token_vendor::init_logging(&LogConfig {
                format: Some(LogFormat::Text),
                level: "info".into(),
            });
            rt.block_on(run_demo(&dir, listen, lifetime, once))
        }
    }
}

/// `check` is not an error path: it prints a report, and exits 2 when the report has problems.
fn check(path: &Path) -> ExitCode {
    let report = token_vendor::check(path);
    for w in &report.warnings {
        eprintln!("warning: {}: {}: {}", path.display(), w.path, w.message);
    }
    if report.problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &report.problems {
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
        report.problems.len()
    );
    ExitCode::from(EXIT_CONFIG)
}

/// Signals become controls: the first SIGTERM/SIGINT stops gracefully, a second exits at once; SIGHUP reloads.
fn controls() -> Result<mpsc::UnboundedReceiver<Control>, Error> {
    let mut signals = token_vendor::listen_signals().map_err(Error::Signals)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stopping = false;
        while let Some(sig) = signals.recv().await {
            match sig {
                Signal::Reload => {
                    let _ = tx.send(Control::Reload);
                }
                Signal::Stop(name) if stopping => {
                    tracing::warn!(signal = name, "second stop signal: exiting now");
                    std::process::exit(i32::from(EXIT_RUNTIME));
                }
                Signal::Stop(name) => {
                    tracing::info!(signal = name, "stop signal received");
                    stopping = true;
                    let _ = tx.send(Control::Stop);
                }
            }
        }
    });
    Ok(rx)
}

async fn daemon(path: PathBuf, cfg: Config) -> Result<(), Error> {
    let control = controls()?;
    token_vendor::run(path, cfg, Clock::System, control).await
}

async fn run_demo(
    dir: &Path,
    listen: std::net::SocketAddr,
    lifetime: std::time::Duration,
    once: bool,
) -> Result<(), Error> {
    // A serving demo binds its admin port first: a second one stops here, before it writes anything.
    let listener = if once {
        None
    } else {
        Some(token_vendor::bind_admin(listen).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                Error::DemoPortInUse {
                    port: listen.port(),
                }
            } else {
                Error::Listen {
                    addr: listen,
                    source,
                }
            }
        })?)
    };
    let listen = match &listener {
        Some(l) => l.local_addr().map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?,
        None => listen,
    };
    // One demo per directory (`--once` too), held until it exits: another one would replace its config and tokens.
    let lock = dir.join(token_vendor::DEMO_LOCK_FILE);
    let _held = match std::fs::create_dir_all(dir).and_then(|()| token_vendor::demo_lock_dir(&lock))
    {
        Ok(Some(held)) => held,
        Ok(None) => {
            return Err(Error::DemoDirBusy {
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => return Err(Error::DemoConfig { path: lock, source }),
    };
    let endpoint = token_vendor::demo_start_endpoint(lifetime)
        .await
        .map_err(Error::DemoEndpoint)?;
    tracing::warn!(url = %format!("http://{endpoint}/token"), "DEVELOPMENT ONLY: started the built-in demo token endpoint; `run` and `once` never use it");
    // The demo's config is a real file, so it can be read, edited and reloaded like any other.
    let path = dir.join("demo-config.yaml");
    std::fs::write(&path, token_vendor::demo_config_yaml(dir, endpoint, listen)).map_err(
        |source| Error::DemoConfig {
            path: path.clone(),
            source,
        },
    )?;
    let cfg = token_vendor::load(&path)?;
    token_vendor::demo_discard_previous_state(&cfg);
    tracing::info!(dir = %dir.display(), files = "token, token.header, token.json, token.env", "demo: writing a fresh token every ~{}s; watch with: watch -n1 cat {}/token.json", lifetime.as_secs() * 3 / 4, dir.display());
    let Some(listener) = listener else {
        return token_vendor::once(
            &path,
            &cfg,
            std::time::Duration::from_secs(10),
            Clock::System,
        )
        .await;
    };
    tracing::info!("demo: readiness at http://{listen}/readyz, status at http://{listen}/status; Ctrl-C to stop");
    let control = controls()?;
    token_vendor::run_on(listener, path, cfg, Clock::System, control).await
}
