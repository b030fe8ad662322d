//! Request and response shaping: `connection-proxy-header`, `proxy-http-version`,
//! `proxy-redirect-from`/`-to`, `proxy-cookie-domain`, `proxy-cookie-path`,
//! `preserve-trailing-slash`, `use-port-in-redirects`, `relative-redirects` and
//! `enable-rewrite-log`.
//!
//! As ingress-nginx's parsers (internal/ingress/annotations/connection, proxy, rewrite,
//! portinredirect, redirect and log), an invalid value is reported and the default kept.

use http::{HeaderValue, Version};
use ostium_model::{Protocol, Shaping, TextRewrite};

use super::Parser;
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "connection-proxy-header",
    "proxy-http-version",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "preserve-trailing-slash",
    "use-port-in-redirects",
    "relative-redirects",
    "enable-rewrite-log",
];

/// What ingress-nginx's `URLIsValidRegex` lets into `proxy-redirect-*` and `proxy-cookie-path`.
const URL_CHARS: &[u8] = b"-._~/:,?&=";
/// What its `cookieDomainRegex` lets into `proxy-cookie-domain`.
const DOMAIN_CHARS: &[u8] = b"-._~/:";

impl<'a> Parser<'a> {
    /// The route's shaping. `proxy_http_version`, `proxy_redirect` and `proxy_cookie_*` belong
    /// to nginx's HTTP proxy, so they do nothing for GRPC and GRPCS backends (`grpc_pass`).
    pub(super) fn shaping(&mut self, protocol: Protocol) -> Shaping {
        let connection = match self.value("connection-proxy-header").map(str::trim) {
            None | Some("") => None,
            Some("close") => Some(HeaderValue::from_static("close")),
            Some("keep-alive") => Some(HeaderValue::from_static("keep-alive")),
            Some(_) => {
                self.invalid("connection-proxy-header", "close or keep-alive");
                None
            }
        };
        let http_version = match self.value("proxy-http-version").map(str::trim) {
            None | Some("" | "1.1") => Version::HTTP_11,
            Some("1.0") => Version::HTTP_10,
            Some(_) => {
                self.invalid("proxy-http-version", "1.0 or 1.1");
                Version::HTTP_11
            }
        };
        let redirect = self.proxy_redirect();
        let cookie_domain = self.text_rewrite(
            "proxy-cookie-domain",
            DOMAIN_CHARS,
            "off, or a domain and its replacement such as `backend.local example.com`",
        );
        let cookie_path = self.text_rewrite(
            "proxy-cookie-path",
            URL_CHARS,
            "off, or a path and its replacement such as `/one/ /`",
        );
        // nginx compares and replaces a cookie domain without its leading `.`.
        let undotted = |text: Box<str>| -> Box<str> { text.strip_prefix('.').unwrap_or(&text).into() };
        let cookie_domain = cookie_domain.map(|r| TextRewrite { from: undotted(r.from), to: undotted(r.to) });
        let proxied = matches!(protocol, Protocol::Http | Protocol::Https);
        Shaping {
            connection,
            http_version: if proxied { http_version } else { Version::HTTP_11 },
            redirect: redirect.filter(|_| proxied),
            cookie_domain: cookie_domain.filter(|_| proxied),
            cookie_path: cookie_path.filter(|_| proxied),
            preserve_trailing_slash: self.flag("preserve-trailing-slash").unwrap_or(false),
            port_in_redirects: self.flag("use-port-in-redirects").unwrap_or(false),
            relative_redirects: self.flag("relative-redirects").unwrap_or(false),
            rewrite_log: self.flag("enable-rewrite-log").unwrap_or(false),
            custom_headers: None,
        }
    }

    /// `proxy-redirect-from` and `proxy-redirect-to`, as ingress-nginx's template renders them:
    /// `off` (the default) or `default` in `from` is `proxy_redirect off|default;`, and a `from`
    /// with `to` (not `off`) is `proxy_redirect <from> <to>;`. nginx's `default` replacement only
    /// rewrites `http://upstream_balancer/`, a name no backend is sent, so it rewrites nothing.
    fn proxy_redirect(&mut self) -> Option<TextRewrite> {
        let expected = "a URL or path without spaces";
        let from = self.url_token("proxy-redirect-from", expected);
        let to = self.url_token("proxy-redirect-to", expected);
        let (from_set, to_set) = (self.value("proxy-redirect-from"), self.value("proxy-redirect-to"));
        match (from, to) {
            (Some("off" | "default"), _) | (None, None) => None,
            (Some(from), Some(to)) if to != "off" => Some(TextRewrite { from: from.into(), to: to.into() }),
            _ if from_set.is_some() != to_set.is_some() => {
                let (set, unset) = match from_set {
                    Some(_) => ("proxy-redirect-from", "proxy-redirect-to"),
                    None => ("proxy-redirect-to", "proxy-redirect-from"),
                };
                let message = format!("annotation {0}/{set} has no effect without {0}/{unset}", self.prefix);
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                None
            }
            _ => None,
        }
    }

    /// One word of `URL_CHARS`; a regular expression (`~…`) is not supported.
    fn url_token(&mut self, name: &str, expected: &str) -> Option<&'a str> {
        let value = self.value(name)?.trim();
        if value.is_empty() {
            return None;
        }
        if !is_word(value, URL_CHARS) {
            self.invalid(name, expected);
            return None;
        }
        Some(value)
    }

    /// `off`, or `<from> <to>` as nginx's `proxy_cookie_domain` and `proxy_cookie_path` take
    /// them; a regular expression (`~…`) is not supported.
    fn text_rewrite(&mut self, name: &str, chars: &[u8], expected: &str) -> Option<TextRewrite> {
        let value = self.value(name)?.trim();
        if value.is_empty() || value == "off" {
            return None;
        }
        let mut words = value.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(from), Some(to), None) if is_word(from, chars) && is_word(to, chars) => {
                Some(TextRewrite { from: from.into(), to: to.into() })
            }
            _ => {
                self.invalid(name, expected);
                None
            }
        }
    }
}

/// Letters, digits and `chars`, not starting with `~` (nginx's mark of a regular expression).
fn is_word(word: &str, chars: &[u8]) -> bool {
    !word.starts_with('~') && word.bytes().all(|b| b.is_ascii_alphanumeric() || chars.contains(&b))
}
