//! RFC 8693 token exchange through the real binary against `exchange_server` on 127.0.0.1: the form a public
//! client (GCP STS style) and a confidential client (Keycloak style) send, an expired subject token, a rotated one
//! in `run`, the issued token's timing, `check` of the subject token file, and that the subject token leaks nowhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::Value;

use crate::exchange_server::{
    subject_jwt, ExchangeServer, Rules, GRANT_TOKEN_EXCHANGE, TYPE_ACCESS_TOKEN, TYPE_JWT,
};
use crate::helpers::{
    assert_no_leaks, k8s_secret_update, run_check, run_once, wait_until, Proc, Sandbox,
};

const GCP_PROVIDER: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s";
const GCP_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The `aud` exchange_server wants in the subject token (what the projected token's `audience` would be set to).
const SUBJECT_AUD: &str = "token-vendor-test";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token-exchange config reading the subject token from `sa/token`; `keys` are the token's extra lines.
fn config(sb: &Sandbox, url: &str, keys: &str) -> PathBuf {
    let d = sb.dir.path().display();
    sb.write(
        "exchange.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{level: debug, format: json}}\nrefresh: {{min_backoff: 200ms, max_backoff: 30s}}\ntokens:\n  - name: xchg\n    token_url: {url}\n    grant: token_exchange\n    subject_token_file: {d}/sa/token\n{keys}    outputs:\n      - {{path: {d}/out/token.json, format: json}}\n"
        ),
    )
}

fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn token_json(sb: &Sandbox) -> Value {
    serde_json::from_str(&sb.read("out/token.json").expect("token.json written"))
        .expect("token.json is JSON")
}

#[test]
fn a_public_client_sends_the_exchange_form_without_credentials_as_gcp_sts_requires() {
    let sb = Sandbox::new();
    // GCP STS's rules: an Authorization header is refused, the audience is the provider's resource name.
    let server = ExchangeServer::start(Rules {
        refuse_authorization_header: true,
        audience: Some(GCP_PROVIDER.into()),
        ..Rules::default()
    });
    let subject = subject_jwt(SUBJECT_AUD, unix_now() + 3600);
    // As the kubelet or an editor may leave it: the newline is not part of the token.
    sb.write("sa/token", &format!("{subject}\n"));
    let gcp = format!(
        "    auth_method: none\n    requested_token_type: {TYPE_ACCESS_TOKEN}\n    audience: \"{GCP_PROVIDER}\"\n    resource: https://api.example/\n    scope: {GCP_SCOPE}\n"
    );
    for (client_id, extra) in [
        (None, ""),
        (Some("public-app"), "    client_id: public-app\n"),
    ] {
        let cfg = config(&sb, &server.url(), &format!("{gcp}{extra}"));
        let (st, out, err) = run_once(&cfg, "20s");
        assert!(st.success(), "{out}\n{err}");
        let seen = server.seen();
        let last = seen.last().expect("a request");
        let mut want = form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &subject),
            ("subject_token_type", TYPE_JWT),
            ("requested_token_type", TYPE_ACCESS_TOKEN),
            ("audience", GCP_PROVIDER),
            ("resource", "https://api.example/"),
            ("scope", GCP_SCOPE),
        ]);
        if let Some(id) = client_id {
            want.insert("client_id".into(), id.into());
        }
        // Exactly these fields: no client_secret, no client_id unless configured.
        assert_eq!(last.form, want, "{err}");
        assert_eq!(last.authorization, None);
        assert_eq!(last.status, 200, "{}", last.outcome);
        assert_eq!(token_json(&sb)["access_token"], last.outcome.as_str());
        assert_no_leaks(
            &[("stderr", &err), ("stdout", &out)],
            std::slice::from_ref(&subject),
        );
    }
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn a_confidential_client_authenticates_with_basic_as_keycloak_standard_exchange_does() {
    let sb = Sandbox::new();
    let server = ExchangeServer::start(Rules {
        audience: Some("target-client".into()),
        ..Rules::default()
    });
    let subject = subject_jwt(SUBJECT_AUD, unix_now() + 3600);
    sb.write("sa/token", &subject);
    sb.write("secret", "kc-secret\n");
    let d = sb.dir.path().display();
    // The defaults: subject_token_type is the JWT type, no requested_token_type.
    let cfg = config(
        &sb,
        &server.url(),
        &format!("    client_id: kc-client\n    client_secret_file: {d}/secret\n    audience: target-client\n"),
    );
    let (st, out, err) = run_once(&cfg, "20s");
    assert!(st.success(), "{out}\n{err}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].form,
        form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &subject),
            ("subject_token_type", TYPE_JWT),
            ("audience", "target-client"),
        ])
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("kc-client:kc-secret");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert_no_leaks(
        &[("stderr", &err), ("stdout", &out)],
        &[subject, "kc-secret".into()],
    );
}

