//! Request and response shaping: what a route changes in the request line and headers sent
//! upstream, in the endpoint's `Location`, `Refresh` and `Set-Cookie` headers, in the style of
//! the redirects the proxy makes itself, and the headers added to its answers. ingress-nginx's
//! `proxy_set_header Connection`, `proxy_http_version`, `proxy_redirect`, `proxy_cookie_domain`,
//! `proxy_cookie_path`, `port_in_redirect`, `absolute_redirect`, `rewrite_log` and the
//! `custom-headers` annotation.

use http::{HeaderValue, Version};

/// How a route reshapes what passes through it. The default changes nothing: HTTP/1.1 upstream,
/// endpoint headers untouched, absolute redirects without a port, a final `/` dropped from HTTPS
/// redirects, no rewrite log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shaping {
    /// `connection-proxy-header`: the `Connection` value sent upstream (`close` or
    /// `keep-alive`) instead of none (or `upgrade` for a protocol upgrade).
    pub connection: Option<HeaderValue>,
    /// `proxy-http-version`: the version of HTTP/1 requests sent upstream, `HTTP/1.1` or
    /// `HTTP/1.0`.
    pub http_version: Version,
    /// `proxy-redirect-from` / `proxy-redirect-to`: rewrites the start of the endpoint's
    /// `Location` and `Refresh` (after `url=`) headers.
    pub redirect: Option<TextRewrite>,
    /// `proxy-cookie-domain`: rewrites the `Domain` attribute of the endpoint's `Set-Cookie`
    /// headers when it equals `from` (case-insensitively, a leading `.` aside).
    pub cookie_domain: Option<TextRewrite>,
    /// `proxy-cookie-path`: rewrites the start of the `Path` attribute of the endpoint's
    /// `Set-Cookie` headers.
    pub cookie_path: Option<TextRewrite>,
    /// `preserve-trailing-slash`: the HTTPS redirect keeps a final `/` of the request target.
    pub preserve_trailing_slash: bool,
    /// `use-port-in-redirects`: redirects made absolute name the port.
    pub port_in_redirects: bool,
    /// `relative-redirects`: a `Location` starting with `/` is sent as it is, not made absolute.
    pub relative_redirects: bool,
    /// `enable-rewrite-log`: each `rewrite-target` rewrite is logged (debug, `ostium::rewrite`).
    pub rewrite_log: bool,
    /// `custom-headers`: set on every answer of the route (after the `add-headers` of the
    /// ConfigMap, which they replace), as literal text.
    pub custom_headers: Option<std::sync::Arc<[(http::HeaderName, HeaderValue)]>>,
}

/// One `from to` pair of nginx's `proxy_redirect` or `proxy_cookie_*`: plain text, never a
/// pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRewrite {
    pub from: Box<str>,
    pub to: Box<str>,
}

/// The port an HTTPS redirect names under `use-port-in-redirects`: ingress-nginx writes its HTTPS
/// listen port, 443 unless changed; clients reach ostium's TLS listener on 443 through the usual
/// Service.
const HTTPS_REDIRECT_PORT: &str = ":443";

impl Shaping {
    /// What nginx puts before a `Location` that starts with `/` (`absolute_redirect on`), or
    /// `None` when it is sent as it is (`relative-redirects`). The request's scheme and host
    /// (lower-cased, without port or final dot), and with `use-port-in-redirects` the port the
    /// client addressed in `host` unless it is the scheme's default.
    pub fn redirect_origin(&self, is_tls: bool, host: &str) -> Option<String> {
        if self.relative_redirects || host.is_empty() {
            return None;
        }
        let (name, port) = split_port(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        let scheme = if is_tls { "https" } else { "http" };
        let default_port = if is_tls { "443" } else { "80" };
        let port = port.filter(|p| self.port_in_redirects && *p != default_port);
        let mut origin = String::with_capacity(scheme.len() + 3 + host.len());
        origin.push_str(scheme);
        origin.push_str("://");
        origin.extend(name.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(port) = port {
            origin.push(':');
            origin.push_str(port);
        }
        Some(origin)
    }

    /// The port written into an HTTPS redirect: none, or `:443` with `use-port-in-redirects`.
    pub fn https_redirect_port(&self) -> &'static str {
        if self.port_in_redirects { HTTPS_REDIRECT_PORT } else { "" }
    }
}

/// `host[:port]` split into the host (IPv6 literals keep their brackets) and a port of digits.
pub(crate) fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => {
            let port = &host[colon + 1..];
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            (&host[..colon], digits.then_some(port))
        }
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_origin_names_the_port_only_when_asked_and_not_the_default() {
        let plain = Shaping::default();
        assert_eq!(
            plain.redirect_origin(false, "Shop.Example.com.:8080").as_deref(),
            Some("http://shop.example.com")
        );
        let ports = Shaping { port_in_redirects: true, ..Shaping::default() };
        assert_eq!(
            ports.redirect_origin(false, "shop.example.com:8080").as_deref(),
            Some("http://shop.example.com:8080")
        );
        assert_eq!(
            ports.redirect_origin(false, "shop.example.com:80").as_deref(),
            Some("http://shop.example.com")
        );
        assert_eq!(
            ports.redirect_origin(true, "shop.example.com:443").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(ports.redirect_origin(true, "[::1]:8443").as_deref(), Some("https://[::1]:8443"));
        assert_eq!(ports.redirect_origin(true, "[::1]").as_deref(), Some("https://[::1]"));
        let relative = Shaping { relative_redirects: true, ..ports };
        assert_eq!(relative.redirect_origin(false, "shop.example.com:8080"), None);
    }
}
