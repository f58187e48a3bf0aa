//! DEVELOPMENT AID ONLY: a tiny built-in RFC 6749 token endpoint on 127.0.0.1 for `token-vendor demo` (`run` and `once` never start it), the config the demo runs, and the clearing of an earlier demo's saved token.

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

use crate::config::Config;
use crate::refresh::sink::{discovery_file_for, state_file_for};
use crate::token::auth::basic_auth;

const DEMO_CLIENT_ID: &str = "demo-client";
const DEMO_CLIENT_SECRET: &str = "demo-secret";

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

/// The file in `--dir` a running demo holds locked (`flock`), so a second demo cannot write into the same directory.
pub const LOCK_FILE: &str = ".demo.lock";

/// Locks `lock` (created if missing) for as long as the returned file is open; `None` when another process holds it.
pub fn lock_dir(lock: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)?;
    // SAFETY: flock on a descriptor this function owns; it neither reads nor writes memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    match std::io::Error::last_os_error() {
        e if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        e => Err(e),
    }
}

/// Removes the warm-start state an earlier demo left next to its outputs, saying so in one info line.
///
/// That state is bound (by its MAC) to the settings it was requested with, the token endpoint among them, and the
/// demo's endpoint is on a new random port every run: warm start would refuse it with the warning meant for a file
/// someone else planted. The endpoint that issued it is gone, so there is nothing to adopt. `run` never does this.
pub fn discard_previous_state(config: &Config) {
    if config.state_dir.is_some() {
        return;
    }
    for t in &config.tokens {
        let Some(first) = t.outputs.first() else {
            continue;
        };
        let state = state_file_for(&first.path);
        let discarded = [discovery_file_for(&state), state]
            .iter()
            .filter(|f| std::fs::remove_file(f).is_ok())
            .count();
        if discarded > 0 {
            tracing::info!(token = %t.name, "demo: discarded the previous demo's saved token (its endpoint is gone); requesting a new one");
        }
    }
}

/// The config `demo` runs, written as a commented starting point: every line a real deployment must change says so.
pub fn config_yaml(dir: &Path, endpoint: SocketAddr, listen: SocketAddr) -> String {
    // Absolute, so the file means the same whatever directory it is later run or copied from.
    let d = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        r#"# Written by `token-vendor demo`. This is the config the demo runs, and a starting point for your own:
# copy it and change every line marked CHANGE, then `token-vendor check --config FILE` before `run`.
# Full reference: docs/configuration.md.

# CHANGE: the admin server (/readyz /livez /metrics /status). In a pod: "[::]:8099". The demo uses {listen},
# so a second copy run beside the demo needs another port.
listen: {listen_q}
log: {{format: text, level: info}}   # CHANGE: drop this line in a pod (JSON logs when stderr is not a terminal)
tokens:
  - name: demo                        # CHANGE: a name for this token: [a-z0-9-], used in /status and metrics
    # CHANGE: your identity provider's token endpoint (https). This is the demo's DEVELOPMENT endpoint on a
    # random port; it exists only while `token-vendor demo` runs.
    token_url: http://{endpoint}/token
    client_id: {id}                   # CHANGE: your client id (or client_id_file: PATH)
    # CHANGE: never inline a real secret: use client_secret_file: /var/run/secrets/idp/client_secret
    # (a mounted Kubernetes Secret, looked at for every request) or client_secret_env: NAME.
    client_secret: {secret}
    scope: demo                       # CHANGE: the scopes your API needs, or remove
    outputs:                          # CHANGE: paths on the volume your app reads; keep the formats you need
      - {{path: {raw}, format: raw}}
      - {{path: {header}, format: header}}
      - {{path: {json}, format: json}}
      - {{path: {env}, format: env}}
"#,
        listen_q = q(&listen.to_string()),
        id = DEMO_CLIENT_ID,
        secret = DEMO_CLIENT_SECRET,
        raw = q(&format!("{d}/token")),
        header = q(&format!("{d}/token.header")),
        json = q(&format!("{d}/token.json")),
        env = q(&format!("{d}/token.env")),
    )
}
