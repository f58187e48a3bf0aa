//! private_key_jwt and client_assertion_file through the real binary: oidc-provider for signed assertions,
//! the scripted TokenServer for what is sent from an assertion file, and `check` for every new key.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use serde_json::{json, Value};

use crate::auth_blocks::{keypair, AlgKeys};
use crate::helpers::{
    jwt_with_exp, run_check, run_once, Behavior, OidcServer, Sandbox, TokenServer,
};

/// The base64 body of a PEM (what must never leak), without its BEGIN/END lines.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn jwt_config(sb: &Sandbox, url: &str, client: &str, extra: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        &format!("{client}.yaml"),
        &format!(
            "tokens:\n  - name: t\n    token_url: {url}\n    http: {{allow_insecure_http: true}}\n    client_id: {client}\n    auth_method: private_key_jwt\n    private_key_file: {d}/{client}.pem\n{extra}    outputs:\n      - {{path: {d}/out/{client}.json, format: json}}\n"
        ),
    )
}

#[test]
fn once_gets_a_token_with_private_key_jwt_for_every_alg_and_a_wrong_key_exits_1() {
    let sb = Sandbox::new();
    let keys = AlgKeys::new();
    let (rsa, p256, p384, stranger) = (&keys.rsa, &keys.p256, &keys.p384, &keys.stranger);
    // `wrong` is registered with p256's public key and signs with `stranger`.
    let p256_pub = keys.clients[2]["public_key_pem"].clone();
    let idp = OidcServer::start(
        sb.dir.path(),
        keys.provider_config(
            json!({"client_id": "wrong", "auth": "private_key_jwt", "signing_alg": "ES256", "public_key_pem": p256_pub}),
        ),
    )
    .expect("oidc-provider must be installed for this test: run scripts/install-tools");
    let url = idp.url.clone();
    for (client, pem, extra) in [
        ("rs256", &rsa, ""),
        ("ps256", &rsa, "    alg: PS256\n"),
        ("es256", &p256, "    kid: k1\n"),
        ("es384", &p384, "    assertion_lifetime: 30s\n"),
        ("wrong", &stranger, ""),
    ] {
        sb.write(&format!("{client}.pem"), pem);
        let cfg = jwt_config(&sb, &url, client, extra);
        let (st, out, err) = run_once(&cfg, "20s");
        let secret = pem_body(pem);
        assert!(
            !err.contains(&secret) && !out.contains(&secret),
            "{client}: key leaked"
        );
        if client == "wrong" {
            assert_eq!(st.code(), Some(1), "{client}: {err}");
            assert!(err.contains("invalid_client"), "{client}: {err}");
            assert!(sb.read("out/wrong.json").is_none());
        } else {
            assert!(st.success(), "{client}: {out}\n{err}");
            let written: Value =
                serde_json::from_str(&sb.read(&format!("out/{client}.json")).unwrap()).unwrap();
            assert!(
                written["access_token"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "{written}"
            );
        }
    }
}

fn assertion_config(sb: &Sandbox, url: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "a.yaml",
        &format!(
            "tokens:\n  - name: t\n    token_url: {url}\n    http: {{allow_insecure_http: true}}\n    client_id: app-1\n    auth_method: client_assertion_file\n    client_assertion_file: {d}/sa/token\n    outputs:\n      - {{path: {d}/out/t.json, format: json}}\n"
        ),
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn client_assertion_file_sends_the_file_as_it_is_at_each_request_and_an_expired_one_is_not_sent() {
    let sb = Sandbox::new();
    let server = TokenServer::start(Behavior::issue(300));
    let cfg = assertion_config(&sb, &server.url());
    for round in 0..2 {
        let assertion = jwt_with_exp(unix_now() + 600);
        sb.write("sa/token", &format!("{assertion}\n"));
        let (st, out, err) = run_once(&cfg, "20s");
        assert!(st.success(), "{out}\n{err}");
        assert!(
            !err.contains(&assertion) && !out.contains(&assertion),
            "assertion leaked"
        );
        let seen = server.seen();
        assert_eq!(seen.len(), round + 1);
        let last = seen.last().unwrap();
        let one = |k: &str| last.form.get(k).map(|v| v.join(","));
        assert_eq!(one("grant_type").as_deref(), Some("client_credentials"));
        assert_eq!(one("client_id").as_deref(), Some("app-1"));
        assert_eq!(
            one("client_assertion_type").as_deref(),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        // The file's content as it is now: the rotated assertion at the second request.
        assert_eq!(one("client_assertion").as_deref(), Some(assertion.as_str()));
        assert!(one("client_secret").is_none());
        assert!(
            !last.headers.contains_key("authorization"),
            "{:?}",
            last.headers
        );
    }
    // Expired and not rotated: a clear error naming the file and its exp, and no request.
    let exp = unix_now() - 10;
    sb.write("sa/token", &jwt_with_exp(exp));
    let (st, _, err) = run_once(&cfg, "20s");
    // A file problem, as `check` would report it: exit code 2, and the line says no request went out.
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("tokens[0].client_assertion_file: the client assertion in ")
            && err.contains("sa/token")
            && err.contains(&exp.to_string())
            && err.contains("no request was sent"),
        "{err}"
    );
    assert_eq!(
        server.seen().len(),
        2,
        "an expired assertion must not be sent"
    );
}

#[test]
fn check_names_the_key_path_for_a_bad_key_an_alg_mismatch_and_a_missing_assertion_file() {
    let sb = Sandbox::new();
    let (p256, _) = keypair("ec", "P-256");
    let d = sb.dir.path().display().to_string();
    sb.write("good.pem", &p256);
    sb.write(
        "bad.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    );
    let cfg = sb.write(
        "c.yaml",
        &format!(
            "tokens:
  - name: bad-key
    token_url: https://idp.invalid/token
    client_id: a
    auth_method: private_key_jwt
    private_key_file: {d}/bad.pem
    outputs: [{{path: {d}/out/a}}]
  - name: mismatch
    token_url: https://idp.invalid/token
    client_id: a
    auth_method: private_key_jwt
    private_key_file: {d}/good.pem
    alg: RS256
    outputs: [{{path: {d}/out/b}}]
  - name: no-assertion
    token_url: https://idp.invalid/token
    client_id: a
    auth_method: client_assertion_file
    client_assertion_file: {d}/missing/token
    outputs: [{{path: {d}/out/c}}]
  - name: fine
    token_url: https://idp.invalid/token
    client_id: a
    auth_method: private_key_jwt
    private_key_file: {d}/good.pem
    alg: ES256
    outputs: [{{path: {d}/out/d}}]
"
        ),
    );
    let (st, out, err) = run_check(&cfg, sb.dir.path());
    assert!(!st.success(), "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("tokens[0].private_key_file") && all.contains("PKCS#1"),
        "{all}"
    );
    assert!(
        all.contains("tokens[1].private_key_file") && all.contains("alg RS256"),
        "{all}"
    );
    assert!(
        all.contains("tokens[2].client_assertion_file") && all.contains("missing/token"),
        "{all}"
    );
    assert!(!all.contains("tokens[3]"), "{all}");
    assert!(!all.contains(&pem_body(&p256)), "key leaked");
}

#[test]
fn run_uses_a_rotated_key_file_from_the_next_request_and_leaks_no_key() {
    let sb = Sandbox::new();
    let (old, _) = keypair("ec", "P-256");
    let (new, new_pub) = keypair("ec", "P-256");
    // The server knows only the new key: the old one fails (permanent), the rotated file must then be used.
    let idp = OidcServer::start(
        sb.dir.path(),
        json!({"port": 0, "ttl": 300, "clients": [
            {"client_id": "rot", "auth": "private_key_jwt", "signing_alg": "ES256", "public_key_pem": new_pub},
        ]}),
    )
    .expect("oidc-provider must be installed for this test: run scripts/install-tools");
    let d = sb.dir.path().display().to_string();
    // A Secret volume, as the kubelet lays it out: keys/rot.pem -> ..data/rot.pem. Only a watch on the directory
    // sees the `..data` swap; the file's own path never changes.
    crate::helpers::k8s_secret_update(&sb.path("keys"), &[("rot.pem", &old)]);
    let cfg = sb.write(
        "run.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: debug, format: json}}\nrefresh: {{min_backoff: 200ms, max_backoff: 30s}}\ntokens:\n  - name: rot\n    token_url: {url}\n    http: {{allow_insecure_http: true}}\n    client_id: rot\n    auth_method: private_key_jwt\n    private_key_file: {d}/keys/rot.pem\n    outputs:\n      - {{path: {d}/out/rot.json, format: json}}\n",
            url = idp.url
        ),
    );
    let mut p = crate::helpers::Proc::run(&cfg);
    p.wait_admin();
    crate::helpers::wait_until(Duration::from_secs(15), "the old key is refused", || {
        p.logs().contains("invalid_client")
    });
    assert!(!p.ready(), "{}", p.describe());
    // The refused key is a permanent error: nothing but the directory watch wakes the refresher, so readiness
    // within 15 s (max_backoff is 30 s) proves the `..data` swap was seen and the new key read.
    crate::helpers::k8s_secret_update(&sb.path("keys"), &[("rot.pem", &new)]);
    crate::helpers::wait_until(Duration::from_secs(15), "the rotated key is used", || {
        p.ready()
    });
    let token: Value = serde_json::from_str(&sb.read("out/rot.json").unwrap()).unwrap();
    assert!(token["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let (_, status) = p.get("/status");
    let (_, metrics) = p.get("/metrics");
    let logs = p.logs();
    crate::helpers::assert_no_leaks(
        &[
            ("stderr", &logs),
            ("/status", &status),
            ("/metrics", &metrics),
        ],
        &[pem_body(&old), pem_body(&new)],
    );
    // No assertion (a JWS with our ES256 header) appears anywhere either.
    for (what, text) in [("stderr", &logs), ("/status", &status)] {
        assert!(!text.contains("client_assertion="), "{what}: {text}");
    }
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
}

/// Decodes one base64url JWS segment as JSON.
fn segment(jws: &str, i: usize) -> Value {
    let part = jws.split('.').nth(i).expect("a JWS has three segments");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn certificate_file_sends_x5t_s256_of_the_certificate_and_a_real_server_accepts_it() {
    let sb = Sandbox::new();
    let certified = rcgen::generate_simple_self_signed(vec!["token-vendor-client".into()]).unwrap();
    let key_pem = certified.signing_key.serialize_pem();
    let cert_der = certified.cert.der().to_vec();
    sb.write("x5t.pem", &key_pem);
    sb.write("x5t.crt", &certified.cert.pem());
    let d = sb.dir.path().display().to_string();
    let extra = format!("    certificate_file: {d}/x5t.crt\n");
    let thumbprint =
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert_der).as_ref());

    // What is sent: header and claims of two assertions, read off the wire.
    let server = TokenServer::start(Behavior::issue(300));
    let cfg = jwt_config(&sb, &server.url(), "x5t", &extra);
    for _ in 0..2 {
        let (st, out, err) = run_once(&cfg, "20s");
        assert!(st.success(), "{out}\n{err}");
        assert!(!err.contains(&pem_body(&key_pem)), "key leaked");
    }
    let seen = server.seen();
    let assertions: Vec<String> = seen
        .iter()
        .map(|s| s.form.get("client_assertion").unwrap().join(","))
        .collect();
    assert_eq!(assertions.len(), 2);
    for a in &assertions {
        let header = segment(a, 0);
        assert_eq!(header["alg"], "ES256", "{header}");
        assert_eq!(header["x5t#S256"], thumbprint.as_str(), "{header}");
        assert!(header.get("kid").is_none(), "{header}");
        let claims = segment(a, 1);
        assert_eq!(claims["iss"], "x5t", "{claims}");
        assert_eq!(claims["sub"], "x5t", "{claims}");
        assert_eq!(claims["aud"], server.url().as_str(), "{claims}");
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 60, "default assertion lifetime: {claims}");
        // At least 128 bits of randomness: 22 base64url characters.
        assert!(
            claims["jti"].as_str().is_some_and(|j| j.len() >= 22),
            "{claims}"
        );
        // The signature verifies with the certificate's key: the thumbprint names the key that signed.
        let (signed, sig) = a.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            certified.signing_key.public_key_raw(),
        )
        .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("the assertion is signed by the certified key");
    }
    assert_ne!(
        segment(&assertions[0], 1)["jti"],
        segment(&assertions[1], 1)["jti"],
        "a jti is never reused"
    );

    // A real server takes the same assertion: oidc-provider with the certificate's public key.
    let idp = OidcServer::start(
        sb.dir.path(),
        json!({"port": 0, "ttl": 300, "clients": [
            {"client_id": "x5t", "auth": "private_key_jwt", "signing_alg": "ES256",
             "public_key_pem": certified.signing_key.public_key_pem()},
        ]}),
    )
    .expect("oidc-provider must be installed for this test: run scripts/install-tools");
    let cfg = jwt_config(&sb, &idp.url, "x5t", &extra);
    let (st, out, err) = run_once(&cfg, "20s");
    assert!(st.success(), "{out}\n{err}");
    let written: Value = serde_json::from_str(&sb.read("out/x5t.json").unwrap()).unwrap();
    assert!(
        written["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{written}"
    );
}
