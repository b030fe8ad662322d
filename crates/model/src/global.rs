//! Settings of the whole proxy rather than of one route: the `--configmap` keys that apply to
//! every connection and request (client address, PROXY protocol, compression, access log …).
//! They travel in the [`crate::Table`], so that a ConfigMap change is one more table swap.
//! Keys that only give routes a default are applied by translation to each route's
//! [`crate::Policy`] instead.

use http::HeaderValue;

use crate::{AccessLogSettings, Compression, StreamSettings};

/// The global settings of one table; `Default` is ingress-nginx's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalSettings {
    pub https: HttpsSettings,
    /// `use-gzip`, `enable-brotli` and their keys.
    pub compression: Compression,
    /// `proxy-stream-*`: TCP and UDP services.
    pub stream: StreamSettings,
    /// Headers set, hidden, dropped or blocked on every request and answer.
    pub headers: crate::HeaderSettings,
    /// The access log: on or off, which requests, and its line format.
    pub access_log: AccessLogSettings,
    /// Where client addresses come from (PROXY protocol, forwarded headers), and `block-cidrs`.
    pub client_address: crate::ClientAddressing,
    /// Timeouts and limits of client connections, over the proxy's flags.
    pub client_limits: crate::ClientLimits,
}

/// How plain requests are sent to HTTPS, and what HTTPS answers carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsSettings {
    /// `http-redirect-code`: the status of the HTTPS redirect (301, 302, 307 or 308).
    pub redirect_code: u16,
    /// `no-tls-redirect-locations`: requests whose path starts with one of these are never sent
    /// to HTTPS (Let's Encrypt's HTTP-01 challenges by default).
    pub no_redirect_locations: Box<[Box<str>]>,
    /// `hsts` and its family: the `Strict-Transport-Security` value sent on HTTPS answers for
    /// hosts with a certificate; `None` with `hsts: "false"`.
    pub hsts: Option<HeaderValue>,
}

/// ingress-nginx's `no-tls-redirect-locations` default.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge";

impl Default for HttpsSettings {
    fn default() -> Self {
        Self {
            redirect_code: 308,
            no_redirect_locations: Box::new([ACME_CHALLENGE.into()]),
            hsts: Some(HeaderValue::from_static("max-age=31536000; includeSubDomains")),
        }
    }
}

impl HttpsSettings {
    /// Whether a request for `path` stays where it is rather than being sent to HTTPS.
    pub fn is_exempt(&self, path: &str) -> bool {
        self.no_redirect_locations.iter().any(|location| path.starts_with(&**location))
    }
}
