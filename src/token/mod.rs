//! OAuth2 access tokens: the `Token` and its timing rules, and the client that vends them.

pub mod client;
pub mod discovery;
pub mod jws;
#[allow(clippy::module_inception)]
pub mod token;

pub use client::{ErrorKind, FetchError, TokenClient};
pub use token::{refresh_buffer, LifetimeSource, Token};
