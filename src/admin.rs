//! The admin HTTP server the kubelet and Prometheus talk to.
//!
//! - `GET /readyz`: 200 when every token's published token is `valid()` now, else 503; JSON per token, no token values.
//! - `GET /livez`: 200 while every refresher runs and keeps its schedule, else 503.
//! - `GET /metrics`: Prometheus text.
//! - `GET /status`: JSON per token: times, next refresh, failures, last error.
//! - anything else: 404 (405 for other methods).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::state::State;

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct Admin {
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn ok_or_503(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

impl Admin {
    /// Answers one request; no I/O, so it is tested without a socket.
    pub fn handle(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let known = matches!(path, "/readyz" | "/livez" | "/metrics" | "/status");
        if known && method != Method::GET && method != Method::HEAD {
            let mut r = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/readyz" => {
                let r = self.state.readiness();
                json(ok_or_503(r.ready), &r)
            }
            "/livez" => {
                let l = self.state.liveness();
                json(ok_or_503(l.live), &l)
            }
            "/metrics" => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(&self.state),
            ),
            "/status" => json(
                StatusCode::OK,
                &serde_json::json!({ "tokens": self.state.status() }),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /readyz, /livez, /metrics or /status\n",
            ),
        }
    }
}

/// Serves until `shutdown` completes. Each connection is its own task, so a slow client or a hanging token request never blocks a probe.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "admin server could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = admin.handle(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::state::Published;
    use http_body_util::BodyExt;
    use std::time::SystemTime;

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn admin() -> Admin {
        let state = State::new(Clock::virtual_at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        state.register("a", "https://idp/token".into());
        let metrics = Arc::new(Metrics::new());
        metrics.register_token("a");
        Admin { state, metrics }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_the_published_token() {
        let a = admin();
        let r = a.handle(&Method::GET, "/readyz");
        assert_eq!(r.status(), 503);
        assert!(body(r).await.contains("no token yet"));
        let now = a.state.clock().wall();
        a.state.update("a", |s| {
            s.published = Some(Published {
                issued_at: now,
                refresh_time: now + Duration::from_secs(10),
                expires_at: now + Duration::from_secs(11),
                valid_until: tokio::time::Instant::now() + Duration::from_secs(10),
            })
        });
        let r = a.handle(&Method::GET, "/readyz");
        assert_eq!(r.status(), 200);
        assert_eq!(
            body(r).await,
            "{\"ready\":true,\"tokens\":{\"a\":{\"ready\":true}}}\n"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(a.handle(&Method::GET, "/readyz").status(), 503);
        let m = body(a.handle(&Method::GET, "/metrics")).await;
        assert!(m.contains("token_vendor_token_valid{token=\"a\"} 0"), "{m}");
        assert!(
            m.contains("token_vendor_token_refresh_timestamp_seconds{token=\"a\"} 1800000010"),
            "{m}"
        );
        assert!(
            m.contains("token_vendor_refresh_total{token=\"a\",result=\"permanent_error\"} 0"),
            "{m}"
        );
        assert!(m.contains("token_vendor_build_info{version=\""), "{m}");
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_fails_when_a_refresher_stalls_or_dies() {
        let a = admin();
        assert_eq!(a.handle(&Method::GET, "/livez").status(), 200);
        tokio::time::advance(Duration::from_secs(61)).await;
        let r = a.handle(&Method::GET, "/livez");
        assert_eq!(r.status(), 503);
        assert!(body(r).await.contains("overdue"));
        a.state.register("a", "u".into());
        assert_eq!(a.handle(&Method::GET, "/livez").status(), 200);
        a.state.update("a", |s| s.alive = false);
        assert_eq!(a.handle(&Method::GET, "/livez").status(), 503);
    }

    #[tokio::test]
    async fn status_unknown_paths_and_methods() {
        let a = admin();
        let s = body(a.handle(&Method::GET, "/status")).await;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["tokens"][0]["name"], "a");
        assert_eq!(v["tokens"][0]["consecutive_failures"], 0);
        assert_eq!(a.handle(&Method::GET, "/nope").status(), 404);
        assert_eq!(a.handle(&Method::POST, "/readyz").status(), 405);
        assert_eq!(a.handle(&Method::HEAD, "/livez").status(), 200);
    }
}
