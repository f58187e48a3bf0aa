//! Scenario 12: TLS. A local HTTPS front (tokio-rustls, certificates made by rcgen in the test) before the scripted
//! token server: a self-signed CA is refused without `ca_file` and accepted with it; with mTLS the configured client
//! certificate is presented, and without one the handshake fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::common::*;
use super::report::Row;
use crate::helpers::*;

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all made now.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    client_pem: String,
    client_key_pem: String,
    client_der: CertificateDer<'static>,
}

pub(crate) fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "token-vendor reliability test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "localhost");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "token-vendor reliability client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_der: server_cert.der().clone(),
        server_key_der: server_key.serialize_der(),
        client_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
        client_der: client_cert.der().clone(),
    }
}

/// What one TLS connection to the front did: the client certificate it presented, or why the handshake failed.
type Handshake = Result<Option<CertificateDer<'static>>, String>;

/// The server side of the front: `server`'s certificate, and client certificates required from `client_ca`'s CA.
fn acceptor(server: &Pki, client_ca: Option<&Pki>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![server.server_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.server_key_der.clone())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// An HTTPS front that terminates TLS and forwards the bytes to a plain-HTTP backend.
pub(crate) struct TlsFront {
    pub(crate) addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// What the next handshake is served with: swapped by [`TlsFront::serve`] to rotate the server's side.
    acceptor: Arc<Mutex<TlsAcceptor>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsFront {
    pub(crate) fn start(backend: SocketAddr, pki: &Pki, require_client_cert: bool) -> TlsFront {
        let acceptor = Arc::new(Mutex::new(acceptor(
            pki,
            require_client_cert.then_some(pki),
        )));
        let current = acceptor.clone();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let hs = handshakes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let stream = tokio::select! {
                        _ = &mut stop_rx => break,
                        acc = listener.accept() => match acc { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let (acceptor, hs) = (current.lock().unwrap().clone(), hs.clone());
                    tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(mut tls) => {
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first().cloned());
                                hs.lock().unwrap().push(Ok(cert));
                                if let Ok(mut back) = tokio::net::TcpStream::connect(backend).await {
                                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                                }
                            }
                            Err(e) => hs.lock().unwrap().push(Err(e.to_string())),
                        }
                    });
                }
            });
        });
        TlsFront {
            addr: rx.recv().unwrap(),
            handshakes,
            acceptor,
            stop: Some(stop),
        }
    }

    /// From the next handshake on: `server`'s certificate, client certificates from `client_ca`'s CA.
    fn serve(&self, server: &Pki, client_ca: Option<&Pki>) {
        *self.acceptor.lock().unwrap() = acceptor(server, client_ca);
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.addr.port())
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn once(sb: &Sandbox, cfg: &Cfg) -> (Option<i32>, String, f64) {
    let path = cfg.write(sb);
    let t = Instant::now();
    let (st, out, err) = run_to_end(
        &[
            "once",
            "--config",
            path.to_str().unwrap(),
            "--timeout",
            "10s",
        ],
        sb.dir.path(),
        &[],
        Duration::from_secs(20),
    );
    (st.code(), format!("{out}{err}"), t.elapsed().as_secs_f64())
}

#[test]
fn reliability_12a_self_signed_ca_needs_ca_file() {
    let mut row = Row::new(
        "12a",
        "HTTPS token server whose certificate (for 127.0.0.1) chains to a CA made in the test",
        "without `ca_file`: `once` fails at once (permanent) with a `tls` error and the server sees the handshake \
         refused, `run` reports kind `tls` and is not ready; with `ca_file`: `once` writes the issued token",
    );
    let pki = pki();
    let server = TokenServer::start(Behavior::issue(60));
    let front = TlsFront::start(server.addr, &pki, false);
    let sb = Sandbox::new();
    sb.write("ca.pem", &pki.ca_pem);
    let mut cfg = Cfg::new(&front.url());

    let (code, text, took) = once(&sb, &cfg);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        took < 5.0,
        "a TLS failure is permanent, yet once took {took:.1} s:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("TLS failed") && line.ends_with("(tls)") && line.contains(&front.url()),
        "{line}"
    );
    assert!(
        server.seen().is_empty(),
        "a request got through without trust"
    );
    assert!(!sb.path("out/token").exists());
    // The server side records the refused handshake on its own thread; give it a moment under load.
    let mut refused = Vec::new();
    let recorded = eventually(Duration::from_secs(5), || {
        refused = front.handshakes();
        !refused.is_empty()
    });
    assert!(
        recorded && matches!(refused.first(), Some(Err(_))),
        "{refused:?}"
    );

    let path = cfg.write(&sb);
    let mut p = Proc::run(&path);
    let addr = p.wait_admin();
    wait_until(Duration::from_secs(10), "a tls error in /status", || {
        http_get(addr, "/status").is_some_and(|(_, b)| b.contains("\"kind\":\"tls\""))
    });
    assert_eq!(p.get("/readyz").0, 503);
    let mut secrets = cfg.secrets();
    scan(&mut row, &mut p, &[("once output", &text)], &secrets);
    drop(p);

    cfg.http = format!(", ca_file: {}", sb.path("ca.pem").display());
    let (code, text2, _) = once(&sb, &cfg);
    assert_eq!(code, Some(0), "{text2}");
    let issued = server.issued();
    let found = check_outputs(&sb, &cfg.outputs, &issued).unwrap();
    assert_eq!(found[0], issued[0]);
    row.figure(format!(
        "without ca_file: exit 1 after {:.0} ms, `{}`",
        took * 1000.0,
        line.split(": token request")
            .nth(1)
            .map_or(line, |r| r.trim())
    ));
    row.figure(format!(
        "with ca_file: {} handshake(s) accepted, token written",
        front.handshakes().iter().filter(|h| h.is_ok()).count()
    ));
    secrets.extend(issued);
    assert_no_leaks(&[("once output", &text2)], &secrets);
    row.scanned(1, text2.len() as u64);
    row.pass();
}

