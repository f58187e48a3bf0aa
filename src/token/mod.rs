//! OAuth2 access tokens: the `Token` and its timing rules, and the client that vends them (HTTP client, client authentication, grant, error classification).

pub mod auth;
pub mod client;
pub mod discovery;
pub mod error;
pub mod grant;
pub mod http;
pub mod jws;
pub mod jwt;
pub mod response;
#[cfg(test)]
mod test_http;
#[allow(clippy::module_inception)]
pub mod token;
pub mod transport;

pub use auth::ClientAuth;
pub use client::{RequestSpec, TokenClient};
pub use error::{ErrorKind, FetchError};
pub use grant::Grant;
pub use token::{refresh_buffer, LifetimeSource, Token};
