//! Issue 10 §4, OIDC discovery through the real binary: oidc-provider's own document with `auth_method: auto`, a
//! path issuer found only at RFC 8414's inserted form, issuer mismatches, an identity provider down at start, and a
//! restart that finds the token endpoint in the sealed state while discovery is down.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth_blocks::keypair;
use crate::helpers::*;

/// A metadata server: fixed answers by path, 404 for the rest, and every path asked for.
pub(crate) struct DocServer {
    pub(crate) addr: SocketAddr,
    routes: Arc<Mutex<BTreeMap<String, (u16, String)>>>,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DocServer {
    /// Listens on `addr` (port 0 for any).
    pub(crate) fn start(addr: SocketAddr) -> DocServer {
        let listener = TcpListener::bind(addr).expect("bind the metadata server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<BTreeMap<String, (u16, String)>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (routes.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve_doc(stream, &r, &h),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        DocServer {
            addr,
            routes,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn route(&self, path: &str, status: u16, body: &str) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, body.to_string()));
    }

    pub(crate) fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    /// Stops listening: connections are refused from now on.
    pub(crate) fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve_doc(
    mut stream: TcpStream,
    routes: &Mutex<BTreeMap<String, (u16, String)>>,
    hits: &Mutex<Vec<String>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("").to_string();
    hits.lock().unwrap().push(path.clone());
    let (status, body) = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or((404, "{\"error\":\"not found\"}".into()));
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

pub(crate) fn doc(issuer: &str, token_endpoint: &str, methods: &[&str]) -> String {
    json!({
        "issuer": issuer,
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": methods,
        "grant_types_supported": ["client_credentials"],
    })
    .to_string()
}

/// A `run`/`once` config with `issuer` and the secret `s3cr3t-discovery`; `extra` goes into the token.
fn config(sb: &Sandbox, issuer: &str, extra: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: info, format: json}}\nstate_dir: {d}/state\nrefresh: {{min_backoff: 200ms, max_backoff: 1s}}\ntokens:\n  - name: t\n    issuer: {issuer}\n    client_id: the-client\n    client_secret: s3cr3t-discovery\n{extra}    outputs:\n      - {{path: {d}/out/token}}\n"
        ),
    )
}

fn status(p: &mut Proc) -> Value {
    serde_json::from_str(&p.get("/status").1).unwrap_or(Value::Null)
}

#[test]
fn auto_gets_a_token_from_oidc_providers_own_discovery_document() {
    let sb = Sandbox::new();
    let (p256, p256_pub) = keypair("ec", "P-256");
    let idp = OidcServer::launch(
        sb.dir.path(),
        json!({"port": 0, "ttl": 300, "strict_auth": true, "clients": [
            {"client_id": "basic", "client_secret": "s3cr3t-discovery", "auth": "client_secret_basic"},
            {"client_id": "jwt", "auth": "private_key_jwt", "signing_alg": "ES256", "public_key_pem": p256_pub},
        ]}),
    );
    let issuer = idp
        .url
        .strip_suffix("/token")
        .expect("READY …/token")
        .to_string();
    sb.write("jwt.pem", &p256);
    let d = sb.dir.path().display();
    for (name, creds) in [
        ("basic", "    client_id: basic\n    client_secret: s3cr3t-discovery\n".to_string()),
        (
            "jwt",
            format!("    client_id: jwt\n    private_key_file: {d}/jwt.pem\n    assertion_audience: issuer\n"),
        ),
    ] {
        let cfg = sb.write(
            &format!("{name}.yaml"),
            &format!(
                "log: {{format: json}}\ntokens:\n  - name: t\n    issuer: {issuer}\n    auth_method: auto\n{creds}    outputs:\n      - {{path: {d}/out/{name}}}\n"
            ),
        );
        let (st, out, err) = run_once(&cfg, "20s");
        assert!(st.success(), "{name}: {out}\n{err}");
        assert!(sb.read(&format!("out/{name}")).is_some_and(|t| !t.is_empty()), "{name}");
        let found = err.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| {
            l["message"] == "discovered the token endpoint"
        });
        let found = found.unwrap_or_else(|| panic!("{name}: no discovery line\n{err}"));
        assert_eq!(found["token_endpoint"], format!("{issuer}/token"), "{found}");
        let method = if name == "basic" { "client_secret_basic" } else { "private_key_jwt" };
        assert_eq!(found["auth_method"], method, "{found}");
        assert!(!err.contains("s3cr3t-discovery") && !out.contains("s3cr3t-discovery"));
    }
}

