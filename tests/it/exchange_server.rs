//! An RFC 8693 token-exchange endpoint on 127.0.0.1 for the tests: it checks the subject token
//! (a JWT: unexpired, expected `aud`), its type and the optional parameters, issues access tokens
//! whose lifetime is capped by the subject token's `exp`, and records every request it saw.
//!
//! Real servers that take the same request (form-encoded POST, `grant_type` =
//! `urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token`, `subject_token_type`, optional
//! `requested_token_type`, `audience`, `resource`, `scope`; answer with `issued_token_type`):
//! - GCP STS, `https://sts.googleapis.com/v1/token`: no Authorization header (the API reference
//!   says sending one can make the request fail, hence `refuse_authorization_header`);
//!   `requested_token_type` must be `urn:ietf:params:oauth:token-type:access_token`, `audience` is
//!   the workload identity provider's full resource name
//!   (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`), and
//!   `scope` is required for an external credential such as a Kubernetes service-account token
//!   (`subject_token_type` `urn:ietf:params:oauth:token-type:jwt`).
//! - Keycloak's standard token exchange (v2, supported since 26.2): the same form at
//!   `<realm>/protocol/openid-connect/token` with client authentication (a confidential client),
//!   `audience` = the target client id. Its subject token must be a token that realm issued; an
//!   external one such as a service-account token needs Keycloak's legacy (preview) v1 exchange or
//!   its federated client authentication (26.4) instead.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use tokio::io::AsyncWriteExt;

use crate::helpers::{listen, read_request};

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What the server accepts. Change it at any time through `ExchangeServer::set_rules`.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The subject token's `aud` must be (or contain) this.
    pub subject_audience: String,
    /// Accepted `subject_token_type`s; anything else is 400 `invalid_request`.
    pub subject_token_types: Vec<String>,
    /// Accepted `requested_token_type`s when one is sent.
    pub requested_token_types: Vec<String>,
    /// When set, `audience` must equal it (GCP: the provider's resource name).
    pub audience: Option<String>,
    /// GCP STS's rule: a request with an Authorization header is 400 `invalid_request`.
    pub refuse_authorization_header: bool,
    /// `expires_in` of issued tokens, before the cap by the subject token's `exp`.
    pub ttl: u64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            subject_audience: "token-vendor-test".into(),
            subject_token_types: vec![TYPE_JWT.into(), TYPE_ID_TOKEN.into()],
            requested_token_types: vec![TYPE_ACCESS_TOKEN.into(), TYPE_JWT.into()],
            audience: None,
            refuse_authorization_header: false,
            ttl: 3600,
        }
    }
}

/// One request and how it was answered.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub form: BTreeMap<String, String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// The `error` code for a refusal, the issued token for a success.
    pub outcome: String,
}

struct Shared {
    rules: Mutex<Rules>,
    seen: Mutex<Vec<Exchange>>,
    serial: AtomicU64,
}

