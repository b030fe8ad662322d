//! The ConfigMap's client connection keys: they override the proxy's flags of the same meaning
//! (`--client-header-timeout` …) for connections accepted while the table is served.

use std::time::Duration;

/// `client-header-timeout`, `client-body-timeout`, `keep-alive`, `keep-alive-requests`,
/// `large-client-header-buffers` and `http2-max-concurrent-streams`; `None`: the proxy's flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    /// Idle HTTP/1 keep-alive; zero: every connection closes after one request.
    pub keepalive_timeout: Option<Duration>,
    /// Requests served on one HTTP/1 connection before it closes (nginx's 1000).
    pub keepalive_requests: u32,
    /// The largest request head, in bytes: the buffers' number times their size.
    pub max_header_bytes: Option<usize>,
    /// Streams an HTTP/2 client may open at once (ingress-nginx's 128).
    pub http2_max_concurrent_streams: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_timeout: None,
            body_timeout: None,
            keepalive_timeout: None,
            keepalive_requests: 1000,
            max_header_bytes: None,
            http2_max_concurrent_streams: 128,
        }
    }
}
