//! The config file exactly as YAML has it: serde structs with no checks beyond types, turned into domain types by `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Format;

/// `auth_method` as written (the names are the YAML values, hence the shared prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    description = "How the client authenticates: client_secret_basic (default), client_secret_basic_raw, client_secret_post, private_key_jwt, client_assertion_file, none (a public client), or auto (with issuer: chosen from the discovery document)."
)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum RawAuthMethod {
    ClientSecretBasic,
    ClientSecretBasicRaw,
    ClientSecretPost,
    PrivateKeyJwt,
    ClientAssertionFile,
    /// A public client: no credential (token exchange).
    None,
    /// With `issuer`: the best method the discovered document and the configured credentials have in common.
    Auto,
}

/// `grant` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(description = "client_credentials (default) or token_exchange (RFC 8693).")]
pub(crate) enum RawGrant {
    ClientCredentials,
    TokenExchange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<RawLogFormat>,
    pub(crate) level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogFormat {
    Json,
    Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRefresh {
    pub(crate) window: Option<[f64; 2]>,
    pub(crate) min_backoff: Option<HumanDuration>,
    pub(crate) max_backoff: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReload {
    pub(crate) poll_interval: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawOnExit {
    Keep,
    Remove,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    pub(crate) name: String,
    pub(crate) base_url: Option<String>,
    pub(crate) token_url: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_id_file: Option<PathBuf>,
    pub(crate) client_id_env: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) client_secret_env: Option<String>,
    pub(crate) auth_method: Option<RawAuthMethod>,
    pub(crate) scope: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) resource: Option<OneOrMany>,
    pub(crate) params: Option<BTreeMap<String, String>>,
    pub(crate) default_lifetime: Option<HumanDuration>,
    pub(crate) http: Option<RawHttp>,
    /// Declared for `deny_unknown_fields` and the schema; validation reads each output on its own and leaves this empty.
    #[allow(dead_code)]
    pub(crate) outputs: Vec<RawOutput>,
    pub(crate) private_key_file: Option<PathBuf>,
    pub(crate) alg: Option<String>,
    pub(crate) kid: Option<String>,
    pub(crate) certificate_file: Option<PathBuf>,
    pub(crate) assertion_audience: Option<String>,
    pub(crate) assertion_lifetime: Option<HumanDuration>,
    pub(crate) client_assertion_file: Option<PathBuf>,
    pub(crate) grant: Option<RawGrant>,
    pub(crate) subject_token_file: Option<PathBuf>,
    pub(crate) subject_token_type: Option<String>,
    pub(crate) requested_token_type: Option<String>,
    /// Read into [`RawNotify`] on its own, so that a bad key inside is not also reported as a missing hook.
    #[schemars(
        with = "Option<RawNotify>",
        description = "Tell the app after each new token: http or signal, one of them."
    )]
    pub(crate) notify: Option<serde_yaml_ng::Value>,
}

/// `notify`: how the app is told that its token changed (checked in `config::notify`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(description = "Tell the app after each new token: http or signal, one of them.")]
pub(crate) struct RawNotify {
    pub(crate) http: Option<RawNotifyHttp>,
    pub(crate) signal: Option<RawNotifySignal>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifyHttp {
    pub(crate) url: String,
    pub(crate) timeout: Option<HumanDuration>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifySignal {
    pub(crate) pid_file: PathBuf,
    pub(crate) signal: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) timeout: Option<HumanDuration>,
    pub(crate) connect_timeout: Option<HumanDuration>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert_file: Option<PathBuf>,
    pub(crate) client_key_file: Option<PathBuf>,
    pub(crate) allow_insecure_http: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutput {
    pub(crate) path: PathBuf,
    pub(crate) format: Option<Format>,
    pub(crate) mode: Option<RawMode>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

/// A file mode written as an octal string; a bare YAML number is refused because `0640` and `640` read differently.
pub(crate) struct RawMode(pub(crate) String);

impl<'de> Deserialize<'de> for RawMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMode, E> {
                Ok(RawMode(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawMode, E> {
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0640\", not the number {v}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawMode, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written in humantime form (`90s`, `10m`, `1h 30m`).
#[derive(Clone, Copy)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or \"10m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {v:?}: {e}; write it like \"90s\" or \"10m\""
                        ))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" instead of {v}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration cannot be the number {v}; write it like \"90s\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration cannot be the number {v}; write it like \"1500ms\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}