#[test]
fn an_expired_subject_token_stops_once_before_any_request_with_checks_exit_code_2() {
    let sb = Sandbox::new();
    let server = ExchangeServer::start(Rules::default());
    let subject = subject_jwt(SUBJECT_AUD, unix_now() - 30);
    sb.write("sa/token", &subject);
    let cfg = config(&sb, &server.url(), "    auth_method: none\n");
    let (st, out, err) = run_once(&cfg, "30s");
    assert_eq!(st.code(), Some(2), "{out}\n{err}");
    assert!(
        server.seen().is_empty(),
        "the server would refuse it: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("tokens[0].subject_token_file")
                && l.contains("expired at")
                && l.contains("the server will refuse it")),
        "a clear line naming the file:\n{err}"
    );
    assert!(
        err.contains("no request was sent and nothing was written"),
        "{err}"
    );
    assert_no_leaks(&[("stderr", &err), ("stdout", &out)], &[subject]);
    assert!(sb.read("out/token.json").is_none());
}

#[test]
fn run_uses_a_rotated_subject_token_at_the_next_request_and_never_shows_it() {
    let sb = Sandbox::new();
    // Short-lived tokens: a request every ~2-3 s (refresh window of a 3 s lifetime).
    let server = ExchangeServer::start(Rules {
        ttl: 3,
        ..Rules::default()
    });
    let old = subject_jwt(SUBJECT_AUD, unix_now() + 3600);
    let new = subject_jwt(SUBJECT_AUD, unix_now() + 7200);
    let sa = sb.path("sa");
    k8s_secret_update(&sa, &[("token", &format!("{old}\n"))]);
    let cfg = config(&sb, &server.url(), "    auth_method: none\n");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(20), "a first token", || p.ready());
    assert_eq!(server.seen()[0].form["subject_token"], old);

    // The kubelet rotates the projected token by swapping `..data`.
    k8s_secret_update(&sa, &[("token", &format!("{new}\n"))]);
    let swapped_at = server.seen().len();
    wait_until(
        Duration::from_secs(20),
        "a request with the rotated subject token",
        || server.seen().iter().any(|e| e.form["subject_token"] == new),
    );
    wait_until(Duration::from_secs(20), "two more requests", || {
        server.seen().len() >= swapped_at + 2
    });
    let seen = server.seen();
    // A request in flight during the swap may carry the old token; every one after it carries the new one.
    for (i, e) in seen.iter().enumerate().skip(swapped_at + 1) {
        assert_eq!(
            e.form["subject_token"], new,
            "request {i} after the swap sent the old subject token"
        );
    }
    assert!(seen.iter().all(|e| e.status == 200), "{seen:?}");
    let from_old: Vec<String> = seen
        .iter()
        .filter(|e| e.form["subject_token"] == old)
        .map(|e| e.outcome.clone())
        .collect();
    wait_until(
        Duration::from_secs(20),
        "the token file holds a token vended from the new subject token",
        || {
            sb.read("out/token.json")
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|j| j["access_token"].as_str().map(str::to_string))
                .is_some_and(|t| !from_old.contains(&t))
        },
    );

    let (_, status) = p.get("/status");
    let (_, metrics) = p.get("/metrics");
    let logs = p.logs();
    let mut secrets = vec![old, new];
    secrets.extend(server.issued());
    assert_no_leaks(
        &[
            ("stderr", &logs),
            ("/status", &status),
            ("/metrics", &metrics),
        ],
        &secrets,
    );
    p.signal("TERM");
    assert!(
        p.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        p.describe()
    );
}

#[test]
fn an_expired_subject_token_rotated_on_the_volume_wakes_the_failed_refresher_at_once() {
    let sb = Sandbox::new();
    let server = ExchangeServer::start(Rules::default());
    let expired = subject_jwt(SUBJECT_AUD, unix_now() - 30);
    let fresh = subject_jwt(SUBJECT_AUD, unix_now() + 3600);
    let sa = sb.path("sa");
    k8s_secret_update(&sa, &[("token", &expired)]);
    let cfg = config(&sb, &server.url(), "    auth_method: none\n");
    let mut p = Proc::run(&cfg);
    // invalid_grant is permanent: the next attempt is planned max_backoff (30 s) away, not retried at once.
    wait_until(
        Duration::from_secs(20),
        "invalid_grant in /status with the next attempt planned more than 20 s away",
        || {
            let body = p.get("/status").1;
            serde_json::from_str::<Value>(&body).is_ok_and(|s| {
                body.contains("invalid_grant")
                    && s["tokens"][0]["next_refresh"]
                        .as_str()
                        .and_then(|t| humantime::parse_rfc3339(t).ok())
                        .is_some_and(|t| t > SystemTime::now() + Duration::from_secs(20))
            })
        },
    );
    assert!(!p.ready());
    let refused = server.seen().len();
    // The kubelet writes the new token: the watcher sees the `..data` swap of the subject token's directory.
    k8s_secret_update(&sa, &[("token", &fresh)]);
    let swapped = std::time::Instant::now();
    wait_until(
        Duration::from_secs(15),
        "ready with the rotated subject token",
        || p.ready(),
    );
    assert!(
        swapped.elapsed() < Duration::from_secs(12),
        "woken by the watcher, not by max_backoff: {:?}",
        swapped.elapsed()
    );
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        refused + 1,
        "one attempt after the swap: {seen:?}"
    );
    assert_eq!(seen[refused].form["subject_token"], fresh);
    assert_no_leaks(&[("stderr", &p.logs())], &[expired, fresh]);
}