#[test]
fn reliability_12b_client_certificate_is_presented() {
    let mut row = Row::new(
        "12b",
        "HTTPS token server that requires a client certificate from the test CA (mTLS)",
        "with `client_cert_file`/`client_key_file`: the server receives exactly the configured certificate and the \
         token is written; without them: the handshake is refused and `once` fails with a `tls` error",
    );
    let pki = pki();
    let server = TokenServer::start(Behavior::issue(60));
    let front = TlsFront::start(server.addr, &pki, true);
    let sb = Sandbox::new();
    sb.write("ca.pem", &pki.ca_pem);
    sb.write("client.pem", &pki.client_pem);
    sb.write("client.key", &pki.client_key_pem);
    let mut cfg = Cfg::new(&front.url());
    cfg.http = format!(", ca_file: {}", sb.path("ca.pem").display());

    let (code, text, _) = once(&sb, &cfg);
    assert_eq!(code, Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with("(tls)"),
        "a refused client certificate is a permanent tls error: {line}"
    );
    assert!(server.seen().is_empty());
    let mut without = Vec::new();
    let recorded = eventually(Duration::from_secs(5), || {
        without = front.handshakes();
        !without.is_empty()
    });
    assert!(
        recorded && without.iter().all(|h| h.is_err()),
        "{without:?}"
    );

    cfg.http = format!(
        ", ca_file: {}, client_cert_file: {}, client_key_file: {}",
        sb.path("ca.pem").display(),
        sb.path("client.pem").display(),
        sb.path("client.key").display()
    );
    let (code, text2, _) = once(&sb, &cfg);
    assert_eq!(code, Some(0), "{text2}");
    let presented: Vec<_> = front.handshakes().into_iter().skip(without.len()).collect();
    assert!(!presented.is_empty());
    for h in &presented {
        assert_eq!(
            h.as_ref().ok().and_then(|c| c.as_ref()),
            Some(&pki.client_der),
            "{h:?}"
        );
    }
    let issued = server.issued();
    check_outputs(&sb, &cfg.outputs, &issued).unwrap();
    row.figure(format!(
        "without a client certificate: refused (`{}`), `once` exit 1 with kind tls; with it: the server saw the configured certificate",
        without.first().and_then(|h| h.as_ref().err()).map_or("?", |e| e.as_str())
    ));
    let mut secrets = cfg.secrets();
    secrets.extend(issued);
    assert_no_leaks(&[("once output", &text), ("once output", &text2)], &secrets);
    row.scanned(2, (text.len() + text2.len()) as u64);
    row.pass();
}

