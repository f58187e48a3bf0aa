//! Process resource limits: the descriptor limit the daemon raises at start, which the admin server sizes its connection cap by.

use std::io;

/// The soft descriptor limit `raise_fd_limit` aims for: far above what the daemon needs (a few sockets per token,
/// the admin server's cap, the watcher), and finite, so a huge hard limit is not copied into every process.
const NOFILE_TARGET: u64 = 65_536;

/// Why the descriptor limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot read RLIMIT_NOFILE")]
    Get(#[source] io::Error),
    #[error("cannot raise the soft RLIMIT_NOFILE from {from} to {to}")]
    Set {
        from: u64,
        to: u64,
        #[source]
        source: io::Error,
    },
}

/// The descriptor limits: (soft, hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// The current RLIMIT_NOFILE.
pub(crate) fn nofile() -> Result<NoFile, LimitError> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned value.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(LimitError::Get(io::Error::last_os_error()));
    }
    Ok(NoFile {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// The soft limit to set, if the current one is below what the hard limit allows (capped at `NOFILE_TARGET`).
fn raised_soft(now: NoFile) -> Option<u64> {
    let to = now.hard.min(NOFILE_TARGET);
    (now.soft < to).then_some(to)
}

/// Raises the soft RLIMIT_NOFILE towards the hard limit (at most `NOFILE_TARGET`); returns the limits in force.
///
/// A low soft limit (1024 is common) is what lets a connection flood on the admin port take the sockets the token
/// refresher needs; the admin server's cap bounds its own share, and this keeps the rest roomy.
pub fn try_raise_fd_limit() -> Result<NoFile, LimitError> {
    let now = nofile()?;
    let Some(to) = raised_soft(now) else {
        return Ok(now);
    };
    let r = libc::rlimit {
        rlim_cur: to,
        rlim_max: now.hard,
    };
    // SAFETY: setrlimit reads one `rlimit` through a pointer to a live value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(LimitError::Set {
            from: now.soft,
            to,
            source: io::Error::last_os_error(),
        });
    }
    Ok(NoFile {
        soft: to,
        hard: now.hard,
    })
}

/// `try_raise_fd_limit`, logged: called once at start, before the admin server sizes its connection cap.
pub fn raise_fd_limit() -> Option<NoFile> {
    let before = nofile().ok();
    match try_raise_fd_limit() {
        Ok(now) => {
            if before.is_some_and(|b| b.soft != now.soft) {
                tracing::debug!(
                    soft = now.soft,
                    hard = now.hard,
                    "raised the descriptor limit"
                );
            }
            Some(now)
        }
        Err(e) => {
            let cause = std::error::Error::source(&e).map(|c| c.to_string());
            tracing::warn!(error = %e, cause = cause.as_deref().unwrap_or(""), "keeping the descriptor limit");
            before
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_a_low_soft_limit_to_the_hard_limit_capped() {
        let n = |soft, hard| NoFile { soft, hard };
        assert_eq!(raised_soft(n(1024, 4096)), Some(4096));
        assert_eq!(raised_soft(n(1024, 1 << 20)), Some(NOFILE_TARGET));
        assert_eq!(raised_soft(n(1024, u64::MAX)), Some(NOFILE_TARGET));
        assert_eq!(raised_soft(n(4096, 4096)), None);
        assert_eq!(raised_soft(n(NOFILE_TARGET, 1 << 20)), None);
        // Never lowers a soft limit someone set higher on purpose.
        assert_eq!(raised_soft(n(1 << 20, 1 << 20)), None);
    }

    #[test]
    fn raising_is_idempotent_and_keeps_the_hard_limit() {
        let first = try_raise_fd_limit().unwrap();
        let again = try_raise_fd_limit().unwrap();
        assert_eq!(first, again);
        assert_eq!(nofile().unwrap(), again);
        assert!(again.soft >= again.hard.min(NOFILE_TARGET));
    }
}
