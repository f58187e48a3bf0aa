//! Unix signals, turned into messages: SIGTERM and SIGINT stop, SIGHUP reloads. Only `main` uses this.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop(&'static str),
    Reload,
}

/// Starts a thread that forwards signals; the returned receiver gets one message per signal.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let msg = match sig {
                    SIGHUP => Signal::Reload,
                    SIGINT => Signal::Stop("SIGINT"),
                    _ => Signal::Stop("SIGTERM"),
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
