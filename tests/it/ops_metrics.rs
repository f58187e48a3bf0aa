//! A fresh `run` exports every labelled counter of every token at zero, so alerts can use `rate()` at once.

use std::time::Duration;

use token_vendor::ErrorKind;

use crate::helpers::*;

#[test]
fn a_fresh_run_exports_every_error_kind_refresh_result_and_write_error_at_zero() {
    // The server never answers: no request has finished when /metrics is read, so every counter must be there at 0.
    let server = TokenServer::start(Behavior::Hang);
    let sb = Sandbox::new();
    sb.write("secret", "s3cret-value");
    let cfg = sb.write(
        "config.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\nlog: {{format: json}}\ntokens:\n  - name: a\n    token_url: {u}\n    client_id: c\n    client_secret_file: secret\n    outputs: [{{path: out/a}}]\n  - name: b\n    token_url: {u}\n    client_id: c\n    client_secret_file: secret\n    outputs: [{{path: out/b}}]\n",
            u = server.url()
        ),
    );
    let mut p = Proc::run(&cfg);
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "/metrics answers", || {
        let (code, body) = p.get("/metrics");
        text = body;
        code == 200
    });
    let mut want = Vec::new();
    for token in ["a", "b"] {
        for kind in ErrorKind::ALL {
            want.push(format!(
                "token_vendor_refresh_errors_total{{token=\"{token}\",kind=\"{}\"}} 0",
                kind.as_str()
            ));
        }
        for result in ["success", "transient_error", "permanent_error"] {
            want.push(format!(
                "token_vendor_refresh_total{{token=\"{token}\",result=\"{result}\"}} 0"
            ));
        }
        want.push(format!(
            "token_vendor_output_write_errors_total{{token=\"{token}\"}} 0"
        ));
    }
    let missing: Vec<&String> = want.iter().filter(|w| !text.contains(w.as_str())).collect();
    assert!(missing.is_empty(), "missing {missing:#?} in\n{text}");
    p.signal("TERM");
    let _ = p.wait_exit(Duration::from_secs(5));
}
