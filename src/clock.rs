//! The one source of time: a monotonic clock for scheduling and a wall clock for the times written to files.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Scheduling code takes a `Clock` instead of calling `now()`, so tests can run it on tokio's paused time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The operating system's clocks.
    System,
    /// Wall time derived from tokio's (possibly paused) monotonic clock: `wall0 + (now - mono0)`.
    Virtual { wall0: SystemTime, mono0: Instant },
}

impl Clock {
    /// A virtual clock starting at `wall0` now (the paused-clock tests' clock).
    #[cfg(test)]
    pub(crate) fn virtual_at(wall0: SystemTime) -> Clock {
        Clock::Virtual {
            wall0,
            mono0: Instant::now(),
        }
    }

    pub(crate) fn mono(&self) -> Instant {
        Instant::now()
    }

    pub(crate) fn wall(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Virtual { wall0, mono0 } => {
                *wall0 + Instant::now().saturating_duration_since(*mono0)
            }
        }
    }

    /// The monotonic instant at which wall time `at` arrives (now, if it already has).
    pub(crate) fn mono_at(&self, at: SystemTime) -> Instant {
        let now_wall = self.wall();
        let now = self.mono();
        match at.duration_since(now_wall) {
            Ok(ahead) => now + ahead.min(Duration::from_secs(100 * 365 * 24 * 3600)),
            Err(_) => now,
        }
    }
}
