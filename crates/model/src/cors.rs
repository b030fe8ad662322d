//! Cross-origin resource sharing (`enable-cors` and the `cors-*` annotations), as ingress-nginx
//! renders it: for an allowed `Origin`, the response carries the `Access-Control-*` headers, and
//! an `OPTIONS` request (a preflight) is answered by the proxy itself with 204.

use std::fmt;

use http::HeaderValue;

/// A route's CORS settings, with its header values built at translation.
#[derive(Clone)]
pub struct Cors {
    pub origins: CorsOrigins,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    /// `None` when empty (ingress-nginx then sends no `Access-Control-Expose-Headers`).
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

/// Which origins CORS applies to.
#[derive(Clone, Debug)]
pub enum CorsOrigins {
    /// `*`: every request, answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// The listed origins (`https://*.example.com` matches one label), matched case-insensitively
    /// against the whole `Origin` header, which is echoed back.
    List { pattern: regex::Regex, origins: Box<str> },
    /// No listed origin was valid: no request gets CORS headers.
    Nobody,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request with this `Origin`, when CORS
    /// applies to it.
    pub fn allowed_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List { pattern, .. } => {
                let origin = origin?;
                pattern.is_match(origin.to_str().ok()?).then(|| origin.clone())
            }
            CorsOrigins::Nobody => None,
        }
    }
}

impl CorsOrigins {
    /// The origins of a list (`https://a.example.com`, `http://*.example.com:8080`), each already
    /// checked to be a scheme, a host (a leading `*.` allowed) and an optional port.
    pub fn list(origins: &[&str]) -> Self {
        if origins.is_empty() {
            return Self::Nobody;
        }
        let alternatives: Vec<String> =
            origins.iter().map(|o| regex::escape(o).replacen(r"\*", "[A-Za-z0-9-]+", 1)).collect();
        let pattern = format!("(?i)^(?:{})$", alternatives.join("|"));
        // Escaped literals with one character class are always a valid pattern.
        let pattern = regex::Regex::new(&pattern).expect("a valid origin pattern");
        Self::List { pattern, origins: origins.join(",").into() }
    }
}

impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::List { origins, .. } => f.write_str(origins),
            Self::Nobody => f.write_str("(none)"),
        }
    }
}

impl fmt::Debug for Cors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cors({})", self.origins)
    }
}

impl PartialEq for Cors {
    fn eq(&self, other: &Self) -> bool {
        self.origins.to_string() == other.origins.to_string()
            && self.allow_methods == other.allow_methods
            && self.allow_headers == other.allow_headers
            && self.expose_headers == other.expose_headers
            && self.allow_credentials == other.allow_credentials
            && self.max_age == other.max_age
    }
}

impl Eq for Cors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn listed_origins_match_whole_and_wildcards_one_label() {
        let list = CorsOrigins::list(&["https://app.example.com", "http://*.example.org:8080"]);
        let cors = Cors {
            origins: list,
            allow_methods: origin("GET"),
            allow_headers: origin("X"),
            expose_headers: None,
            allow_credentials: true,
            max_age: origin("1"),
        };
        let allowed = |o| cors.allowed_origin(Some(&origin(o))).is_some();
        assert!(allowed("https://app.example.com") && allowed("HTTPS://APP.example.com"));
        assert!(allowed("http://a-1.example.org:8080"));
        assert!(!allowed("http://a.b.example.org:8080"), "one label only");
        assert!(!allowed("https://evil.com.https://app.example.com"), "anchored at both ends");
        assert!(!allowed("https://app.example.com.evil.com"));
        assert!(!allowed("https://appxexample.com"), "dots are literal");
        assert_eq!(cors.allowed_origin(None), None);
        assert_eq!(
            cors.allowed_origin(Some(&origin("https://app.example.com"))).unwrap(),
            "https://app.example.com"
        );
    }
}
