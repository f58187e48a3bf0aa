//! The grant a token is requested with (RFC 6749 §4.4 client credentials, RFC 8693 token exchange); it adds its own form fields to each request.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::auth::{AuthError, RequestContext, TokenRequest};
use crate::credentials::CredentialError;
use crate::fsread::{read_bounded, CREDENTIAL_LIMIT};

/// RFC 8693 §2.1's `grant_type` for token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §4.4: `grant_type=client_credentials`.
    ClientCredentials,
    /// RFC 8693: the subject token (e.g. the pod's projected service-account token) is exchanged for the token.
    TokenExchange {
        /// Read fresh for every request: the kubelet rotates it, and an old one is refused as expired.
        subject_token_file: PathBuf,
        subject_token_type: String,
        requested_token_type: Option<String>,
    },
}

impl Grant {
    /// The `grant_type` value.
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange { .. } => TOKEN_EXCHANGE,
        }
    }

    /// The files this grant reads at request time: their directories are watched.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Grant::ClientCredentials => Vec::new(),
            Grant::TokenExchange {
                subject_token_file, ..
            } => vec![subject_token_file.as_path()],
        }
    }

    /// Adds the grant's fields to `req`; comes first in the body, as servers' logs and the reference client have it.
    pub fn apply(&self, req: &mut TokenRequest, _ctx: &RequestContext) -> Result<(), AuthError> {
        req.field("grant_type", self.grant_type());
        if let Grant::TokenExchange {
            subject_token_file,
            subject_token_type,
            requested_token_type,
        } = self
        {
            req.secret_field("subject_token", &subject_token(subject_token_file)?);
            req.field("subject_token_type", subject_token_type);
            if let Some(t) = requested_token_type {
                req.field("requested_token_type", t);
            }
        }
        Ok(())
    }

    /// A hash of what the grant reads now (the subject token), to notice a rotation; 0 for a grant that reads nothing.
    pub fn fingerprint(&self) -> Result<u64, AuthError> {
        match self {
            Grant::ClientCredentials => Ok(0),
            Grant::TokenExchange {
                subject_token_file, ..
            } => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                secrecy::ExposeSecret::expose_secret(&subject_token(subject_token_file)?)
                    .hash(&mut h);
                Ok(h.finish())
            }
        }
    }
}

/// The subject token as the file has it now, trimmed of the newline editors add; never cached.
fn subject_token(path: &Path) -> Result<SecretString, AuthError> {
    let bytes = read_bounded(path, CREDENTIAL_LIMIT, true).map_err(|source| {
        AuthError::Credential(CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        AuthError::Credential(CredentialError::NotUtf8 {
            path: path.to_path_buf(),
        })
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AuthError::Credential(CredentialError::Empty {
            path: path.to_path_buf(),
        }));
    }
    Ok(SecretString::from(token.to_string()))
}
