//! The admin HTTP server the kubelet and Prometheus talk to.
//!
//! - `GET /readyz`: 200 when every token's published token is `valid()` now, else 503; JSON per token, no token values.
//! - `GET /livez`: 200 while every refresher runs and keeps its schedule, else 503.
//! - `GET /metrics`: Prometheus text.
//! - `GET /status`: JSON per token: times, next refresh, failures, last error.
//! - anything else: 404 (405 for other methods).
//!
//! The port is reachable by anyone who can reach the pod, so what the server holds is bounded (`Limits`): a connection
//! cap with eviction of the stalest connection, a deadline for request heads, small heads, no request bodies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::state::State;

/// What the handlers read.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    pub(crate) state: Arc<State>,
    pub(crate) metrics: Arc<Metrics>,
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
    /// [`Admin::answer`] without connection counters: the tests' way in.
    #[cfg(test)]
    pub(crate) fn handle(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        self.answer(method, path, None)
    }

    /// Answers one request, with the admin server's connection counters for `/status`; no I/O, so it is tested
    /// without a socket.
    pub(crate) fn answer(
        &self,
        method: &Method,
        path: &str,
        conns: Option<ConnStats>,
    ) -> Response<Full<Bytes>> {
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
            "/status" => {
                let mut v = serde_json::json!({ "tokens": self.state.status() });
                if let Some(c) = conns {
                    v["admin"] = serde_json::json!(c);
                }
                json(StatusCode::OK, &v)
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /readyz, /livez, /metrics or /status\n",
            ),
        }
    }
}

/// What the admin server may hold. A kubelet probe or a Prometheus scrape needs one connection and a few hundred
/// bytes for a moment; everything else is somebody holding resources the sidecar needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    /// Open connections at most. At the cap a new connection takes the place of the one that has gone longest without
    /// starting a request, so a fresh probe is always admitted: whoever holds connections open loses the oldest.
    max_connections: usize,
    /// From accept, or from the previous response, to a complete request head. hyper runs this timer while it waits
    /// for the first byte too, so it is also the keep-alive idle timeout.
    header_timeout: Duration,
    /// Whole life of a connection, whatever it does (a client that sends requests and never reads the answers).
    max_lifetime: Duration,
    /// Request head: bytes (hyper's read buffer, whose floor is 8 KiB) and header lines.
    max_header_bytes: usize,
    max_headers: usize,
}

/// The cap when descriptors are plentiful. Each open connection costs about 10 KiB of the sidecar's memory (hyper's
/// 8 KiB read buffer, its task and connection state; measured in `tests/it/admin_flood.rs`), so 128 of them stay near
/// 1.3 MiB: under a tenth of the chart's 32 MiB limit beside an idle RSS of 4-5 MiB. Probes and scrapes need a handful.
const MAX_CONNECTIONS: usize = 128;

impl Limits {
    /// The limits for a process whose soft descriptor limit is `nofile`: the admin server never takes more than a
    /// quarter of the descriptors, so token requests always find sockets.
    fn for_nofile(nofile: u64) -> Limits {
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
        Limits {
            max_connections: quarter.clamp(4, MAX_CONNECTIONS),
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(60),
            max_header_bytes: 8 * 1024,
            max_headers: 32,
        }
    }
}

/// The admin server's open connections, with the eviction policy at the cap. No I/O: tested without a socket.
#[derive(Debug)]
struct Conns {
    inner: Mutex<ConnsInner>,
}

#[derive(Debug)]
struct ConnsInner {
    cap: usize,
    next_id: u64,
    open: BTreeMap<u64, Open>,
    accepted: u64,
    evicted: u64,
    peak: usize,
    /// When the at-cap warning was last logged: one line a minute, however hard the port is flooded.
    warned: Option<Instant>,
}

#[derive(Debug)]
struct Open {
    /// Accept time, or the start of the latest request: the oldest is evicted first.
    progress: Instant,
    /// Dropped to close the connection: its task selects on the receiver.
    _evict: oneshot::Sender<()>,
}

/// Counters shown in `/status` under `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct ConnStats {
    pub(crate) open: usize,
    max_connections: usize,
    peak: usize,
    accepted: u64,
    evicted: u64,
}

/// One admitted connection. Dropping it frees the place; `evicted` resolves when another connection took it.
#[derive(Debug)]
struct Slot {
    conns: Arc<Conns>,
    id: u64,
}

/// What `admit` did, for the accept loop to log.
#[derive(Debug, PartialEq, Eq)]
enum Admitted {
    Free,
    /// At the cap, the connection that had gone longest without a request was closed; `warn` at most once a minute.
    Evicted {
        warn: bool,
    },
}

const WARN_EVERY: Duration = Duration::from_secs(60);

