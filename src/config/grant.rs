//! Validation of a token's `grant` and its keys (`subject_token_file`, `subject_token_type`, `requested_token_type`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::raw::RawGrant;
use super::Problem;
use crate::token::Grant;

/// Where the chart mounts the projected service-account token.
const DEFAULT_SUBJECT_TOKEN_FILE: &str = "/var/run/secrets/token-vendor/token";
/// RFC 8693 §3: the subject token is a JWT (a Kubernetes service-account token is one).
const DEFAULT_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Form fields the token-exchange grant sets itself; `params` may not override them.
const EXCHANGE_FIELDS: &[&str] = &[
    "subject_token",
    "subject_token_type",
    "requested_token_type",
];

/// The grant keys of one token as written.
pub(crate) struct RawGrantKeys {
    pub(crate) grant: Option<RawGrant>,
    pub(crate) subject_token_file: Option<PathBuf>,
    pub(crate) subject_token_type: Option<String>,
    pub(crate) requested_token_type: Option<String>,
}

/// The grant, or its problems; `at` is the token's path (`tokens[0]`).
pub(crate) fn grant(
    raw: RawGrantKeys,
    params: &BTreeMap<String, String>,
    at: &str,
) -> Result<Grant, Vec<Problem>> {
    let mut problems = Vec::new();
    let grant = match raw.grant.unwrap_or(RawGrant::ClientCredentials) {
        RawGrant::ClientCredentials => {
            for (key, set) in [
                ("subject_token_file", raw.subject_token_file.is_some()),
                ("subject_token_type", raw.subject_token_type.is_some()),
                ("requested_token_type", raw.requested_token_type.is_some()),
            ] {
                if set {
                    problems.push(Problem {
                        path: format!("{at}.{key}"),
                        message: "applies only to grant: token_exchange".to_string(),
                    });
                }
            }
            Grant::ClientCredentials
        }
        RawGrant::TokenExchange => {
            let file = raw
                .subject_token_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SUBJECT_TOKEN_FILE));
            if file.as_os_str().is_empty() {
                problems.push(Problem {
                    path: format!("{at}.subject_token_file"),
                    message: "must not be empty".to_string(),
                });
            }
            let subject_type = raw
                .subject_token_type
                .unwrap_or_else(|| DEFAULT_SUBJECT_TOKEN_TYPE.to_string());
            for (key, value) in [
                ("subject_token_type", Some(&subject_type)),
                ("requested_token_type", raw.requested_token_type.as_ref()),
            ] {
                if let Some(v) = value {
                    if !is_uri(v) {
                        problems.push(Problem {
                            path: format!("{at}.{key}"),
                            message: format!("{v:?} is not a token type URI such as {DEFAULT_SUBJECT_TOKEN_TYPE}"),
                        });
                    }
                }
            }
            for k in params.keys() {
                if EXCHANGE_FIELDS.contains(&k.as_str()) {
                    problems.push(Problem {
                        path: format!("{at}.params.{k}"),
                        message: format!("`{k}` is set by token-vendor itself; use the dedicated key instead of params"),
                    });
                }
            }
            Grant::TokenExchange {
                subject_token_file: file,
                subject_token_type: subject_type,
                requested_token_type: raw.requested_token_type,
            }
        }
    };
    if problems.is_empty() {
        Ok(grant)
    } else {
        Err(problems)
    }
}

