//! The ostium data plane.
//!
//! Listeners accept HTTP/1.1 and HTTP/2 (h2c on the plain port, ALPN `h2`/`http/1.1` on TLS),
//! TLS certificates are chosen per handshake from the current table by SNI, and each request is
//! routed on the current table and forwarded straight to a pod endpoint. The proxy only reads
//! the model; it never sees Kubernetes.
//!
//! Per request: load the table once, route synchronously, keep only the `Arc`s needed, then
//! forward (no table guard is held across an `.await`).

/// `AsyncWrite` for a stream wrapper that only watches or replays what is read: every write goes
/// straight to its `inner` stream.
macro_rules! write_through_to_inner {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

mod access_log;
mod affinity;
mod body;
mod buffer;
mod canary;
mod client;
mod client_cert;
mod compress;
mod connection;
mod error;
mod error_page;
mod forward;
mod framing;
mod headers;
mod listener;
mod metrics;
mod mirror;
mod outcome;
mod passthrough;
mod policy;
mod pool;
mod proxy_protocol;
mod request;
mod response;
mod retry;
mod rewrite;
mod route;
mod stream;
mod telemetry;
mod tls;
mod tunnel;
mod upstream;
mod upstream_body;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ostium_model::TableReader;

pub use access_log::AccessLogOutput;
pub use body::ProxyBody;
pub use connection::{ConnectionLimits, default_max_connections};
pub use error::ProxyError;
pub use listener::{serve_admin, serve_http, serve_https};
pub use metrics::ProxyMetrics;
pub use stream::{StreamLimits, serve_streams};
pub use tls::server_config;
pub use upstream::upstream_tls_config;

/// How the proxy behaves; the defaults are ingress-nginx's.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// One log event per finished request on the `ostium::access` target, or one line in the
    /// ConfigMap's `log-format-upstream` to `access_log_output`.
    pub access_log: bool,
    /// Where `log-format-upstream` lines go (stdout).
    pub access_log_output: AccessLogOutput,
    /// Time to establish a connection to an endpoint, TLS handshake included, for routes
    /// without their own `proxy-connect-timeout` (5 s).
    pub connect_timeout: Duration,
    /// Longest pause between two writes of the request to an endpoint (`proxy-send-timeout`,
    /// 60 s): an endpoint that stops reading the request gets 504.
    pub send_timeout: Duration,
    /// Longest pause between two reads of an endpoint's response, from the end of the request
    /// on (`proxy-read-timeout`, 60 s): 504 before the response head, a cut connection after.
    pub read_timeout: Duration,
    /// How long an endpoint that keeps refusing connections is skipped.
    pub eject_for: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// The client side: timeouts and limits of client connections.
    pub connections: ConnectionLimits,
    /// Where buffered request bodies that outgrow `client-body-buffer-size` spill: a private
    /// directory is made inside when first needed (`/tmp`, as nginx's `client_body_temp_path`).
    pub body_temp_dir: PathBuf,
    /// Copies of requests (`mirror-target`) in flight at most; more are dropped and counted.
    pub mirrors_in_flight: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            access_log: true,
            access_log_output: AccessLogOutput::default(),
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            eject_for: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
            body_temp_dir: PathBuf::from("/tmp"),
            mirrors_in_flight: 256,
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
    body_files: buffer::BodyFiles,
    mirrors: mirror::Mirrors,
    config: ProxyConfig,
    metrics: ProxyMetrics,
    tracer: telemetry::Tracer,
    caps: ListenerCaps,
}

/// `--max-connections` of the HTTP and of the HTTPS listener, each shared by every worker
/// accepting on it.
#[derive(Debug)]
struct ListenerCaps {
    http: listener::ConnectionCap,
    https: listener::ConnectionCap,
}

/// What the proxy knows of the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The TCP peer.
    pub remote: SocketAddr,
    pub is_tls: bool,
    /// The connection's client: `remote`, or the source its PROXY header names (decided once per
    /// connection); a request's forwarded headers may name another (see `client`).
    client: client::Client,
    /// What the framing guard of an HTTP/1 connection saw of the request heads (see `framing`).
    framing: Option<framing::FramingFlags>,
    /// What the TLS handshake settled; `None` on plain HTTP.
    tls: Option<TlsSession>,
    /// The longest pause between two reads of a request body (`client_body_timeout`).
    body_timeout: std::time::Duration,
}

/// What a TLS handshake settled that requests need.
#[derive(Clone, Debug)]
struct TlsSession {
    /// The SNI name, normalised as hosts are; `None` when the client sent none.
    server_name: Option<Box<str>>,
    /// The client certificate rules of the SNI name's host, when they request a certificate,
    /// and the certificate judged by them.
    client_cert: Option<(Arc<ostium_model::ClientAuth>, client_cert::ClientCert)>,
    /// The protocol version and cipher suite agreed (`$ssl_protocol`, `$ssl_cipher`).
    version: Option<rustls::ProtocolVersion>,
    cipher_suite: Option<rustls::CipherSuite>,
}

impl ConnectionInfo {
    /// What the framing guard found wrong with the current request head, if anything.
    fn framing_fault(&self) -> Option<framing::Fault> {
        self.framing.as_ref().and_then(|flags| flags.fault())
    }
}

impl Proxy {
    /// A proxy serving `tables`; `provider` is the process's one crypto provider, used for TLS
    /// to backends.
    pub fn new(
        tables: TableReader,
        config: ProxyConfig,
        metrics: ProxyMetrics,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Self {
        let upstream = upstream::Upstream::new(&config, provider);
        let body_files = buffer::BodyFiles::new(config.body_temp_dir.clone());
        let mirrors = mirror::Mirrors::new(config.mirrors_in_flight);
        let tracer = telemetry::Tracer::new(metrics.clone());
        let max = config.connections.max_connections;
        let caps = ListenerCaps {
            http: listener::ConnectionCap::new(max),
            https: listener::ConnectionCap::new(max),
        };
        let inner = Inner { tables, upstream, body_files, mirrors, config, metrics, tracer, caps };
        Self { inner: Arc::new(inner) }
    }

    pub(crate) fn upstream(&self) -> &upstream::Upstream {
        &self.inner.upstream
    }

    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// The limits of a connection accepted now: the flags', with the current table's ConfigMap
    /// settings over them.
    pub(crate) fn connection_limits(&self) -> ConnectionLimits {
        self.inner.config.connections.with(&self.inner.tables.load().global().client_limits)
    }
}