/// Runs a rotation scenario against `front`: the sidecar gets a token, `break_server` makes the server refuse what
/// the sidecar presents or trusts (seen as a `tls` error; it may also do more to the running process), then the TLS files in `tls/` are replaced the kubelet's
/// way with `rotated`. `others`: YAML of more tokens, appended to the config. Returns the milliseconds from that
/// swap to a new token in the token file, and the process; asserts it was never restarted and is ready afterwards.
#[allow(clippy::too_many_arguments)]
fn rotation_scenario(
    row: &mut Row,
    server: &TokenServer,
    sb: &Sandbox,
    cfg: &mut Cfg,
    others: &str,
    first: &[(&str, &str)],
    break_server: impl FnOnce(&mut Proc),
    rotated: &[(&str, &str)],
) -> (u128, Proc) {
    k8s_secret_update(&sb.path("tls"), first);
    // A permanent TLS error is retried only at max_backoff (60 s): within the 3 s below, only the watch on the TLS
    // files' directory can bring the token back.
    cfg.max_backoff = "60s";
    cfg.write(sb);
    let path = sb.write("c.yaml", &format!("{}{others}", cfg.yaml(sb)));
    let mut p = Proc::run(&path);
    p.wait_admin();
    let pid = p.pid();
    wait_until(Duration::from_secs(20), "a first token", || p.ready());

    break_server(&mut p);
    wait_until(
        Duration::from_secs(30),
        "a tls error once the server changed",
        || p.get("/status").1.contains("\"kind\":\"tls\""),
    );
    let before = sb.read("out/token").unwrap_or_default();
    let issued_before = server.issued().len();

    let swapped = Instant::now();
    k8s_secret_update(&sb.path("tls"), rotated);
    let mut recovered = None;
    let seen = eventually(Duration::from_secs(15), || {
        let now = sb.read("out/token").unwrap_or_default();
        let fresh = !now.is_empty() && now != before && server.issued().contains(&now);
        if fresh && recovered.is_none() {
            recovered = Some(swapped.elapsed());
        }
        fresh
    });
    assert!(
        seen,
        "no token after the TLS files were rotated\n{}",
        p.describe()
    );
    let took = recovered.unwrap_or_else(|| swapped.elapsed());
    assert!(
        took <= Duration::from_secs(3),
        "recovered {took:?} after the rotation (bound 3 s)\n{}",
        p.describe()
    );
    assert_eq!(p.pid(), pid);
    assert!(
        p.wait_exit(Duration::from_millis(1)).is_none(),
        "the sidecar exited"
    );
    wait_until(Duration::from_secs(10), "ready after the rotation", || {
        p.ready()
    });
    assert!(server.issued().len() > issued_before);
    // After the refused handshake the restarted refresher requests at once (not at a planned refresh).
    assert!(
        p.log_lines().iter().any(|l| l["token"] == "svc"
            && l["request_now"] == true
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("TLS files changed"))),
        "the rebuild is said in the log, with an immediate request\n{}",
        p.describe()
    );
    let mut secrets = cfg.secrets();
    secrets.extend(server.issued());
    scan(row, &mut p, &[], &secrets);
    (took.as_millis(), p)
}

#[test]
fn reliability_h04a_a_rotated_client_certificate_is_used_without_restart() {
    let mut row = Row::new(
        "h04a",
        "mTLS token server switches to requiring a client certificate from a new CA; the sidecar's client_cert_file and client_key_file are then replaced by a `..data` swap",
        "the old certificate is refused (kind tls); after the swap the sidecar rebuilds that token's HTTP client and has a new token within 3 s, same pid, ready; a second token trusting the unchanged ca_file of the same volume is not restarted",
    );
    let (old, new) = (pki(), pki());
    let server = TokenServer::start(Behavior::issue(60));
    let front = TlsFront::start(server.addr, &old, true);
    // A second token trusts the same ca_file, in the same volume, whose content the rotation leaves as it was: the
    // same nudge reaches it, and it must be left alone.
    let steady_front = TlsFront::start(server.addr, &old, false);
    let sb = Sandbox::new();
    let mut cfg = Cfg::new(&front.url());
    cfg.http = format!(
        ", ca_file: {}, client_cert_file: {}, client_key_file: {}",
        sb.path("tls/ca.pem").display(),
        sb.path("tls/tls.crt").display(),
        sb.path("tls/tls.key").display()
    );
    let steady = format!(
        "  - name: steady\n    token_url: {}\n    client_id: steady-{}\n    client_secret_file: {}\n    http: {{timeout: 1s, connect_timeout: 1s, ca_file: {}}}\n    outputs:\n      - {{path: {}, format: raw}}\n",
        steady_front.url(),
        rand_hex(),
        sb.path("secret").display(),
        sb.path("tls/ca.pem").display(),
        sb.path("steady-token").display(),
    );
    let (took, p) = rotation_scenario(
        &mut row,
        &server,
        &sb,
        &mut cfg,
        &steady,
        &[
            ("ca.pem", &old.ca_pem),
            ("tls.crt", &old.client_pem),
            ("tls.key", &old.client_key_pem),
        ],
        |_| front.serve(&old, Some(&new)),
        &[
            ("ca.pem", &old.ca_pem),
            ("tls.crt", &new.client_pem),
            ("tls.key", &new.client_key_pem),
        ],
    );
    let restarts = |token: &str| {
        p.log_lines()
            .iter()
            .filter(|l| {
                l["token"] == token
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("TLS files changed"))
            })
            .count()
    };
    assert_eq!(restarts("svc"), 1, "{}", p.describe());
    assert_eq!(
        restarts("steady"),
        0,
        "the token whose TLS files did not change was restarted\n{}",
        p.describe()
    );
    assert!(
        sb.read("steady-token").is_some_and(|t| !t.is_empty()),
        "the steady token has its token"
    );
    let last = front
        .handshakes()
        .into_iter()
        .rev()
        .find_map(|h| h.ok().flatten());
    assert_eq!(
        last.as_ref(),
        Some(&new.client_der),
        "the new certificate is presented"
    );
    row.figure(format!(
        "new token {took} ms after the swap (bound 3,000 ms); the server saw the new client certificate; same pid; the token sharing the unchanged ca_file was not restarted"
    ));
    row.pass();
}

