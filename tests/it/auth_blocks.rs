//! The secretless building blocks against real oidc-provider, before they are wired into the binary:
//! `token::jws` assertions for each alg and `token::discovery` on its discovery document.

use std::process::Command;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use token_vendor::{
    fetch_discovery, pick_auth_method, Alg, AssertionSigner, Configured, DiscoveryError, Issuer,
    KeyId, PickedMethod, SigningKey, DEFAULT_LIFETIME, JWT_BEARER,
};

use crate::helpers::{OidcServer, Sandbox};

/// A fresh key pair from node's crypto: (PKCS#8 private PEM, SPKI public PEM). No key is committed.
pub fn keypair(kind: &str, param: &str) -> (String, String) {
    let script = r#"
const { generateKeyPairSync } = require('node:crypto');
const [kind, param] = process.argv.slice(1);
const { privateKey, publicKey } = kind === 'rsa'
  ? generateKeyPairSync('rsa', { modulusLength: Number(param) })
  : generateKeyPairSync('ec', { namedCurve: param });
process.stdout.write(JSON.stringify({
  private: privateKey.export({ type: 'pkcs8', format: 'pem' }),
  public: publicKey.export({ type: 'spki', format: 'pem' }),
}));
"#;
    let out = Command::new("node")
        .args(["-e", script, kind, param])
        .output()
        .unwrap_or_else(|e| panic!("key generation needs node, which did not run: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["private"].as_str().unwrap().to_string(),
        v["public"].as_str().unwrap().to_string(),
    )
}

/// The private keys of the private_key_jwt clients every alg test registers, and `stranger`, which no client has.
pub struct AlgKeys {
    pub rsa: String,
    pub p256: String,
    pub p384: String,
    pub stranger: String,
    /// oidc-provider's clients: rs256 and ps256 (one RSA key), es256 (kid k1), es384.
    pub clients: Vec<Value>,
}

impl AlgKeys {
    pub fn new() -> AlgKeys {
        let (rsa, rsa_pub) = keypair("rsa", "2048");
        let (p256, p256_pub) = keypair("ec", "P-256");
        let (p384, p384_pub) = keypair("ec", "P-384");
        let (stranger, _) = keypair("ec", "P-256");
        let clients = vec![
            json!({"client_id": "rs256", "auth": "private_key_jwt", "signing_alg": "RS256", "public_key_pem": rsa_pub}),
            json!({"client_id": "ps256", "auth": "private_key_jwt", "signing_alg": "PS256", "public_key_pem": rsa_pub}),
            json!({"client_id": "es256", "auth": "private_key_jwt", "signing_alg": "ES256", "public_key_pem": p256_pub, "kid": "k1"}),
            json!({"client_id": "es384", "auth": "private_key_jwt", "signing_alg": "ES384", "public_key_pem": p384_pub}),
        ];
        AlgKeys {
            rsa,
            p256,
            p384,
            stranger,
            clients,
        }
    }

    /// The four alg clients plus `extra`, in oidc-provider's config (300 s tokens, any port).
    pub fn provider_config(&self, extra: Value) -> Value {
        let mut clients = self.clients.clone();
        clients.push(extra);
        json!({"port": 0, "ttl": 300, "clients": clients})
    }
}

fn signer(private_pem: &str, alg: Alg) -> AssertionSigner {
    let key = SigningKey::from_pem(private_pem.as_bytes()).unwrap();
    AssertionSigner::new(key, Some(alg), KeyId::None).unwrap()
}

/// POSTs the RFC 7523 client-credentials form (no Authorization header); returns (status, JSON body).
async fn post_assertion(token_url: &str, client_id: &str, assertion: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    let resp = reqwest::Client::new()
        .post(token_url)
        .form(&form)
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("token response body");
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_accepts_private_key_jwt_for_every_alg_and_refuses_wrong_keys_and_replays() {
    let sb = Sandbox::new();
    let keys = AlgKeys::new();
    let (rsa, p256, p384, stranger) = (&keys.rsa, &keys.p256, &keys.p384, &keys.stranger);
    let idp = OidcServer::start(
        sb.dir.path(),
        keys.provider_config(
            json!({"client_id": "secret-client", "client_secret": "s", "auth": "client_secret_basic"}),
        ),
    )
    .expect("oidc-provider must be installed for this test: run scripts/install-tools");
    let token_url = idp.url.clone();
    let issuer_text = token_url.trim_end_matches("/token").to_string();

    // Discovery on oidc-provider's real document: exact issuer, token endpoint, methods and algs.
    let issuer = Issuer::parse(&issuer_text).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let doc = fetch_discovery(&http, &issuer).await.expect("discovery");
    assert_eq!(doc.issuer, issuer_text);
    assert_eq!(doc.token_endpoint.as_str(), token_url);
    assert!(doc
        .source
        .as_str()
        .ends_with("/.well-known/openid-configuration"));
    for alg in Alg::ALL {
        assert!(
            doc.supports_signing_alg(alg.as_str()),
            "{alg} not advertised: {doc:?}"
        );
    }
    assert!(doc.supports_grant("client_credentials"), "{doc:?}");
    let picked = pick_auth_method(
        &doc.token_endpoint_auth_methods_supported,
        Configured {
            secret: true,
            private_key: true,
            assertion_file: false,
        },
    )
    .unwrap();
    assert_eq!(picked, PickedMethod::PrivateKeyJwt);
    // The same issuer with a trailing slash is refused, naming both forms.
    let slash = Issuer::parse(&format!("{issuer_text}/")).unwrap();
    let err = fetch_discovery(&http, &slash).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::IssuerMismatch { .. }),
        "{err}"
    );

    let now = SystemTime::now();
    for (client, pem, alg, key_id) in [
        ("rs256", &rsa, Alg::RS256, KeyId::None),
        ("ps256", &rsa, Alg::PS256, KeyId::None),
        ("es256", &p256, Alg::ES256, KeyId::Kid("k1".into())),
        ("es384", &p384, Alg::ES384, KeyId::None),
    ] {
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let s = AssertionSigner::new(key, Some(alg), key_id).unwrap();
        // aud = the token endpoint (Okta, authlib) and = the issuer (rfc7523bis) both work here.
        for aud in [token_url.as_str(), issuer_text.as_str()] {
            let a = s
                .sign_assertion(client, aud, now, DEFAULT_LIFETIME)
                .unwrap();
            let (status, body) = post_assertion(&token_url, client, a.expose_secret()).await;
            assert_eq!(status, 200, "{client} {alg} aud {aud}: {body}");
            assert!(body["access_token"].is_string(), "{body}");
            assert_eq!(body["expires_in"], 300);
        }
    }

    // A replayed assertion (same jti) is refused: why every request signs a fresh one.
    let a = signer(p256, Alg::ES256)
        .sign_assertion("es256", &token_url, now, DEFAULT_LIFETIME)
        .unwrap();
    assert_eq!(
        post_assertion(&token_url, "es256", a.expose_secret())
            .await
            .0,
        200
    );
    let (status, body) = post_assertion(&token_url, "es256", a.expose_secret()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );

    // Refusals: wrong key, alg other than registered, expired, wrong audience, secret client.
    let cases = [
        (
            "es256",
            signer(stranger, Alg::ES256),
            token_url.clone(),
            now,
            "wrong key",
        ),
        (
            "rs256",
            signer(rsa, Alg::PS256),
            token_url.clone(),
            now,
            "unregistered alg",
        ),
        (
            "es384",
            signer(p384, Alg::ES384),
            token_url.clone(),
            now - Duration::from_secs(600),
            "expired",
        ),
        (
            "es384",
            signer(p384, Alg::ES384),
            "https://elsewhere.example/token".into(),
            now,
            "wrong aud",
        ),
        (
            "secret-client",
            signer(p256, Alg::ES256),
            token_url.clone(),
            now,
            "secret client",
        ),
    ];
    for (client, s, aud, at, what) in cases {
        let a = s
            .sign_assertion(client, &aud, at, DEFAULT_LIFETIME)
            .unwrap();
        let (status, body) = post_assertion(&token_url, client, a.expose_secret()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    }
}
