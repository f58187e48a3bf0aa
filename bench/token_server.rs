//! The benchmarks' minimal token endpoint: `POST /token` answers every client-credentials request with a fresh
//! opaque Bearer token (no credential check), `GET /stats` counts the tokens issued. Built as a cargo example:
//!
//! ```text
//! cargo build --release --example bench_token_server
//! target/release/examples/bench_token_server [--port 0] [--expires-in 3600] [--delay-ms 0]
//! # prints READY http://127.0.0.1:<port>/token; --delay-ms answers each token request that much later (a slow IdP)
//! ```
//!
//! `--expires-in` may be fractional (short lifetimes for the CPU-per-refresh figure). One thread; tens of
//! thousands of requests per second, so it never limits what is measured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

struct Server {
    expires_in: f64,
    delay: std::time::Duration,
    issued: AtomicU64,
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response")
}

async fn handle(s: Arc<Server>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/token") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::BAD_REQUEST, "{}".into()),
            };
            if !body
                .split(|&b| b == b'&')
                .any(|kv| kv == b"grant_type=client_credentials")
            {
                return reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"unsupported_grant_type"}"#.into(),
                );
            }
            if !s.delay.is_zero() {
                tokio::time::sleep(s.delay).await;
            }
            let n = s.issued.fetch_add(1, Ordering::Relaxed) + 1;
            reply(
                StatusCode::OK,
                format!(
                    r#"{{"access_token":"bench-token-{n:012}-0123456789abcdef0123456789abcdef","token_type":"Bearer","expires_in":{}}}"#,
                    s.expires_in
                ),
            )
        }
        (&Method::GET, "/stats") => reply(
            StatusCode::OK,
            format!(r#"{{"issued":{}}}"#, s.issued.load(Ordering::Relaxed)),
        ),
        _ => reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into()),
    }
}

fn main() {
    let mut port = 0u16;
    let mut expires_in = 3600.0f64;
    let mut delay_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--port" => port = v.parse().expect("--port N"),
            "--expires-in" => expires_in = v.parse().expect("--expires-in SECONDS"),
            "--delay-ms" => delay_ms = v.parse().expect("--delay-ms MS"),
            _ => {
                eprintln!(
                    "usage: bench_token_server [--port N] [--expires-in SECONDS] [--delay-ms MS]"
                );
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        println!("READY http://{addr}/token");
        let server = Arc::new(Server {
            expires_in,
            delay: std::time::Duration::from_millis(delay_ms),
            issued: AtomicU64::new(0),
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = server.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(handle(s, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
