//! Issue 5, the reliability and security suite: the real binary against faulty token servers, full and read-only
//! disks, crashes, signals, broken reloads, hostile input and TLS; each scenario records its row for `docs/reliability.md`.

pub(crate) mod common;
pub(crate) mod report;

mod crash;
mod disk;
mod faults;
mod fuzz;
mod leaks;
mod outage;
mod permanent;
mod reload;
mod signals;
mod startup;
pub(crate) mod tls;
mod torn;
