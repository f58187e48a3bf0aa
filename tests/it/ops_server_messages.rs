//! What the token server's unusual answers turn into: a redirect names where it points (without its query), a 200
//! carrying an OAuth error is that error, and a token type other than Bearer is a permanent error said once.

use std::time::Duration;

use crate::helpers::*;

fn config(sb: &Sandbox, url: &str, extra: &str) -> std::path::PathBuf {
    sb.write("secret", "s3cret-value");
    sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{format: json, level: info}}\n{extra}tokens:\n  - name: t\n    token_url: {url}\n    client_id: c\n    client_secret_file: secret\n    outputs: [{{path: out/token}}]\n"
        ),
    )
}

/// Log lines of one level whose `kind` is `kind`.
fn lines_of(p: &Proc, level: &str, kind: &str) -> Vec<serde_json::Value> {
    p.log_lines()
        .into_iter()
        .filter(|l| {
            let f = |k: &str| {
                l[k].as_str()
                    .or_else(|| l["fields"][k].as_str())
                    .map(str::to_owned)
            };
            f("level").is_some_and(|v| v.eq_ignore_ascii_case(level))
                && f("kind").as_deref() == Some(kind)
        })
        .collect()
}

#[test]
fn a_redirect_names_its_location_without_the_query() {
    let server = TokenServer::start(Behavior::redirect(
        302,
        "https://idp.example/real/token?session=QUERYSECRET123#frag",
    ));
    let sb = Sandbox::new();
    let cfg = config(&sb, &server.url(), "");
    let (st, out, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("answered HTTP 302 Found: Found to https://idp.example/real/token (query not shown); set token_url to the final token endpoint"),
        "{err}"
    );
    assert!(
        !err.contains("QUERYSECRET123") && !err.contains("frag"),
        "{err}"
    );

    // A relative Location is shown resolved against the token URL.
    server.set(Behavior::redirect(307, "/v2/token"));
    let (st, _, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{err}");
    let want = url::Url::parse(&server.url())
        .and_then(|u| u.join("/v2/token"))
        .expect("the server's URL");
    assert!(
        err.contains(&format!("to {want}; set token_url")),
        "{want}\n{err}"
    );
}

#[test]
fn a_200_carrying_an_oauth_error_is_that_error_and_classified_like_a_4xx() {
    let server = TokenServer::start(Behavior::error_with_200("invalid_client"));
    let sb = Sandbox::new();
    let cfg = config(&sb, &server.url(), "");
    let (st, out, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(
            "answered HTTP 200 OK with an error instead of a token: scripted invalid_client"
        ),
        "{err}"
    );
    assert!(err.contains(r#""kind":"invalid_client""#), "{err}");
    assert!(!err.contains("no access_token"), "{err}");

    // temporarily_unavailable in a 200 is transient: the daemon says it retries, and succeeds once the server does.
    server.set(Behavior::error_with_200("temporarily_unavailable"));
    let cfg = config(
        &sb,
        &server.url(),
        "refresh: {min_backoff: 50ms, max_backoff: 200ms}\n",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(10), "a transient error logged", || {
        !lines_of(&p, "warn", "temporarily_unavailable").is_empty()
    });
    let l = &lines_of(&p, "warn", "temporarily_unavailable")[0];
    assert!(l.to_string().contains("retrying"), "{l}");
    server.set(Behavior::issue(300));
    wait_until(Duration::from_secs(10), "recovery", || {
        sb.read("out/token").is_some()
    });
    p.signal("TERM");
    let _ = p.wait_exit(Duration::from_secs(5));
}

#[test]
fn a_token_type_other_than_bearer_is_a_permanent_error_said_once() {
    let server = TokenServer::start(Behavior::issue_type(300, "mac"));
    let sb = Sandbox::new();
    let cfg = config(
        &sb,
        &server.url(),
        "refresh: {min_backoff: 50ms, max_backoff: 200ms}\n",
    );
    let mut p = Proc::run(&cfg);
    wait_until(Duration::from_secs(15), "four attempts", || {
        server.seen().len() >= 4
    });
    let errors = lines_of(&p, "error", "unsupported_token_type");
    assert_eq!(errors.len(), 1, "said once, at error level:\n{}", p.logs());
    let e = errors[0].to_string();
    assert!(
        e.contains(r#"token_type \"mac\"; only Bearer tokens are supported"#)
            && e.contains("will not succeed until the credentials or config change"),
        "{e}"
    );
    assert!(
        lines_of(&p, "warn", "unsupported_token_type").is_empty(),
        "{}",
        p.logs()
    );
    assert!(sb.read("out/token").is_none(), "a mac token was written");
    p.signal("TERM");
    let _ = p.wait_exit(Duration::from_secs(5));

    // once: the same, exit 1.
    let (st, _, err) = run_once(&cfg, "10s");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains(r#""kind":"unsupported_token_type""#), "{err}");
}
