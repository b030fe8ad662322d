//! The controller's metrics, served as Prometheus text on the admin address.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Shared handles to every metric; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    proxy: ostium_proxy::ProxyMetrics,
    pub(crate) endpoint_swaps: Counter,
    pub(crate) table_builds: Counter,
    pub(crate) table_build_seconds: Histogram,
    pub(crate) table_swaps: Counter,
    pub(crate) source_errors: Counter,
    pub(crate) diagnostics: Family<ReasonLabel, Gauge>,
    watch_restarts: Family<KindLabel, Counter>,
    watch_errors: Family<KindLabel, Counter>,
    malformed_objects: Family<KindLabel, Counter>,
    status_writes: Family<ResultLabel, Counter>,
    is_leader: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ostium");
        let table_builds = Counter::default();
        registry.register("table_builds", "Routing tables built from the source", table_builds.clone());
        let table_build_seconds = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register(
            "table_build_duration_seconds",
            "Time to translate objects into a routing table",
            table_build_seconds.clone(),
        );
        let table_swaps = Counter::default();
        registry.register("table_swaps", "Routing tables published to the proxy", table_swaps.clone());
        let source_errors = Counter::default();
        registry.register(
            "source_errors",
            "Source reads that failed (the last good table stays)",
            source_errors.clone(),
        );
        let diagnostics = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "diagnostics",
            "Translation diagnostics in the current table, by reason",
            diagnostics.clone(),
        );
        let endpoint_swaps = Counter::default();
        registry.register(
            "endpoint_set_swaps",
            "Endpoint sets whose endpoints changed in place, without a new table",
            endpoint_swaps.clone(),
        );
        let watch_restarts = Family::<KindLabel, Counter>::default();
        registry.register(
            "watch_restarts",
            "Cluster mode: watches started again, after a failure or an expiry",
            watch_restarts.clone(),
        );
        let watch_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "watch_errors",
            "Cluster mode: failed watch or list calls (each is retried with backoff)",
            watch_errors.clone(),
        );
        let malformed_objects = Family::<KindLabel, Counter>::default();
        registry.register(
            "malformed_objects",
            "Cluster mode: objects skipped because they do not have their kind's shape",
            malformed_objects.clone(),
        );
        let status_writes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "ingress_status_writes",
            "Cluster mode: Ingress status updates by the leader, by result",
            status_writes.clone(),
        );
        let is_leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader Lease", is_leader.clone());
        let proxy = ostium_proxy::ProxyMetrics::register(&mut registry);
        let inner = Inner {
            registry,
            proxy,
            endpoint_swaps,
            table_builds,
            table_build_seconds,
            table_swaps,
            source_errors,
            diagnostics,
            watch_restarts,
            watch_errors,
            malformed_objects,
            status_writes,
            is_leader,
        };
        Self { inner: Arc::new(inner) }
    }
}

impl Metrics {
    /// The exposition text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    #[cfg(test)]
    pub(crate) fn table_builds(&self) -> u64 {
        self.inner.table_builds.get()
    }

    pub(crate) fn table_built(&self, seconds: f64) {
        self.inner.table_builds.inc();
        self.inner.table_build_seconds.observe(seconds);
    }

    /// The data plane's metrics, registered with these.
    pub(crate) fn proxy(&self) -> ostium_proxy::ProxyMetrics {
        self.inner.proxy.clone()
    }

    pub(crate) fn endpoints_swapped(&self, count: usize) {
        self.inner.endpoint_swaps.inc_by(count as u64);
    }

    pub(crate) fn table_swapped(&self) {
        self.inner.table_swaps.inc();
    }

    pub(crate) fn source_error(&self) {
        self.inner.source_errors.inc();
    }

    pub(crate) fn watch_restarted(&self, kind: &'static str) {
        self.inner.watch_restarts.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn watch_error(&self, kind: &'static str) {
        self.inner.watch_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn malformed_object(&self, kind: &'static str) {
        self.inner.malformed_objects.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn status_written(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner.status_writes.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.inner.is_leader.set(i64::from(leader));
    }

    pub(crate) fn set_diagnostics(&self, counts: &[(&'static str, i64)]) {
        self.inner.diagnostics.clear();
        for (reason, count) in counts {
            self.inner.diagnostics.get_or_create(&ReasonLabel { reason }).set(*count);
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
