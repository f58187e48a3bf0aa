//! token-vendor: config → credentials / client authentication → token client → refresher → sinks (files) → notify (the app), with a shared state read by the admin server.
//!
//! `config` checks the YAML once into domain types; `credentials` reads secrets, `token::auth` applies them to each
//! request; `token` vends and times tokens; `refresh` keeps each token fresh and writes it through `output`, and
//! `notify` then tells the app; `state` and `metrics` are what `admin` serves; `check` validates a config and the
//! files it names. Imports follow the chain backwards only: `config` builds the request's domain types
//! (`token::auth`, `token::grant`, `token::http`) but knows neither the token client nor `output`, and nothing under
//! `token` imports `config`.

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod fsread;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod refresh;
pub mod schema;
pub mod shutdown;
pub mod state;
pub mod token;
pub mod watch;
