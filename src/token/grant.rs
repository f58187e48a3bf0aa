//! The grant a token is requested with (RFC 6749 §4.4 client credentials, RFC 8693 token exchange); it adds its own form fields to each request.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use super::auth::{AuthError, RequestContext, TokenRequest};
use super::error::chain;
use super::jwt;
use crate::credentials::{read_file_bytes, CredentialError};
use crate::fsread::CREDENTIAL_LIMIT;

/// RFC 8693 §2.1's `grant_type` for token exchange.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 §3 token types whose value is a JWT by definition.
const JWT_TYPES: &[&str] = &[
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// RFC 6749 §4.4: `grant_type=client_credentials`.
    ClientCredentials,
    /// RFC 8693: the subject token (e.g. the pod's projected service-account token) is exchanged for the token.
    TokenExchange {
        /// As the file is at each request: the kubelet rotates it, and an old one is refused as expired.
        subject_token_file: PathBuf,
        subject_token_type: String,
        requested_token_type: Option<String>,
    },
}

impl Grant {
    /// The `grant_type` value.
    pub(crate) fn grant_type(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange { .. } => TOKEN_EXCHANGE,
        }
    }

    /// The files this grant reads at request time: their directories are watched.
    pub(crate) fn files(&self) -> Vec<&Path> {
        match self {
            Grant::ClientCredentials => Vec::new(),
            Grant::TokenExchange {
                subject_token_file, ..
            } => vec![subject_token_file.as_path()],
        }
    }

    /// Adds the grant's fields to `req`; comes first in the body, as servers' logs and the reference client have it.
    pub(crate) fn apply(
        &self,
        req: &mut TokenRequest,
        _ctx: &RequestContext,
    ) -> Result<u64, AuthError> {
        req.field("grant_type", self.grant_type());
        if let Grant::TokenExchange {
            subject_token_file,
            subject_token_type,
            requested_token_type,
        } = self
        {
            let token = subject_token(subject_token_file)?;
            req.secret_field("subject_token", &token);
            req.field("subject_token_type", subject_token_type);
            if let Some(t) = requested_token_type {
                req.field("requested_token_type", t);
            }
            return Ok(hash_of(&token));
        }
        Ok(0)
    }

    /// What `check` finds wrong with the files this grant reads, as (config key, message): the subject token is read
    /// as a request would read it (regular file, bounded, UTF-8, not empty) and, when it is a JWT, its `exp` is
    /// compared with `now`. Nothing is sent; no message contains the token.
    pub(crate) fn check_files(&self, now: SystemTime) -> Vec<(&'static str, String)> {
        let Grant::TokenExchange {
            subject_token_file: path,
            subject_token_type,
            ..
        } = self
        else {
            return Vec::new();
        };
        let token = match subject_token(path) {
            Ok(t) => t,
            Err(e) => return vec![("subject_token_file", chain(&e))],
        };
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        match jwt::exp_secs(token.expose_secret()) {
            Some(Some(exp)) if exp <= now => vec![(
                "subject_token_file",
                format!(
                    "the subject token in {} expired at {exp} (unix time, {} s ago) and was not rotated; the server will refuse it: check what writes it (kubelet projects the service-account token)",
                    path.display(),
                    now - exp
                ),
            )],
            None if JWT_TYPES.contains(&subject_token_type.as_str()) => vec![(
                "subject_token_file",
                format!(
                    "{} does not hold a JWT, but subject_token_type is {subject_token_type}; is this the right file?",
                    path.display()
                ),
            )],
            _ => Vec::new(),
        }
    }

    /// A hash of what the grant reads now (the subject token), to notice a rotation; 0 for a grant that reads nothing.
    pub(crate) fn fingerprint(&self) -> Result<u64, AuthError> {
        match self {
            Grant::ClientCredentials => Ok(0),
            Grant::TokenExchange {
                subject_token_file, ..
            } => Ok(hash_of(&subject_token(subject_token_file)?)),
        }
    }
}

/// The fingerprint of a subject token, as [`Grant::fingerprint`] and [`Grant::apply`] give it.
fn hash_of(token: &SecretString) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.expose_secret().hash(&mut h);
    h.finish()
}

/// The subject token as the file has it now, trimmed of the newline editors add; its bytes are kept only while the
/// file is unchanged ([`read_file_bytes`]).
fn subject_token(path: &Path) -> Result<SecretString, AuthError> {
    let bytes = read_file_bytes(path, CREDENTIAL_LIMIT).map_err(|source| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::Duration;

    fn exchange(path: &Path, kind: &str) -> Grant {
        Grant::TokenExchange {
            subject_token_file: path.to_path_buf(),
            subject_token_type: kind.into(),
            requested_token_type: None,
        }
    }

    fn jwt(exp: u64) -> String {
        let enc = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            enc(r#"{"alg":"none"}"#.into()),
            enc(format!(r#"{{"exp":{exp}}}"#))
        )
    }

    #[test]
    fn check_names_the_subject_file_and_never_shows_the_token() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("token");
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let jwt_type = JWT_TYPES[0];
        assert!(Grant::ClientCredentials.check_files(at(0)).is_empty());

        let fresh = jwt(1000);
        std::fs::write(&f, format!("{fresh}\n")).unwrap();
        assert!(exchange(&f, jwt_type).check_files(at(999)).is_empty());
        // An unsecured JWT (empty signature) and one without exp are JWTs too.
        let unsecured = fresh.trim_end_matches("sig").to_string();
        assert_eq!(jwt::exp_secs(&unsecured), Some(Some(1000)));
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        assert_eq!(
            jwt::exp_secs(&format!("{}.{}.", enc("{}"), enc("{}"))),
            Some(None)
        );
        for not_jwt in [
            "a.b.c",
            "x",
            &format!("{}.{}", enc("{}"), enc("{}")),
            &format!("{unsecured}.x"),
        ] {
            assert_eq!(jwt::exp_secs(not_jwt), None, "{not_jwt}");
        }

        // At and past exp: the server would refuse it.
        for now in [1000, 1005] {
            let p = exchange(&f, jwt_type).check_files(at(now));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].0, "subject_token_file");
            assert!(
                p[0].1.contains(&f.display().to_string()) && p[0].1.contains("expired at 1000"),
                "{p:?}"
            );
            assert!(!p[0].1.contains(&fresh));
        }

        // Not a JWT: wrong for the JWT types, fine for an opaque access token.
        std::fs::write(&f, "opaque-subject-token").unwrap();
        let p = exchange(&f, jwt_type).check_files(at(0));
        assert!(p[0].1.contains("does not hold a JWT"), "{p:?}");
        assert!(!p[0].1.contains("opaque-subject-token"), "{p:?}");
        assert!(
            exchange(&f, "urn:ietf:params:oauth:token-type:access_token")
                .check_files(at(0))
                .is_empty()
        );

        // Unreadable in every way a request would fail: each names the path.
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b'a'; CREDENTIAL_LIMIT as usize + 1]).unwrap();
        for (path, why) in [
            (tmp.path().join("missing"), "No such file"),
            (dir, "not a regular file"),
            (empty, "empty"),
            (big, "larger than"),
        ] {
            let p = exchange(&path, jwt_type).check_files(at(0));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].1.contains(&path.display().to_string()) && p[0].1.contains(why),
                "{why}: {p:?}"
            );
        }
    }
}
