//! The data plane's metrics. Labels are bounded by the configuration (Ingress and Service
//! names, status class), never by requests (no path, query or client address).

use std::sync::Arc;
use std::time::Duration;

use ostium_model::NamespacedName;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Handles to the proxy's metrics; cloning is cheap. `Default` makes unregistered ones.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histogram,
    upstream_seconds: Histogram,
    upstream_connect_errors: Counter,
    upstream_retries: Counter,
    connections: Gauge,
    connections_refused: Counter,
    tls_handshake_errors: Counter,
    mirror_dropped: Counter,
    spans_exported: Counter,
    spans_dropped: Family<DropLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `queue_full` (otel-max-queuesize reached) or `export_failed`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// Empty when no Ingress route matched.
    ingress: Name,
    /// Empty when no backend was chosen.
    service: Name,
    /// `1xx` … `5xx`.
    class: &'static str,
}

/// A label holding a name the table already shares: `namespace/name`, or empty. Labelling a
/// request clones a reference count, not a string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Name(Option<Arc<NamespacedName>>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        match &self.0 {
            Some(name) => write!(encoder, "{name}"),
            None => Ok(()),
        }
    }
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let inner = Inner {
            requests: Family::default(),
            request_seconds: latency_buckets(),
            upstream_seconds: latency_buckets(),
            upstream_connect_errors: Counter::default(),
            upstream_retries: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshake_errors: Counter::default(),
            mirror_dropped: Counter::default(),
            spans_exported: Counter::default(),
            spans_dropped: Family::default(),
        };
        Self { inner: Arc::new(inner) }
    }
}

impl ProxyMetrics {
    /// Metrics registered in `registry` (which prefixes them, e.g. `ostium_`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let m = &metrics.inner;
        registry.register(
            "requests",
            "Requests answered, by Ingress, Service and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            m.request_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time an endpoint took to answer (response head)",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "upstream_connect_errors",
            "Connections to endpoints that failed",
            m.upstream_connect_errors.clone(),
        );
        registry.register(
            "upstream_retries",
            "Tries of requests after their first (proxy-next-upstream)",
            m.upstream_retries.clone(),
        );
        registry.register("connections_active", "Client connections open", m.connections.clone());
        registry.register(
            "connections_refused",
            "Client connections closed at once because the listener had max-connections open",
            m.connections_refused.clone(),
        );
        registry.register(
            "tls_handshake_errors",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_errors.clone(),
        );
        registry.register(
            "mirror_requests_dropped",
            "Request copies (mirror-target) not sent because the most allowed in flight were",
            m.mirror_dropped.clone(),
        );
        registry.register(
            "tracing_spans_exported",
            "Request spans the OpenTelemetry collector accepted",
            m.spans_exported.clone(),
        );
        registry.register(
            "tracing_spans_dropped",
            "Request spans dropped: the export queue was full, or the collector failed",
            m.spans_dropped.clone(),
        );
        metrics
    }

    pub(crate) fn request(
        &self,
        ingress: Option<Arc<NamespacedName>>,
        service: Option<Arc<NamespacedName>>,
        status: u16,
        took: Duration,
        upstream: Option<Duration>,
    ) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = RequestLabels { ingress: Name(ingress), service: Name(service), class };
        self.inner.requests.get_or_create(&labels).inc();
        self.inner.request_seconds.observe(took.as_secs_f64());
        if let Some(upstream) = upstream {
            self.inner.upstream_seconds.observe(upstream.as_secs_f64());
        }
    }

    pub(crate) fn connect_error(&self) {
        self.inner.upstream_connect_errors.inc();
    }

    pub(crate) fn retry(&self) {
        self.inner.upstream_retries.inc();
    }

    pub(crate) fn connection_refused(&self) {
        self.inner.connections_refused.inc();
    }

    pub(crate) fn mirror_dropped(&self) {
        self.inner.mirror_dropped.inc();
    }

    pub(crate) fn spans_exported(&self, count: usize) {
        self.inner.spans_exported.inc_by(count as u64);
    }

    pub(crate) fn spans_dropped(&self, reason: &'static str, count: usize) {
        self.inner.spans_dropped.get_or_create(&DropLabels { reason }).inc_by(count as u64);
    }

    pub(crate) fn tls_handshake_error(&self) {
        self.inner.tls_handshake_errors.inc();
    }

    /// Counts a client connection while the returned guard lives.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.inner.connections.inc();
        ConnectionGuard(self.clone())
    }
}

pub(crate) struct ConnectionGuard(ProxyMetrics);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.inner.connections.dec();
    }
}
