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
//! `config`. `schedule` is the pure timing both `refresh` and `notify` use (when to refresh, how long to back off), so
//! neither imports the other for it. `scripts/import-graph` prints the graph and fails on a cycle (scripts/test runs it).
//!
//! Every module is private. The public surface is the `pub use` list below, grouped by the crate's users outside
//! `src/`: the binary (`src/main.rs`), the integration tests (`tests/it`), the benchmark `bench/sign_cost.rs` and the
//! simulator `examples/fleet_sim.rs`, plus the types their signatures name. The fuzz targets (`fuzz/`) come in through
//! the hidden `fuzz_api` only. Everything else is `pub(crate)` at most, so the compiler reports what nothing uses.

// A `pub` item that is not re-exported below is a warning (an error under clippy -D warnings): use `pub(crate)`.
#![warn(unreachable_pub)]

mod admin;
mod app;
mod check;
mod cli;
mod clock;
mod config;
mod credentials;
mod demo;
mod fsread;
#[doc(hidden)]
pub mod fuzz_api;
mod limits;
mod load;
mod logging;
mod metrics;
mod notify;
mod output;
mod refresh;
mod schedule;
mod schema;
mod shutdown;
mod state;
mod token;
mod watch;

// The binary (src/main.rs): the command line, its modes and their one error, and what it sets up around them.
pub use app::{bind as bind_admin, once, run, run_on, Control, Error, NOT_SENT};
pub use check::check;
pub use cli::{Cli, Command};
pub use clock::Clock;
pub use config::{Config, LogConfig, LogFormat};
pub use demo::{
    config_yaml as demo_config_yaml, discard_previous_state as demo_discard_previous_state,
    lock_dir as demo_lock_dir, start_endpoint as demo_start_endpoint, LOCK_FILE as DEMO_LOCK_FILE,
};
pub use limits::raise_fd_limit;
pub use load::load;
pub use logging::init as init_logging;
pub use schema::token_schema_text;
pub use shutdown::{listen as listen_signals, Signal};
pub use token::error::chain as error_chain;

// The integration tests (tests/it): the parsers and formats they check directly, and the state file's sealing.
pub use config::Format;
pub use limits::try_raise_fd_limit;
pub use load::open_files;
pub use output::render;
pub use refresh::sink::{seal, KEY_FILE};
pub use token::auth::basic_auth;
pub use token::error::ErrorKind;
pub use token::token::{jwt_exp, parse_token_response, rfc3339, TokenRecord, MAX_LIFETIME};

// The integration tests (tests/it/auth_blocks.rs): discovery and `private_key_jwt` assertions against a real provider.
pub use token::discovery::{
    fetch as fetch_discovery, pick_auth_method, Configured, DiscoveryError, Issuer, PickedMethod,
};
pub use token::jws::{Alg, AssertionSigner, KeyId, SigningKey, DEFAULT_LIFETIME, JWT_BEARER};

// The benchmark bench/sign_cost.rs: one token request per client authentication method.
pub use credentials::CredentialSource;
pub use token::auth::{
    AssertionAudience, ClientAuth, KeyIdSource, PrivateKeyJwt, RequestContext, TokenRequest,
};

// The simulator examples/fleet_sim.rs: the refresh schedule's pure functions.
pub use config::RefreshPolicy;
pub use schedule::{backoff, next_refresh, remaining, retry_delay, Failure};
pub use token::token::refresh_buffer;

// The types the items above take, return or hold, so that each can be named.
pub use app::OnceFailure;
pub use check::Report as CheckReport;
pub use config::{ConfigError, OutputConfig, Problem, TokenConfig};
pub use credentials::CredentialError;
pub use fsread::{FileKind, ReadError};
pub use limits::{LimitError, NoFile};
pub use token::auth::AuthError;
pub use token::discovery::Document;
pub use token::http::HttpClientError;
pub use token::jws::{KeyError, KeyType};
pub use token::token::{ResponseError, Token};
