//! Config checks for the key- and assertion-based client authentication methods (`private_key_jwt`, `client_assertion_file`); `check` opens their files.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::raw::{RawAuthMethod, RawToken};
use super::Problem;
use crate::credentials::CredentialSource;
use crate::token::auth::{AssertionAudience, ClientAuth, KeyIdSource, PrivateKeyJwt};
use crate::token::jws::{Alg, DEFAULT_LIFETIME};

/// Where the chart projects the pod's service-account token for the sidecar.
const DEFAULT_ASSERTION_FILE: &str = "/var/run/secrets/token-vendor/token";

/// A checked key- or assertion-based method, waiting for the client id.
pub(crate) enum Keyed {
    Jwt {
        private_key_file: PathBuf,
        alg: Option<Alg>,
        key_id: KeyIdSource,
        audience: AssertionAudience,
        lifetime: Duration,
    },
    AssertionFile(PathBuf),
}

impl Keyed {
    pub(crate) fn into_auth(self, client_id: CredentialSource) -> ClientAuth {
        match self {
            Keyed::Jwt {
                private_key_file,
                alg,
                key_id,
                audience,
                lifetime,
            } => ClientAuth::PrivateKeyJwt(Box::new(PrivateKeyJwt {
                client_id,
                private_key_file,
                alg,
                key_id,
                audience,
                lifetime,
            })),
            Keyed::AssertionFile(path) => ClientAuth::ClientAssertionFile { client_id, path },
        }
    }
}

/// `None` for the secret-based methods (after refusing keys that belong to the others); for the keyed methods
/// `Some(Some(..))` when valid, `Some(None)` when problems were recorded. The caller then skips `client_secret`.
/// `method` is the configured one, or for `auto` the one its credentials imply; `issuer` is set with discovery.
pub(crate) fn keyed(
    raw: &RawToken,
    method: Option<RawAuthMethod>,
    issuer: Option<&str>,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<Option<Keyed>> {
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            path: format!("{at}.{key}"),
            message,
        })
    };
    let jwt_keys = [
        ("private_key_file", raw.private_key_file.is_some()),
        ("alg", raw.alg.is_some()),
        ("kid", raw.kid.is_some()),
        ("certificate_file", raw.certificate_file.is_some()),
        ("assertion_audience", raw.assertion_audience.is_some()),
        ("assertion_lifetime", raw.assertion_lifetime.is_some()),
    ];
    let secret_keys = [
        ("client_secret", raw.client_secret.is_some()),
        ("client_secret_file", raw.client_secret_file.is_some()),
        ("client_secret_env", raw.client_secret_env.is_some()),
    ];
    let refuse = |keys: &[(&str, bool)], why: &str, problem: &mut dyn FnMut(&str, String)| {
        for (k, _) in keys.iter().filter(|(_, set)| *set) {
            problem(k, format!("is not used by {why}; remove it"));
        }
    };
    match method {
        Some(RawAuthMethod::PrivateKeyJwt) => {
            refuse(&secret_keys, "auth_method: private_key_jwt", &mut problem);
            if raw.client_assertion_file.is_some() {
                problem(
                    "client_assertion_file",
                    "belongs to auth_method: client_assertion_file; remove it".into(),
                );
            }
            let Some(private_key_file) = raw.private_key_file.clone() else {
                problem(
                    "private_key_file",
                    "is missing: auth_method: private_key_jwt needs a PKCS#8 PEM private key file"
                        .into(),
                );
                return Some(None);
            };
            let mut ok = true;
            let alg = match raw.alg.as_deref().map(str::parse::<Alg>) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    problem("alg", e.to_string());
                    ok = false;
                    None
                }
            };
            let key_id = match (&raw.kid, &raw.certificate_file) {
                (Some(_), Some(_)) => {
                    problem(
                        "kid",
                        "set kid or certificate_file (for x5t#S256), not both".into(),
                    );
                    ok = false;
                    KeyIdSource::None
                }
                (Some(k), None) if k.trim().is_empty() => {
                    problem("kid", "must not be empty".into());
                    ok = false;
                    KeyIdSource::None
                }
                (Some(k), None) => KeyIdSource::Kid(k.clone()),
                (None, Some(c)) => KeyIdSource::Certificate(c.clone()),
                (None, None) => KeyIdSource::None,
            };
            let audience = match raw.assertion_audience.as_deref() {
                None | Some("token_endpoint") => AssertionAudience::TokenEndpoint,
                // The document's issuer must equal the configured one exactly, so it is known now.
                Some("issuer") if issuer.is_some() => {
                    AssertionAudience::Literal(issuer.map(str::to_string).unwrap_or_default())
                }
                Some("issuer") => {
                    problem(
                        "assertion_audience",
                        "`issuer` needs issuer: (OIDC discovery) on this token, which is not set; use token_endpoint or the audience URL your server expects".into(),
                    );
                    ok = false;
                    AssertionAudience::TokenEndpoint
                }
                Some(a) => match Url::parse(a) {
                    Ok(_) => AssertionAudience::Literal(a.to_string()),
                    Err(e) => {
                        problem(
                            "assertion_audience",
                            format!("{a:?} is not token_endpoint, issuer or a URL: {e}"),
                        );
                        ok = false;
                        AssertionAudience::TokenEndpoint
                    }
                },
            };
            let lifetime = raw.assertion_lifetime.map_or(DEFAULT_LIFETIME, |d| d.0);
            if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(3600) {
                problem(
                    "assertion_lifetime",
                    "must be between 1s and 1h (servers reject long-lived assertions)".into(),
                );
                ok = false;
            }
            Some(ok.then_some(Keyed::Jwt {
                private_key_file,
                alg,
                key_id,
                audience,
                lifetime,
            }))
        }
        Some(RawAuthMethod::ClientAssertionFile) => {
            refuse(
                &secret_keys,
                "auth_method: client_assertion_file",
                &mut problem,
            );
            refuse(
                &jwt_keys,
                "auth_method: client_assertion_file",
                &mut problem,
            );
            let path = raw
                .client_assertion_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ASSERTION_FILE));
            Some(Some(Keyed::AssertionFile(path)))
        }
        // Named, not `_`: a new method must say here whether it is keyed.
        None
        | Some(
            RawAuthMethod::ClientSecretBasic
            | RawAuthMethod::ClientSecretBasicRaw
            | RawAuthMethod::ClientSecretPost
            | RawAuthMethod::None
            | RawAuthMethod::Auto,
        ) => {
            let why = "the secret-based auth_method";
            refuse(&jwt_keys, why, &mut problem);
            if raw.client_assertion_file.is_some() {
                problem(
                    "client_assertion_file",
                    format!("is not used by {why}; set auth_method: client_assertion_file"),
                );
            }
            None
        }
    }
}
