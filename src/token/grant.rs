//! The grant a token is requested with (RFC 6749 §4.4 client credentials today); it adds its own form fields to each request.
//!
//! RFC 8693 token exchange is meant to be one new variant here: it reads its subject token fresh in `apply` (the
//! context gives it the time) and names that file in `files`.

use std::path::Path;

use super::auth::{AuthError, RequestContext, TokenRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §4.4: `grant_type=client_credentials`.
    ClientCredentials,
}

impl Grant {
    /// The `grant_type` value.
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
        }
    }

    /// The files this grant reads at request time (none for client credentials).
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Grant::ClientCredentials => Vec::new(),
        }
    }

    /// Adds the grant's fields to `req`; comes first in the body, as servers' logs and the reference client have it.
    pub fn apply(&self, req: &mut TokenRequest, _ctx: &RequestContext) -> Result<(), AuthError> {
        req.field("grant_type", self.grant_type());
        Ok(())
    }
}
