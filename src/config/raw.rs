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
pub enum RawAuthMethod {
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
pub enum RawGrant {
    ClientCredentials,
    TokenExchange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<RawLogFormat>,
    pub level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Json,
    Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    pub window: Option<[f64; 2]>,
    pub min_backoff: Option<HumanDuration>,
    pub max_backoff: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub poll_interval: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawOnExit {
    Keep,
    Remove,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: String,
    pub base_url: Option<String>,
    pub token_url: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_id_file: Option<PathBuf>,
    pub client_id_env: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub auth_method: Option<RawAuthMethod>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<OneOrMany>,
    pub params: Option<BTreeMap<String, String>>,
    pub default_lifetime: Option<HumanDuration>,
    pub http: Option<RawHttp>,
    pub outputs: Vec<RawOutput>,
    pub private_key_file: Option<PathBuf>,
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub certificate_file: Option<PathBuf>,
    pub assertion_audience: Option<String>,
    pub assertion_lifetime: Option<HumanDuration>,
    pub client_assertion_file: Option<PathBuf>,
    pub grant: Option<RawGrant>,
    pub subject_token_file: Option<PathBuf>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    /// Read into [`RawNotify`] on its own, so that a bad key inside is not also reported as a missing hook.
    #[schemars(
        with = "Option<RawNotify>",
        description = "Tell the app after each new token: http or signal, one of them."
    )]
    pub notify: Option<serde_yaml_ng::Value>,
}

/// `notify`: how the app is told that its token changed (checked in `config::notify`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(description = "Tell the app after each new token: http or signal, one of them.")]
pub struct RawNotify {
    pub http: Option<RawNotifyHttp>,
    pub signal: Option<RawNotifySignal>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifyHttp {
    pub url: String,
    pub timeout: Option<HumanDuration>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifySignal {
    pub pid_file: PathBuf,
    pub signal: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub timeout: Option<HumanDuration>,
    pub connect_timeout: Option<HumanDuration>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub allow_insecure_http: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub path: PathBuf,
    pub format: Option<Format>,
    pub mode: Option<RawMode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A file mode written as an octal string; a bare YAML number is refused because `0640` and `640` read differently.
pub struct RawMode(pub String);

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
pub struct HumanDuration(pub Duration);

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