pub struct ExchangeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ExchangeServer {
    pub fn start(rules: Rules) -> ExchangeServer {
        let shared = Arc::new(Shared {
            rules: Mutex::new(rules),
            seen: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let l = listen("127.0.0.1:0".parse().unwrap(), move |stream| {
            serve(stream, sh.clone())
        });
        ExchangeServer {
            addr: l.addr,
            shared,
            stop: Some(l.stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn set_rules(&self, rules: Rules) {
        *self.shared.rules.lock().unwrap() = rules;
    }

    pub fn seen(&self) -> Vec<Exchange> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The access tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|e| e.status == 200)
            .map(|e| e.outcome)
            .collect()
    }
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsigned (`alg: none`) JWT with `aud`, `exp` and a unique `jti`, like a projected service-account token's claims.
pub fn subject_jwt(aud: &str, exp: u64) -> String {
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.",
        enc(serde_json::json!({"alg": "none", "typ": "JWT"})),
        enc(serde_json::json!({
            "iss": "https://kubernetes.default.svc",
            "sub": "system:serviceaccount:default:app",
            "aud": aud,
            "exp": exp,
            "iat": exp.saturating_sub(3600),
            "jti": format!("{:016x}", rand::random::<u64>()),
        }))
    )
}

/// Checks the subject token; `Err` is (OAuth error code, description).
fn check_subject(token: &str, rules: &Rules, now: u64) -> Result<u64, (&'static str, String)> {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or(("invalid_request", "subject_token is not a JWT".to_string()))?;
    let exp = claims["exp"]
        .as_u64()
        .ok_or(("invalid_grant", "subject_token has no exp".to_string()))?;
    if exp <= now {
        return Err((
            "invalid_grant",
            format!("subject_token expired {} s ago", now - exp),
        ));
    }
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => *a == rules.subject_audience,
        serde_json::Value::Array(a) => a.iter().any(|x| *x == *rules.subject_audience),
        _ => false,
    };
    if !aud_ok {
        return Err((
            "invalid_grant",
            format!("subject_token aud is not {}", rules.subject_audience),
        ));
    }
    Ok(exp)
}

/// The answer to one exchange request: (status, JSON body, issued token or error code).
fn answer(
    form: &BTreeMap<String, String>,
    authorization: bool,
    rules: &Rules,
    serial: u64,
    now: u64,
) -> (u16, serde_json::Value, String) {
    let refuse = |status: u16, error: &str, description: String| {
        (
            status,
            serde_json::json!({"error": error, "error_description": description}),
            error.to_string(),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TOKEN_EXCHANGE) {
        return refuse(
            400,
            "unsupported_grant_type",
            "only token exchange here".into(),
        );
    }
    if authorization && rules.refuse_authorization_header {
        return refuse(
            400,
            "invalid_request",
            "do not send an Authorization header".into(),
        );
    }
    let Some(subject) = form.get("subject_token").filter(|s| !s.is_empty()) else {
        return refuse(400, "invalid_request", "subject_token is required".into());
    };
    let Some(kind) = form.get("subject_token_type") else {
        return refuse(
            400,
            "invalid_request",
            "subject_token_type is required".into(),
        );
    };
    if !rules.subject_token_types.contains(kind) {
        return refuse(
            400,
            "invalid_request",
            format!("unsupported subject_token_type {kind}"),
        );
    }
    let requested = form
        .get("requested_token_type")
        .cloned()
        .unwrap_or_else(|| TYPE_ACCESS_TOKEN.to_string());
    if !rules.requested_token_types.contains(&requested) {
        return refuse(
            400,
            "invalid_request",
            format!("unsupported requested_token_type {requested}"),
        );
    }
    if let Some(want) = &rules.audience {
        if form.get("audience") != Some(want) {
            return refuse(400, "invalid_target", format!("audience must be {want}"));
        }
    }
    let subject_exp = match check_subject(subject, rules, now) {
        Ok(exp) => exp,
        Err((code, description)) => return refuse(400, code, description),
    };
    let token = format!("xchg-{serial}-{:016x}", rand::random::<u64>());
    let mut body = serde_json::json!({
        "access_token": token,
        "issued_token_type": requested,
        "token_type": "Bearer",
        "expires_in": rules.ttl.min(subject_exp - now),
    });
    if let Some(scope) = form.get("scope") {
        body["scope"] = scope.clone().into();
    }
    (200, body, token)
}

async fn serve(mut stream: tokio::net::TcpStream, sh: Arc<Shared>) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream, 64 * 1024, 1 << 20).await? else {
        return Ok(());
    };
    let body = &req.body[..req.body.len().min(req.content_length)];
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let headers = req.headers;
    let authorization = headers.get("authorization").cloned();
    let rules = sh.rules.lock().unwrap().clone();
    let serial = sh.serial.fetch_add(1, Ordering::SeqCst) + 1;
    let (status, json, outcome) =
        answer(&form, authorization.is_some(), &rules, serial, now_secs());
    sh.seen.lock().unwrap().push(Exchange {
        form,
        authorization,
        status,
        outcome,
    });
    let body = json.to_string();
    let resp = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Bad Request" },
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn exchange(server: &ExchangeServer, form: &[(&str, &str)], basic: bool) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(server.url()).form(form);
        if basic {
            req = req.basic_auth("client", Some("secret"));
        }
        let resp = req.send().await.expect("exchange request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn base(subject: &str) -> Vec<(&str, &str)> {
        vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", TYPE_JWT),
        ]
    }

    #[tokio::test]
    async fn exchange_server_issues_for_a_valid_subject_and_refuses_the_rest() {
        let server = ExchangeServer::start(Rules {
            ttl: 600,
            ..Rules::default()
        });
        let now = now_secs();
        let good = subject_jwt("token-vendor-test", now + 300);
        let good = good.as_str();

        // Accepted: the issued token's lifetime is capped by the subject token's exp.
        let mut form = base(good);
        form.extend([
            ("requested_token_type", TYPE_ACCESS_TOKEN),
            ("audience", "api"),
            ("resource", "https://api.example/"),
            ("scope", "read"),
        ]);
        let (status, body) = exchange(&server, &form, false).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issued_token_type"], TYPE_ACCESS_TOKEN);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "read");
        let expires_in = body["expires_in"].as_u64().unwrap();
        assert!((295..=300).contains(&expires_in), "{expires_in}");
        let seen = server.seen();
        assert_eq!(seen[0].form["resource"], "https://api.example/");
        assert_eq!(seen[0].form["subject_token"], good);
        assert_eq!(server.issued(), [body["access_token"].as_str().unwrap()]);

        let expired = subject_jwt("token-vendor-test", now - 5);
        let wrong_aud = subject_jwt("other", now + 300);
        let mut unknown_type = base(good);
        unknown_type[2].1 = "urn:example:saml";
        let mut bad_requested = base(good);
        bad_requested.push(("requested_token_type", "urn:example:nope"));
        let mut wrong_grant = base(good);
        wrong_grant[0].1 = "client_credentials";
        for (form, code) in [
            (base(&expired), "invalid_grant"),
            (base(&wrong_aud), "invalid_grant"),
            (base("not-a-jwt"), "invalid_request"),
            (unknown_type, "invalid_request"),
            (bad_requested, "invalid_request"),
            (wrong_grant, "unsupported_grant_type"),
            (base(good)[..2].to_vec(), "invalid_request"),
        ] {
            let (status, body) = exchange(&server, &form, false).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some(code)),
                "{form:?}: {body}"
            );
        }

        // GCP STS's rules: no Authorization header, the provider as audience.
        server.set_rules(Rules {
            refuse_authorization_header: true,
            audience: Some("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s".into()),
            ..Rules::default()
        });
        let mut gcp = base(good);
        gcp.push((
            "audience",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s",
        ));
        let (status, body) = exchange(&server, &gcp, true).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
        assert_eq!(exchange(&server, &gcp, false).await.0, 200);
        assert_eq!(
            exchange(&server, &base(good), false).await.1["error"],
            "invalid_target"
        );
        assert!(server.seen().iter().any(|e| e.authorization.is_some()));
    }
}
