//! OAuth2 access tokens: the `Token` and its timing rules, and the client that vends them (HTTP client, client authentication, grant, error classification).

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod discovery;
pub(crate) mod error;
pub(crate) mod grant;
pub(crate) mod http;
pub(crate) mod jws;
pub(crate) mod jwt;
pub(crate) mod response;
#[cfg(test)]
mod test_http;
#[allow(clippy::module_inception)]
pub(crate) mod token;
pub(crate) mod transport;

pub(crate) use auth::ClientAuth;
pub(crate) use client::{RequestSpec, TokenClient};
pub(crate) use error::{ErrorKind, FetchError};
pub(crate) use grant::Grant;
pub(crate) use token::{LifetimeSource, Token};