#[test]
fn reliability_h04b_a_rotated_ca_file_is_trusted_without_restart() {
    let mut row = Row::new(
        "h04b",
        "HTTPS token server switches to a certificate from a new CA; the sidecar's ca_file is then replaced by a `..data` swap",
        "the new server certificate is refused (kind tls) until the swap; then a new token within 3 s, same pid, ready",
    );
    let (old, new) = (pki(), pki());
    let server = TokenServer::start(Behavior::issue(60));
    let front = TlsFront::start(server.addr, &old, false);
    let sb = Sandbox::new();
    let mut cfg = Cfg::new(&front.url());
    cfg.http = format!(", ca_file: {}", sb.path("tls/ca.pem").display());
    let (took, _p) = rotation_scenario(
        &mut row,
        &server,
        &sb,
        &mut cfg,
        "",
        &[("ca.pem", &old.ca_pem)],
        |_| front.serve(&new, None),
        &[("ca.pem", &new.ca_pem)],
    );
    row.figure(format!(
        "new token {took} ms after the swap (bound 3,000 ms); same pid"
    ));
    row.pass();
}

#[test]
fn reliability_h04c_tls_files_caught_half_written_keep_the_running_client() {
    let mut row = Row::new(
        "h04c",
        "mTLS rotation caught half-written: after the server starts requiring a new CA's certificate, the volume is swapped twice to the new certificate with a truncated key, then to the complete pair",
        "the truncated key keeps the running client, with one warning naming the files (never their bytes) for both swaps, no restart; the complete pair then brings a new token within 3 s, same pid, ready",
    );
    let (old, new) = (pki(), pki());
    let server = TokenServer::start(Behavior::issue(60));
    let front = TlsFront::start(server.addr, &old, true);
    let sb = Sandbox::new();
    let mut cfg = Cfg::new(&front.url());
    cfg.http = format!(
        ", ca_file: {}, client_cert_file: {}, client_key_file: {}",
        sb.path("tls/ca.pem").display(),
        sb.path("tls/tls.crt").display(),
        sb.path("tls/tls.key").display()
    );
    let key = new.client_key_pem.clone();
    let half = &key[..key.len() / 2];
    let key_line = key.lines().nth(1).unwrap_or_default().to_string();
    let tls = sb.path("tls");
    let warnings = |p: &Proc| -> Vec<String> {
        p.log_lines()
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("cannot use the TLS files"))
            })
            .map(|l| l.to_string())
            .collect()
    };
    let (took, p) = rotation_scenario(
        &mut row,
        &server,
        &sb,
        &mut cfg,
        "",
        &[
            ("ca.pem", &old.ca_pem),
            ("tls.crt", &old.client_pem),
            ("tls.key", &old.client_key_pem),
        ],
        |p| {
            front.serve(&old, Some(&new));
            wait_until(Duration::from_secs(30), "a tls error", || {
                p.get("/status").1.contains("\"kind\":\"tls\"")
            });
            for _ in 0..2 {
                k8s_secret_update(
                    &tls,
                    &[
                        ("ca.pem", &old.ca_pem),
                        ("tls.crt", &new.client_pem),
                        ("tls.key", half),
                    ],
                );
                wait_until(Duration::from_secs(10), "a warning", || {
                    !warnings(p).is_empty()
                });
            }
            // Time for the second swap's nudge (it arrives within a few hundred milliseconds, h04a).
            std::thread::sleep(Duration::from_millis(1500));
            let said = warnings(p);
            assert_eq!(
                said.len(),
                1,
                "one warning for the same problem\n{}",
                p.describe()
            );
            assert!(
                said[0].contains("tls.key"),
                "the file is named: {}",
                said[0]
            );
            assert!(!said[0].contains(&key_line), "the key's bytes were logged");
            assert!(
                !p.logs().contains("TLS files changed"),
                "no restart on files that do not make a client\n{}",
                p.describe()
            );
        },
        &[
            ("ca.pem", &old.ca_pem),
            ("tls.crt", &new.client_pem),
            ("tls.key", &new.client_key_pem),
        ],
    );
    assert!(!p.logs().contains(&key_line), "the key's bytes were logged");
    row.figure(format!(
        "2 half-written swaps: 1 warning naming tls.key, no restart; complete pair: new token {took} ms after the swap (bound 3,000 ms); same pid"
    ));
    row.pass();
}
