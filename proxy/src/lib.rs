//! The ostium data plane.
//!
//! Listeners accept HTTP/1.1 and HTTP/2 (h2c on the plain port, ALPN `h2`/`http/1.1` on TLS),
//! TLS certificates are chosen per handshake from the current table by SNI, and each request is
//! routed on the current table and forwarded straight to a pod endpoint. The proxy only reads
//! the model; it never sees Kubernetes.
//!
//! Per request: load the table once, route synchronously, keep only the `Arc`s needed, then
//! forward (no table guard is held across an `.await`).

mod auth;
mod body;
mod error;
mod forward;
mod framing;
mod headers;
mod listener;
mod metrics;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ostium_model::TableReader;

pub use body::ProxyBody;
pub use error::ProxyError;
pub use listener::{serve_http, serve_https};
pub use metrics::ProxyMetrics;
pub use tls::server_config;
pub use upstream::upstream_tls_config;

/// How the proxy behaves; the defaults are ingress-nginx's.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// One log event per finished request on the `ostium::access` target.
    pub access_log: bool,
    /// Time to establish a connection to an endpoint (`proxy-connect-timeout`, 5 s).
    pub connect_timeout: Duration,
    /// Time to wait for an endpoint's response headers (`proxy-read-timeout`, 60 s).
    pub upstream_timeout: Duration,
    /// Time a client has to send its request headers (`client-header-timeout`, 60 s).
    pub header_read_timeout: Duration,
    /// Time to complete a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long an endpoint that keeps refusing connections is skipped.
    pub eject_for: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            access_log: true,
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            eject_for: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The proxy: cheap to clone, shared by every listener and connection.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tables: TableReader,
    upstream: upstream::Upstream,
    config: ProxyConfig,
    metrics: ProxyMetrics,
}

/// What the proxy knows of the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub is_tls: bool,
    /// `remote`'s IP as a header value, rendered once per connection.
    pub client_ip: http::HeaderValue,
    /// Raised by the framing guard of an HTTP/1 connection (see `framing`).
    ambiguous_framing: Option<framing::AmbiguityFlag>,
}

impl ConnectionInfo {
    fn has_ambiguous_framing(&self) -> bool {
        self.ambiguous_framing.as_ref().is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Proxy {
    pub fn new(tables: TableReader, config: ProxyConfig, metrics: ProxyMetrics) -> Self {
        let upstream = upstream::Upstream::new(&config);
        Self { inner: Arc::new(Inner { tables, upstream, config, metrics }) }
    }

    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }
}
