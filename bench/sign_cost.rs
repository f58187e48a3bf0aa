//! Cost of building one token request per client authentication method: a secret (Basic) against a freshly
//! signed `private_key_jwt` assertion (ES256 and RS256), including the per-request look at the key file (a `stat`; its
//! bytes and parsed key come from the caches while the file is unchanged, as for a refresher in steady state).
//!
//! `cargo run --release --example bench_sign_cost` (needs node to generate the keys; nothing is committed).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use token_vendor::{
    AssertionAudience, ClientAuth, CredentialSource, KeyIdSource, PrivateKeyJwt, RequestContext,
    TokenRequest,
};
use url::Url;

const ROUNDS: usize = 300;

fn pkcs8(kind: &str, param: &str) -> Result<String, String> {
    let script = "const {generateKeyPairSync}=require('node:crypto');const [k,p]=process.argv.slice(1);\
        const o=k==='rsa'?{modulusLength:Number(p)}:{namedCurve:p};\
        process.stdout.write(generateKeyPairSync(k,o).privateKey.export({type:'pkcs8',format:'pem'}))";
    let out = Command::new("node")
        .args(["-e", script, kind, param])
        .output()
        .map_err(|e| format!("node did not run: {e}"))?;
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// Median and 95th percentile of `ROUNDS` request builds.
fn measure(auth: &ClientAuth, url: &Url) -> Result<(Duration, Duration), String> {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut req = TokenRequest::default();
        req.field("grant_type", "client_credentials");
        let ctx = RequestContext {
            token_url: url,
            now: SystemTime::now(),
        };
        auth.apply(&mut req, &ctx).map_err(|e| e.to_string())?;
        std::hint::black_box(req.body());
        times.push(start.elapsed());
    }
    times.sort();
    Ok((times[ROUNDS / 2], times[ROUNDS * 95 / 100]))
}

fn main() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = Url::parse("https://idp.example/oauth2/token").map_err(|e| e.to_string())?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").map_err(|e| e.to_string())?;
    let mut cases = vec![(
        "client_secret_basic",
        ClientAuth::SecretBasic {
            client_id: CredentialSource::inline("app".into()),
            client_secret: CredentialSource::File(secret),
        },
    )];
    for (name, kind, param) in [
        ("private_key_jwt ES256", "ec", "P-256"),
        ("private_key_jwt RS256 (2048)", "rsa", "2048"),
    ] {
        let key = dir.path().join(format!("{kind}.pem"));
        std::fs::write(&key, pkcs8(kind, param)?).map_err(|e| e.to_string())?;
        cases.push((
            name,
            ClientAuth::PrivateKeyJwt(Box::new(PrivateKeyJwt {
                client_id: CredentialSource::inline("app".into()),
                private_key_file: key,
                alg: None,
                key_id: KeyIdSource::None,
                audience: AssertionAudience::TokenEndpoint,
                lifetime: Duration::from_secs(60),
            })),
        ));
    }
    // A file is kept in memory only once its ctime is 2 s old (credentials.rs): let the files settle, so that what is
    // measured is a refresher's steady state (one stat per request), not the read of a file that just changed.
    std::thread::sleep(Duration::from_millis(2500));
    println!("building one token request, {ROUNDS} rounds each (file looked at per request, as the refresher does)");
    for (name, auth) in &cases {
        let (median, p95) = measure(auth, &url)?;
        println!("{name:32} median {median:>10.1?}  p95 {p95:>10.1?}");
    }
    Ok(())
}
