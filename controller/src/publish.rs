//! Translate, keep endpoint state, publish when different.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use ostium_model::{NamespacedName, TableReader, TableStore};
use ostium_translate::{Diagnostic, Objects, Options, Severity, Translation, translate};

use crate::metrics::Metrics;

/// The one writer of the routing table.
pub(crate) struct Publisher {
    store: TableStore,
    options: Options,
    metrics: Metrics,
    /// Diagnostics of the last build, rendered, so each is logged once while it lasts.
    reported: BTreeSet<String>,
}

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Published,
    Unchanged,
}

/// The result of one build.
#[derive(Debug)]
pub(crate) struct Build {
    #[cfg_attr(not(test), expect(dead_code, reason = "the loop acts on `served`; tests read this"))]
    pub(crate) outcome: Outcome,
    /// The Ingresses the table serves, sorted.
    pub(crate) served: Vec<NamespacedName>,
    /// Diagnostics that the previous build did not have.
    pub(crate) new_diagnostics: Vec<Diagnostic>,
}

impl Publisher {
    pub(crate) fn new(store: TableStore, options: Options, metrics: Metrics) -> Self {
        Self { store, options, metrics, reported: BTreeSet::new() }
    }

    pub(crate) fn reader(&self) -> TableReader {
        self.store.reader()
    }

    /// How many tables this publisher has built.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.metrics.table_builds()
    }

    /// Builds a table from a complete snapshot and serves it if it differs from the current one.
    /// Endpoint sets the current table already has are kept (their endpoints updated in place),
    /// so an endpoint-only change moves traffic without a new table. The first update always
    /// publishes, which makes the store ready.
    pub(crate) fn update(&mut self, objects: &Objects) -> Build {
        let started = Instant::now();
        let Translation { mut table, diagnostics, ingresses } = translate(objects, &self.options);
        let current = self.store.current();
        let swapped = table.adopt_endpoint_sets(&current);
        self.metrics.endpoints_swapped(swapped);
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.table_built(seconds);
        let new_diagnostics = self.report(diagnostics);

        if self.reader().is_ready() && *current == table {
            tracing::debug!(build_ms = seconds * 1e3, "table unchanged");
            return Build { outcome: Outcome::Unchanged, served: ingresses, new_diagnostics };
        }
        let hosts = table.host_count();
        let backends = table.backends().len();
        self.store.publish(Arc::new(table));
        // Freeing a large table takes milliseconds that the next build need not wait for.
        if Arc::strong_count(&current) == 1 {
            std::thread::spawn(move || drop(current));
        }
        self.metrics.table_swapped();
        tracing::info!(
            ingresses = ingresses.len(),
            hosts,
            backends,
            build_ms = seconds * 1e3,
            "table published"
        );
        Build { outcome: Outcome::Published, served: ingresses, new_diagnostics }
    }

    /// Moves the endpoints of these Services in place, in the current table. Returns `false`
    /// when that is not enough (a Service or port the table uses is gone): then rebuild.
    pub(crate) fn refresh_endpoints(&self, objects: &Objects, services: &BTreeSet<NamespacedName>) -> bool {
        let current = self.store.current();
        let mut swapped = 0;
        for service in services {
            for set in current.endpoint_sets_of(service) {
                match objects.endpoint_addrs(set.key()) {
                    Some(addrs) => swapped += usize::from(set.replace(addrs)),
                    None => return false,
                }
            }
        }
        self.metrics.endpoints_swapped(swapped);
        tracing::debug!(services = services.len(), swapped, "endpoints moved");
        true
    }

    /// Logs each diagnostic once while it lasts; returns the new ones.
    fn report(&mut self, diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
        let mut now = BTreeSet::new();
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut new = Vec::new();
        for d in diagnostics {
            *counts.entry(d.reason.as_str()).or_default() += 1;
            let rendered = d.to_string();
            if !self.reported.contains(&rendered) {
                let severity = if d.severity == Severity::Error { "error" } else { "warning" };
                tracing::warn!(object = %d.object, reason = d.reason.as_str(), severity, "{}", d.message);
                new.push(d);
            }
            now.insert(rendered);
        }
        self.reported = now;
        self.metrics.set_diagnostics(&counts.into_iter().collect::<Vec<_>>());
        new
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("store", &self.store).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ostium_model::{EndpointKey, NamespacedName, Table, TlsTable};

    use super::*;

    const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: http, port: 80}]}\n";

    fn objects(host: &str, endpoint: &str) -> Objects {
        let yaml = format!(
            "{CLASS}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{endpoint}\"]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: ostium\n  rules: [{{host: {host}, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        );
        Objects::from_yaml(&yaml).unwrap()
    }

    fn publisher() -> Publisher {
        let options = crate::store::tests::options();
        let store = TableStore::new(Table::new(TlsTable::new(options.fallback_certificate.clone())));
        Publisher::new(store, options, Metrics::default())
    }

    #[test]
    fn first_update_publishes_and_makes_ready_even_when_empty() {
        let mut p = publisher();
        assert!(!p.reader().is_ready());
        assert_eq!(p.update(&Objects::default()).outcome, Outcome::Published);
        assert!(p.reader().is_ready());
        assert_eq!(p.update(&Objects::default()).outcome, Outcome::Unchanged);
    }

    #[test]
    fn endpoint_change_moves_endpoints_without_a_new_table() {
        let mut p = publisher();
        p.update(&objects("a.example.com", "10.0.0.1"));
        let before = p.reader().load_full();
        let key = EndpointKey { service: NamespacedName::new("default", "web"), port: 80 };

        assert_eq!(p.update(&objects("a.example.com", "10.0.0.2")).outcome, Outcome::Unchanged);
        let after = p.reader().load_full();
        assert!(Arc::ptr_eq(&before, &after), "no new table");
        assert_eq!(
            after.endpoint_set(&key).unwrap().addrs(),
            vec!["10.0.0.2:8080".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn route_change_publishes_a_new_table_keeping_endpoint_sets() {
        let mut p = publisher();
        p.update(&objects("a.example.com", "10.0.0.1"));
        let before = p.reader().load_full();
        assert_eq!(p.update(&objects("b.example.com", "10.0.0.1")).outcome, Outcome::Published);
        let after = p.reader().load_full();
        assert!(after.route(Some("b.example.com"), "/").is_some());
        assert!(after.route(Some("a.example.com"), "/").is_none());
        let key = EndpointKey { service: NamespacedName::new("default", "web"), port: 80 };
        assert!(Arc::ptr_eq(before.endpoint_set(&key).unwrap(), after.endpoint_set(&key).unwrap()));
    }
}