fn rfc3339(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("a time string")).expect("RFC 3339")
}

#[test]
fn the_lifetime_the_server_caps_at_the_subject_tokens_exp_is_honoured() {
    let sb = Sandbox::new();
    // The server would issue for an hour, but not past the subject token's exp, 200 s away.
    let server = ExchangeServer::start(Rules::default());
    let subject = subject_jwt(SUBJECT_AUD, unix_now() + 200);
    sb.write("sa/token", &subject);
    let cfg = config(&sb, &server.url(), "    auth_method: none\n");
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(20), "a first token", || p.ready());
    let j = token_json(&sb);
    let expires_in = j["expires_in"].as_u64().expect("whole seconds");
    assert!((190..=200).contains(&expires_in), "{j}");
    let issued = rfc3339(&j["issued_at"]);
    // The reference rules: buffer = max(1, min(60, 0.1 * expires_in)); refresh_time = issued + expires_in - buffer.
    let buffer = (expires_in as f64 * 0.1).clamp(1.0, 60.0);
    assert_eq!(
        rfc3339(&j["expires_at"]),
        issued + Duration::from_secs(expires_in),
        "{j}"
    );
    assert_eq!(
        rfc3339(&j["refresh_time"]),
        issued + Duration::from_secs_f64(expires_in as f64 - buffer),
        "{j}"
    );
    // /status publishes the same times and plans the next request before refresh_time, not an hour away.
    let (_, status) = p.get("/status");
    let s: Value = serde_json::from_str(&status).expect("status JSON");
    let t = &s["tokens"][0];
    assert_eq!(t["expires_at"], j["expires_at"], "{status}");
    assert_eq!(t["refresh_time"], j["refresh_time"], "{status}");
    let next = rfc3339(&t["next_refresh"]);
    assert!(
        next > issued && next <= rfc3339(&j["refresh_time"]),
        "{status}"
    );
    assert_eq!(server.seen().len(), 1);
    assert_no_leaks(&[("stderr", &p.logs()), ("/status", &status)], &[subject]);
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .expect("mkfifo (coreutils) must be installed");
    assert!(st.success());
}

#[test]
fn check_opens_the_subject_token_file_names_its_path_and_contacts_nothing() {
    let sb = Sandbox::new();
    let d = sb.dir.path().display().to_string();
    let expired = subject_jwt(SUBJECT_AUD, unix_now() - 100);
    let good = subject_jwt(SUBJECT_AUD, unix_now() + 3600);
    sb.write("expired", &expired);
    sb.write("good", &good);
    sb.write("empty", "\n");
    sb.write("opaque", "not-a-jwt-secret-value");
    std::fs::create_dir(sb.path("adir")).unwrap();
    mkfifo(&sb.path("fifo"));
    sb.write("big", &"a".repeat(64 * 1024 + 1));
    let token = |name: &str, file: &str| {
        format!(
            "  - name: {name}\n    token_url: https://idp.invalid/token\n    grant: token_exchange\n    auth_method: none\n    subject_token_file: {d}/{file}\n    outputs: [{{path: {d}/out/{name}}}]\n"
        )
    };
    let files = [
        "missing", "expired", "empty", "opaque", "adir", "fifo", "big", "good",
    ];
    let body: String = files
        .iter()
        .enumerate()
        .map(|(i, f)| token(&format!("t{i}"), f))
        .collect();
    let cfg = sb.write("check.yaml", &format!("tokens:\n{body}"));
    let path = cfg.to_str().unwrap();
    let (st, out, err) = run_check(&cfg, sb.dir.path());
    assert_eq!(st.code(), Some(2), "{out}\n{err}");
    for (i, (file, why)) in [
        ("missing", "No such file"),
        ("expired", "expired at"),
        ("empty", "empty"),
        ("opaque", "does not hold a JWT"),
        ("adir", "not a regular file"),
        ("fifo", "not a regular file"),
        ("big", "larger than"),
    ]
    .iter()
    .enumerate()
    {
        let needle = format!("{path}: tokens[{i}].subject_token_file: ");
        let line = err
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no line {needle:?} in\n{err}"));
        assert!(
            line.contains(&format!("{d}/{file}")) && line.contains(why),
            "{file}: {line}"
        );
    }
    assert!(!err.contains("tokens[7]"), "the good file is fine:\n{err}");
    assert!(err.contains("7 problem(s); nothing was contacted"), "{err}");
    assert_no_leaks(
        &[("stderr", &err), ("stdout", &out)],
        &[expired, good.clone(), "not-a-jwt-secret-value".into()],
    );

    // A config whose subject token is fine passes.
    let cfg = sb.write("ok.yaml", &format!("tokens:\n{}", token("t", "good")));
    let (st, out, err) = run_check(&cfg, sb.dir.path());
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains(": ok"), "{out}");
    assert_no_leaks(&[("stderr", &err), ("stdout", &out)], &[good]);
}
