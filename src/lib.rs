//! token-vendor: config → credentials / client authentication → token client → refresher → sinks (files) → notify (the app), with a shared state read by the admin server.
//!
//! `load` reads the config file and hands its text to `config`, which checks it into domain types and opens no file;
//! `load` then runs the checks that look at the file system and the environment, for `run`, `once`, reload and
//! `check` alike, and for `once` and `check` opens every file the config names. `credentials` reads secrets,
//! `token::auth` applies them to each request; `token` vends and times tokens; `refresh` keeps each token fresh and
//! writes it through `output`, and `notify` then tells the app; `state` and `metrics` are what `admin` serves; `check`
//! reports, `schema` prints the JSON Schema of a token entry from `config`'s raw types. Imports follow the chain
//! backwards only: `config` builds the request's domain types (`token::auth`, `token::grant`, `token::http`,
//! `token::discovery::Discovery`) but knows neither the token client nor `output`, and nothing under `token` imports
//! `config`.

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod fsread;
#[doc(hidden)]
pub mod fuzz_api;
pub mod limits;
pub mod load;
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
