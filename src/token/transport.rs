//! The transport rule for a token endpoint, configured or discovered: https, or plain http only straight to a loopback address, never through a proxy from the environment.

use url::{Host, Url};

/// Whether `url`'s host is a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `https` with a host, or `http` to a loopback address.
pub(crate) fn secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback(url),
        _ => false,
    }
}

/// Whether a proxy from the environment would carry a request to `url`: then plain http leaves the pod in clear even
/// when the host is loopback. Uses the matcher reqwest itself uses (`HTTP_PROXY`/`http_proxy`, `ALL_PROXY`/
/// `all_proxy`, `NO_PROXY`/`no_proxy`, curl's rules, `HTTP_PROXY` ignored under CGI), read from the environment now,
/// so the answer is the one the client acts on.
pub(crate) fn env_proxy_carries(url: &Url) -> bool {
    let Ok(uri) = url.as_str().parse::<hyper::Uri>() else {
        // Not a URI hyper can send to: no request goes anywhere, through a proxy or not.
        return false;
    };
    hyper_util::client::proxy::matcher::Matcher::from_env()
        .intercept(&uri)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        for (url, ok) in [
            ("https://idp.example/t", true),
            ("http://127.0.0.1:8080/t", true),
            ("http://127.9.9.9/t", true),
            ("http://[::1]/t", true),
            ("http://LocalHost/t", true),
            ("http://localhost.idp.example/t", false),
            ("http://10.0.0.1/t", false),
            ("http://idp.example/t", false),
            ("ftp://127.0.0.1/t", false),
        ] {
            assert_eq!(secure_or_loopback(&Url::parse(url).unwrap()), ok, "{url}");
        }
    }
}