impl Conns {
    pub(crate) fn new(cap: usize) -> Arc<Conns> {
        Arc::new(Conns {
            inner: Mutex::new(ConnsInner {
                cap: cap.max(1),
                next_id: 0,
                open: BTreeMap::new(),
                accepted: 0,
                evicted: 0,
                peak: 0,
                warned: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection at `now`, closing the stalest one first if the cap is reached.
    fn admit(self: &Arc<Self>, now: Instant) -> (Slot, oneshot::Receiver<()>, Admitted) {
        let mut c = self.lock();
        let mut admitted = Admitted::Free;
        if c.open.len() >= c.cap && c.evict_stalest() {
            let warn = c.warned.is_none_or(|w| now >= w + WARN_EVERY);
            if warn {
                c.warned = Some(now);
            }
            admitted = Admitted::Evicted { warn };
        }
        let id = c.next_id;
        c.next_id += 1;
        let (tx, rx) = oneshot::channel();
        c.open.insert(
            id,
            Open {
                progress: now,
                _evict: tx,
            },
        );
        c.accepted += 1;
        c.peak = c.peak.max(c.open.len());
        drop(c);
        (
            Slot {
                conns: self.clone(),
                id,
            },
            rx,
            admitted,
        )
    }

    /// Closes the connection that has gone longest without a request (to free a descriptor when accept fails).
    fn evict_stalest(&self) -> bool {
        self.lock().evict_stalest()
    }

    fn stats(&self) -> ConnStats {
        let c = self.lock();
        ConnStats {
            open: c.open.len(),
            max_connections: c.cap,
            peak: c.peak,
            accepted: c.accepted,
            evicted: c.evicted,
        }
    }
}

impl ConnsInner {
    fn evict_stalest(&mut self) -> bool {
        // Ties go to the lower id, the earlier accept. A linear scan: at most `cap` (128) entries, once per accept at the cap.
        let stalest = self
            .open
            .iter()
            .min_by_key(|(id, o)| (o.progress, **id))
            .map(|(id, _)| *id);
        match stalest.and_then(|id| self.open.remove(&id)) {
            Some(_) => {
                self.evicted += 1;
                true
            }
            None => false,
        }
    }
}

impl Slot {
    /// A request head arrived: this connection is in use, so it moves to the back of the eviction order.
    fn touch(&self, now: Instant) {
        if let Some(o) = self.conns.lock().open.get_mut(&self.id) {
            o.progress = now;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
    }
}

/// Accept errors that concern one queued connection (it was reset before we took it): take the next one at once, since
/// sleeping here would let whoever resets connections slow the accept loop down.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Accept-queue length asked for (the kernel clamps it to `net.core.somaxconn`, 4096 by default).
const ACCEPT_QUEUE: libc::c_int = 4096;

/// Lengthens the accept queue of a listening socket (tokio binds with 1024): when a flood's reconnects arrive in a
/// burst, a full queue drops the kubelet's SYN, which is retried only after a second, past the probe's timeout. Calling
/// `listen` again on a listening socket only changes its backlog.
fn deepen_accept_queue(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` on a descriptor the listener owns and keeps open for the duration of the call.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_QUEUE) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lengthen the admin accept queue");
    }
}

/// Serves until `shutdown` completes, with `Limits` sized by the process's descriptor limit.
pub(crate) async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    let nofile = crate::limits::nofile().map_or(1024, |n| n.soft);
    serve_with(listener, admin, Limits::for_nofile(nofile), shutdown).await
}

/// Serves until `shutdown` completes. Each connection is its own task, so a slow client or a hanging token request
/// never blocks a probe; `limits` bound what all of them together may hold.
async fn serve_with(
    listener: TcpListener,
    admin: Admin,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    deepen_accept_queue(&listener);
    let conns = Conns::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    let mut accept_errors = 0u64;
    let mut accept_warned: Option<Instant> = None;
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: free a descriptor and back off briefly rather
                    // than spin on a connection that stays queued.
                    accept_errors += 1;
                    let now = Instant::now();
                    if accept_warned.is_none_or(|w| now >= w + WARN_EVERY) {
                        accept_warned = Some(now);
                        tracing::warn!(error = %e, errors = accept_errors, "admin server could not accept a connection; closing the stalest and backing off");
                    }
                    conns.evict_stalest();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (slot, evicted, admitted) = conns.admit(Instant::now());
        if admitted == (Admitted::Evicted { warn: true }) {
            let s = conns.stats();
            tracing::warn!(
                max_connections = s.max_connections,
                evicted = s.evicted,
                "admin server at its connection cap; closing the connections that have gone longest without a request"
            );
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            admin.clone(),
            conns.clone(),
            slot,
            evicted,
            http.clone(),
            limits.max_lifetime,
        ));
        // Let the new connection read a request that is already there before the next accept: under a flood, a probe
        // is answered at once instead of waiting behind the whole queue.
        tokio::task::yield_now().await;
    }
}

async fn connection(
    stream: TcpStream,
    admin: Admin,
    conns: Arc<Conns>,
    slot: Slot,
    evicted: oneshot::Receiver<()>,
    http: hyper::server::conn::http1::Builder,
    max_lifetime: Duration,
) {
    let slot = Arc::new(slot);
    let svc = {
        let slot = slot.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            slot.touch(Instant::now());
            let mut resp = admin.answer(req.method(), req.uri().path(), Some(conns.stats()));
            if !req.body().is_end_stream() {
                // Only GET is served and a body is never read: close rather than drain it.
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            async move { Ok::<_, Infallible>(resp) }
        })
    };
    let conn = http.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = evicted => {}
        _ = tokio::time::sleep(max_lifetime) => {}
    }
    drop(slot);
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

    #[test]
    fn the_cap_follows_the_descriptor_limit() {
        assert_eq!(Limits::for_nofile(1 << 20).max_connections, MAX_CONNECTIONS);
        assert_eq!(Limits::for_nofile(1024).max_connections, MAX_CONNECTIONS);
        assert_eq!(Limits::for_nofile(256).max_connections, 64);
        assert_eq!(Limits::for_nofile(3).max_connections, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_stalest_connection_makes_room() {
        let conns = Conns::new(3);
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let (a, mut a_rx, r) = conns.admit(s(0));
        assert_eq!(r, Admitted::Free);
        let (b, mut b_rx, _) = conns.admit(s(1));
        let (_c, mut c_rx, _) = conns.admit(s(2));
        // `a` started a request after `b` was accepted: `b` is now the stalest.
        a.touch(s(3));
        let (_d, mut d_rx, r) = conns.admit(s(4));
        assert_eq!(r, Admitted::Evicted { warn: true });
        assert!(b_rx.try_recv().is_err(), "b is told to close");
        assert!(matches!(
            a_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(matches!(
            c_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        drop(b);
        // The next one goes: `c` (accepted at 2) before `a` (request at 3); a fresh connection is never the victim.
        let (_e, _e_rx, r) = conns.admit(s(5));
        assert_eq!(r, Admitted::Evicted { warn: false });
        assert!(c_rx.try_recv().is_err());
        assert!(matches!(
            d_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(
            conns.stats(),
            ConnStats {
                open: 3,
                max_connections: 3,
                peak: 3,
                accepted: 5,
                evicted: 2
            }
        );
        // A closed connection frees its place: no eviction.
        drop(a);
        assert_eq!(conns.stats().open, 2);
        let (_f, _f_rx, r) = conns.admit(s(6));
        assert_eq!(r, Admitted::Free);
        // The at-cap warning is logged once a minute.
        let (_g, _, r) = conns.admit(s(7));
        assert_eq!(r, Admitted::Evicted { warn: false });
        let (_h, _, r) = conns.admit(s(64));
        assert_eq!(r, Admitted::Evicted { warn: true });
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_admissions_never_holds_more_than_the_cap() {
        let conns = Conns::new(128);
        let mut held = Vec::new();
        let mut closed = 0;
        for i in 0..2_200u64 {
            held.push(conns.admit(Instant::now() + Duration::from_millis(i)));
            // Connections whose task would have closed them (the receiver resolved) go away, as the task drops its slot.
            held.retain_mut(|(_, rx, _)| {
                let gone = !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty));
                closed += usize::from(gone);
                !gone
            });
            assert!(held.len() <= 128);
        }
        let st = conns.stats();
        assert_eq!(
            (st.open, st.peak, st.accepted, st.evicted),
            (128, 128, 2_200, 2_072)
        );
        assert_eq!(closed, 2_072);
        // The survivors are the newest.
        let (slot, _, _) = held.last().unwrap();
        assert_eq!(slot.id, 2_199);
        assert_eq!(held.first().unwrap().0.id, 2_200 - 128);
    }

    #[test]
    fn evicting_from_an_empty_table_is_a_no_op() {
        let conns = Conns::new(2);
        assert!(!conns.evict_stalest());
        assert_eq!(conns.stats().evicted, 0);
    }

    #[test]
    fn only_resets_before_accept_skip_the_backoff() {
        use std::io::{Error, ErrorKind};
        assert!(is_per_connection(&Error::from(
            ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_per_connection(&Error::from_raw_os_error(libc::ENFILE)));
    }

    #[tokio::test]
    async fn status_shows_the_admin_counters() {
        let a = admin();
        let c = Conns::new(4);
        let (_s, _rx, _) = c.admit(Instant::now());
        let v: serde_json::Value =
            serde_json::from_str(&body(a.answer(&Method::GET, "/status", Some(c.stats()))).await)
                .unwrap();
        assert_eq!(v["admin"]["open"], 1);
        assert_eq!(v["admin"]["max_connections"], 4);
        assert_eq!(v["admin"]["accepted"], 1);
        let v: serde_json::Value =
            serde_json::from_str(&body(a.handle(&Method::GET, "/status")).await).unwrap();
        assert!(v.get("admin").is_none());
    }
}