#[test]
fn a_path_issuer_is_found_at_the_rfc8414_form_and_auto_uses_post_when_only_post_is_listed() {
    let sb = Sandbox::new();
    let tokens = TokenServer::start(Behavior::issue(300));
    let idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let issuer = format!("{}/realms/x", idp.base());
    idp.route(
        "/.well-known/oauth-authorization-server/realms/x",
        200,
        &doc(&issuer, &tokens.url(), &["client_secret_post"]),
    );
    let cfg = config(&sb, &issuer, "    auth_method: auto\n");
    let (st, out, err) = run_once(&cfg, "20s");
    assert!(st.success(), "{out}\n{err}");
    assert_eq!(
        idp.hits(),
        [
            "/realms/x/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server/realms/x"
        ]
    );
    let seen = tokens.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].form.get("client_secret"),
        Some(&vec!["s3cr3t-discovery".to_string()])
    );
    assert!(!seen[0].headers.contains_key("authorization"), "{seen:?}");
    assert_eq!(sb.read("out/token"), tokens.issued().first().cloned());
}

#[test]
fn an_issuer_mismatch_or_a_document_without_token_endpoint_is_permanent() {
    let sb = Sandbox::new();
    let tokens = TokenServer::start(Behavior::issue(300));
    let idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let base = idp.base();
    let wk = "/.well-known/openid-configuration";
    for (served_issuer, body_issuer, want) in [
        // The trailing slash differs: no "normalising" it away.
        (base.clone(), format!("{base}/"), "not the configured"),
        (
            base.clone(),
            "https://other.example".to_string(),
            "not the configured",
        ),
    ] {
        idp.route(
            wk,
            200,
            &doc(&body_issuer, &tokens.url(), &["client_secret_basic"]),
        );
        let cfg = config(&sb, &served_issuer, "");
        let (st, out, err) = run_once(&cfg, "20s");
        assert_eq!(st.code(), Some(1), "{out}\n{err}");
        assert!(
            out.contains("FAILED after 1 attempt(s)") || err.contains("FAILED after 1 attempt(s)"),
            "{out}\n{err}"
        );
        for needle in [
            want,
            &format!("{served_issuer:?}"),
            &format!("{body_issuer:?}"),
            "discovery_invalid",
        ] {
            assert!(
                err.contains(needle) || out.contains(needle),
                "{needle}: {out}\n{err}"
            );
        }
    }
    idp.route(wk, 200, &json!({"issuer": base}).to_string());
    let (st, out, err) = run_once(&config(&sb, &base, ""), "20s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("no `token_endpoint`") || out.contains("no `token_endpoint`"),
        "{out}\n{err}"
    );
    assert!(tokens.seen().is_empty(), "a token request was made");

    // The daemon stays alive and unready, says why in /status, and counts it.
    idp.route(wk, 200, &doc(&format!("{base}/"), &tokens.url(), &[]));
    let mut p = Proc::run(&config(&sb, &base, ""));
    wait_until(Duration::from_secs(10), "the mismatch in /status", || {
        status(&mut p)["tokens"][0]["last_error"]["kind"] == "discovery_invalid"
    });
    assert_eq!(p.get("/livez").0, 200, "{}", p.describe());
    assert_eq!(p.get("/readyz").0, 503);
    assert!(
        p.get("/metrics")
            .1
            .contains("kind=\"discovery_invalid\"} 1"),
        "{}",
        p.get("/metrics").1
    );
}

