//! DEVELOPMENT AID ONLY: a tiny built-in RFC 6749 token endpoint on 127.0.0.1 for `token-vendor demo`; `run` and `once` never start it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpListener;

use crate::token::auth::basic_auth;

pub const DEMO_CLIENT_ID: &str = "demo-client";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    h.insert("cache-control", "no-store".parse().expect("static header"));
    h.insert(
        "x-token-vendor-demo",
        "development-only".parse().expect("static header"),
    );
    r
}

fn answer(req: &Request<Incoming>, lifetime: Duration) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/token" {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    let expected = basic_auth(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, false);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(expected.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
                .into(),
        );
    }
    let token: String = format!("demo.{:032x}", rand::rng().random::<u128>());
    reply(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{},"scope":"demo"}}"#,
            lifetime.as_secs()
        ),
    )
}

/// Starts the demo endpoint on a random loopback port; it lives as long as the runtime.
pub async fn start_endpoint(lifetime: Duration) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = answer(&req, lifetime);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The embedded default config of `demo` as YAML: one token, every output format, in `dir`.
pub fn config_yaml(dir: &Path, endpoint: SocketAddr, listen: SocketAddr) -> String {
    let d = dir.display().to_string();
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        r#"# Written by `token-vendor demo`: the built-in DEVELOPMENT endpoint and every output format.
listen: {listen}
log: {{format: text, level: info}}
tokens:
  - name: demo
    token_url: http://{endpoint}/token
    client_id: {id}
    client_secret: {secret}
    scope: demo
    outputs:
      - {{path: {raw}, format: raw}}
      - {{path: {header}, format: header}}
      - {{path: {json}, format: json}}
      - {{path: {env}, format: env}}
"#,
        listen = q(&listen.to_string()),
        id = DEMO_CLIENT_ID,
        secret = DEMO_CLIENT_SECRET,
        raw = q(&format!("{d}/token")),
        header = q(&format!("{d}/token.header")),
        json = q(&format!("{d}/token.json")),
        env = q(&format!("{d}/token.env")),
    )
}
