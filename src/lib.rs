//! token-vendor: config → credentials → token client → refresher → sinks (files), with a shared state read by the admin server.
//!
//! `config` checks the YAML once; `credentials` reads the client id and secret; `token` vends and times tokens;
//! `refresh` keeps each token fresh and writes it through `output`; `state` and `metrics` are what `admin` serves.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod fsread;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod refresh;
pub mod shutdown;
pub mod state;
pub mod token;
pub mod watch;