#[test]
fn an_identity_provider_down_at_start_is_retried_until_it_is_up_without_a_restart() {
    let sb = Sandbox::new();
    let tokens = TokenServer::start(Behavior::issue(300));
    // A port nothing listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let cfg = config(&sb, &issuer, "    auth_method: auto\n");

    // `once` gives up after its bounded attempts with exit 1, naming discovery.
    let (st, out, err) = run_once(&cfg, "2s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("discovery") || out.contains("discovery"),
        "{out}\n{err}"
    );

    let mut p = Proc::run(&cfg);
    let pid = p.pid();
    wait_until(
        Duration::from_secs(15),
        "retried discovery failures",
        || {
            let s = status(&mut p);
            s["tokens"][0]["last_error"]["kind"] == "discovery"
                && s["tokens"][0]["consecutive_failures"].as_u64().unwrap_or(0) >= 3
        },
    );
    assert_eq!(p.get("/livez").0, 200, "{}", p.describe());
    assert_eq!(p.get("/readyz").0, 503);
    // The issuer until the endpoint is known.
    assert_eq!(
        status(&mut p)["tokens"][0]["token_url"],
        format!("{issuer}/")
    );
    let metrics = p.get("/metrics").1;
    assert!(
        metrics.contains("token_vendor_refresh_errors_total{token=\"t\",kind=\"discovery\"}"),
        "{metrics}"
    );
    assert!(
        p.logs().contains("token refresh failed; retrying"),
        "{}",
        p.describe()
    );

    let idp = DocServer::start(format!("127.0.0.1:{port}").parse().unwrap());
    idp.route(
        "/.well-known/openid-configuration",
        200,
        &doc(
            &issuer,
            &tokens.url(),
            &["client_secret_basic", "client_secret_post"],
        ),
    );
    wait_until(
        Duration::from_secs(15),
        "a token once the IdP is up",
        || p.ready(),
    );
    assert_eq!(p.pid(), pid);
    assert_eq!(status(&mut p)["tokens"][0]["token_url"], tokens.url());
    assert!(p.child.try_wait().unwrap().is_none(), "the process exited");
    assert_eq!(sb.read("out/token"), tokens.issued().last().cloned());
    assert!(!p.logs().contains("s3cr3t-discovery"));
}

#[test]
fn a_restart_while_discovery_is_down_uses_the_document_saved_in_the_state() {
    let sb = Sandbox::new();
    let tokens = TokenServer::start(Behavior::issue(300));
    let mut idp = DocServer::start("127.0.0.1:0".parse().unwrap());
    let issuer = idp.base();
    idp.route(
        "/.well-known/openid-configuration",
        200,
        &doc(&issuer, &tokens.url(), &["client_secret_basic"]),
    );
    let cfg = config(&sb, &issuer, "    auth_method: auto\n");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(15), "first token", || p.ready());
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(5)).unwrap();
    let saved = sb
        .read("state/t.discovery.tv-state")
        .expect("the document was saved");
    assert!(saved.starts_with("token-vendor-discovery-v1 "), "{saved}");

    // The IdP's discovery goes down, and the saved token is gone: a new token must be requested.
    idp.down();
    std::fs::remove_file(sb.path("state/t.tv-state")).unwrap();
    let before = tokens.seen().len();
    let mut p = Proc::run(&cfg);
    wait_until(
        Duration::from_secs(15),
        "a token from the saved endpoint",
        || p.ready(),
    );
    assert_eq!(tokens.seen().len(), before + 1);
    assert_eq!(status(&mut p)["tokens"][0]["token_url"], tokens.url());
    assert!(
        p.logs()
            .contains("using the discovery document saved by the previous run"),
        "{}",
        p.describe()
    );
    assert!(
        !p.logs().contains("\"kind\":\"discovery\""),
        "{}",
        p.describe()
    );
}
