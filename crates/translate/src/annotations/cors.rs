//! `enable-cors` and the `cors-*` keys.

use http::HeaderValue;
use ostium_model::{Cors, CorsOrigins};

use super::{Parser, is_origin_host};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

impl Parser<'_> {
    /// `enable-cors` and the `cors-*` keys, as ingress-nginx reads them: an invalid value is
    /// reported and its default used (an invalid origin list: `*`; an invalid origin in a valid
    /// list: skipped).
    pub(super) fn cors(&mut self) -> Option<Cors> {
        if !self.flag("enable-cors").unwrap_or(false) {
            return None;
        }
        let origins = match self.value("cors-allow-origin") {
            None => CorsOrigins::Any,
            Some(list) => self.cors_origins(list),
        };
        let list =
            |parser: &mut Self, name: &str, token: fn(&str) -> bool, default: &'static str| match parser
                .value(name)
            {
                Some(value) if value.split(',').map(str::trim).all(|t| !t.is_empty() && token(t)) => {
                    HeaderValue::from_str(value.trim()).ok()
                }
                Some(_) => {
                    parser.warn_default(name, default);
                    (!default.is_empty()).then(|| HeaderValue::from_static(default))
                }
                None => (!default.is_empty()).then(|| HeaderValue::from_static(default)),
            };
        let allow_methods =
            list(self, "cors-allow-methods", |t| t.bytes().all(|b| b.is_ascii_alphabetic()), CORS_METHODS);
        let allow_headers = list(self, "cors-allow-headers", is_header_name, CORS_HEADERS);
        let expose_headers = list(self, "cors-expose-headers", |t| t == "*" || is_header_name(t), "");
        let allow_credentials = self.flag("cors-allow-credentials").unwrap_or(true);
        let max_age = match self.value("cors-max-age").map(|v| v.trim().parse::<u32>()) {
            None => CORS_MAX_AGE,
            Some(Ok(seconds)) => seconds,
            Some(Err(_)) => {
                self.warn_default("cors-max-age", "1728000");
                CORS_MAX_AGE
            }
        };
        Some(Cors {
            origins,
            allow_methods: allow_methods.unwrap_or(HeaderValue::from_static(CORS_METHODS)),
            allow_headers: allow_headers.unwrap_or(HeaderValue::from_static(CORS_HEADERS)),
            expose_headers,
            allow_credentials,
            max_age: HeaderValue::from(max_age),
        })
    }

    /// `cors-allow-origin`: `*`, or a comma-separated list of `http(s)://host[:port]`, the host
    /// possibly starting with `*.` (one label). As ingress-nginx: a value of the wrong shape
    /// gives `*`; an entry without a scheme is skipped; a list left empty allows no origin.
    fn cors_origins(&mut self, list: &str) -> CorsOrigins {
        let entries: Vec<&str> = list.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        let shaped = |e: &&str| {
            let host = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://")).unwrap_or(e);
            *e == "*" || is_origin_host(host)
        };
        if entries.is_empty() || !entries.iter().all(shaped) {
            self.warn_default("cors-allow-origin", "*");
            return CorsOrigins::Any;
        }
        if entries.contains(&"*") {
            return CorsOrigins::Any;
        }
        let mut origins = Vec::new();
        for entry in entries {
            if entry.starts_with("https://") || entry.starts_with("http://") {
                origins.push(entry);
                continue;
            }
            let message = format!(
                "annotation {}/cors-allow-origin: `{entry}` has no http:// or https:// scheme; it is skipped",
                self.prefix
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::InvalidAnnotation,
                message,
            ));
        }
        CorsOrigins::list(&origins)
    }
}

/// ingress-nginx's CORS defaults.
const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const CORS_MAX_AGE: u32 = 1_728_000;

/// A header name as ingress-nginx's CORS lists accept it: letters, digits, `-` and `_`.
fn is_header_name(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