/// RFC 8693 §3 token types are absolute URIs (`urn:...`); a bare word is a typo.
fn is_uri(s: &str) -> bool {
    url::Url::parse(s).is_ok() && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(grant: Option<RawGrant>) -> RawGrantKeys {
        RawGrantKeys {
            grant,
            subject_token_file: None,
            subject_token_type: None,
            requested_token_type: None,
        }
    }

    #[test]
    fn token_exchange_defaults_to_the_projected_token_as_a_jwt() {
        let g = grant(keys(Some(RawGrant::TokenExchange)), &BTreeMap::new(), "t").unwrap();
        assert_eq!(
            g,
            Grant::TokenExchange {
                subject_token_file: PathBuf::from(DEFAULT_SUBJECT_TOKEN_FILE),
                subject_token_type: DEFAULT_SUBJECT_TOKEN_TYPE.into(),
                requested_token_type: None,
            }
        );
        assert_eq!(
            grant(keys(None), &BTreeMap::new(), "t").unwrap(),
            Grant::ClientCredentials
        );
    }

    #[test]
    fn exchange_keys_without_the_grant_and_bad_types_are_named() {
        let mut k = keys(None);
        k.subject_token_file = Some("/x".into());
        let e = grant(k, &BTreeMap::new(), "tokens[0]").unwrap_err();
        assert_eq!(e[0].path, "tokens[0].subject_token_file");
        let mut k = keys(Some(RawGrant::TokenExchange));
        k.requested_token_type = Some("access_token".into());
        let params = BTreeMap::from([("subject_token".to_string(), "x".to_string())]);
        let e = grant(k, &params, "tokens[0]").unwrap_err();
        let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tokens[0].requested_token_type",
                "tokens[0].params.subject_token"
            ]
        );
    }

    #[test]
    fn every_exchange_key_is_refused_with_client_credentials() {
        for g in [None, Some(RawGrant::ClientCredentials)] {
            let mut k = keys(g);
            k.subject_token_file = Some("/x".into());
            k.subject_token_type = Some(DEFAULT_SUBJECT_TOKEN_TYPE.into());
            k.requested_token_type = Some(DEFAULT_SUBJECT_TOKEN_TYPE.into());
            let e = grant(k, &BTreeMap::new(), "tokens[1]").unwrap_err();
            let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "tokens[1].subject_token_file",
                    "tokens[1].subject_token_type",
                    "tokens[1].requested_token_type"
                ]
            );
            assert!(e
                .iter()
                .all(|p| p.message.contains("grant: token_exchange")));
        }
    }

    #[test]
    fn params_may_not_override_what_the_exchange_sets_but_may_add_fields() {
        for field in [
            "subject_token",
            "subject_token_type",
            "requested_token_type",
        ] {
            let params = BTreeMap::from([(field.to_string(), "x".to_string())]);
            let e = grant(keys(Some(RawGrant::TokenExchange)), &params, "t").unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].path, format!("t.params.{field}"));
            assert!(e[0].message.contains("dedicated key"), "{e:?}");
        }
        // An actor token or a provider-specific field is the user's to add.
        let params = BTreeMap::from([
            ("actor_token_type".to_string(), "x".to_string()),
            ("options".to_string(), "{}".to_string()),
        ]);
        assert!(grant(keys(Some(RawGrant::TokenExchange)), &params, "t").is_ok());
        // Without token exchange those names mean nothing to token-vendor and are passed through.
        let params = BTreeMap::from([("subject_token".to_string(), "x".to_string())]);
        assert_eq!(
            grant(keys(None), &params, "t").unwrap(),
            Grant::ClientCredentials
        );
    }

    #[test]
    fn an_empty_file_and_types_that_are_not_uris_are_refused() {
        let mut k = keys(Some(RawGrant::TokenExchange));
        k.subject_token_file = Some(PathBuf::new());
        k.subject_token_type = Some("jwt".into());
        k.requested_token_type = Some("urn:ietf:params:oauth:token-type:access token".into());
        let e = grant(k, &BTreeMap::new(), "t").unwrap_err();
        let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "t.subject_token_file",
                "t.subject_token_type",
                "t.requested_token_type"
            ]
        );
        let mut k = keys(Some(RawGrant::TokenExchange));
        k.subject_token_file = Some("/run/sa/token".into());
        k.subject_token_type = Some("urn:ietf:params:oauth:token-type:id_token".into());
        k.requested_token_type = Some("urn:ietf:params:oauth:token-type:access_token".into());
        assert_eq!(
            grant(k, &BTreeMap::new(), "t").unwrap(),
            Grant::TokenExchange {
                subject_token_file: "/run/sa/token".into(),
                subject_token_type: "urn:ietf:params:oauth:token-type:id_token".into(),
                requested_token_type: Some("urn:ietf:params:oauth:token-type:access_token".into()),
            }
        );
    }
}
