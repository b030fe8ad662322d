//! Translate, keep endpoint state, publish when different.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ostium_model::{NamespacedName, TableReader, TableStore};
use ostium_translate::{Built, Diagnostic, Incremental, Objects, Options, Reference, Severity};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The one writer of the routing table.
pub(crate) struct Publisher {
    store: TableStore,
    options: Options,
    /// What the last translation made, to translate only what a change touches.
    incremental: Incremental,
    metrics: Metrics,
    /// Diagnostics of the last build, rendered, so each is logged once while it lasts.
    reported: BTreeSet<String>,
    /// Told of every table published (the TCP and UDP listeners follow the table).
    published: watch::Sender<()>,
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
    /// Ingresses the table serves that the previous one did not, and the reverse.
    pub(crate) served_added: Vec<NamespacedName>,
    pub(crate) served_removed: Vec<NamespacedName>,
    /// Diagnostics that the previous build did not have.
    pub(crate) new_diagnostics: Vec<Diagnostic>,
}

impl Publisher {
    pub(crate) fn new(store: TableStore, options: Options, metrics: Metrics) -> Self {
        Self {
            store,
            options,
            incremental: Incremental::new(),
            metrics,
            reported: BTreeSet::new(),
            published: watch::Sender::new(()),
        }
    }

    pub(crate) fn reader(&self) -> TableReader {
        self.store.reader()
    }

    /// A receiver that sees a change each time a new table is published.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.published.subscribe()
    }

    /// How many tables this publisher has built.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.metrics.table_builds()
    }

    /// The Ingresses the table serves, sorted.
    pub(crate) fn served(&self) -> Vec<NamespacedName> {
        self.incremental.served()
    }

    /// Builds a table after a change to `changed` (`None`: anything may have changed) and serves
    /// it if it differs from the current one. Only what the change touches is translated again;
    /// the new table shares the rest with the current one, and its endpoint sets too, so an
    /// endpoint-only change moves traffic without a new table. The first update always
    /// publishes, which makes the store ready.
    pub(crate) fn update(&mut self, objects: &Objects, changed: Option<&BTreeSet<Reference>>) -> Build {
        let started = Instant::now();
        let Built { table, translated, full, endpoints_moved, served_added, served_removed } = match changed {
            Some(changed) => self.incremental.update(objects, &self.options, changed),
            None => self.incremental.rebuild(objects, &self.options),
        };
        self.metrics.endpoints_swapped(endpoints_moved);
        if endpoints_moved > 0 {
            tracing::debug!(endpoint_sets = endpoints_moved, "endpoints changed");
        }
        let build = started.elapsed();
        self.metrics.table_built(build.as_secs_f64());
        let new_diagnostics = self.report(self.incremental.diagnostics());

        let current = self.store.current();
        let first = !self.reader().is_ready();
        let build = Build { outcome: Outcome::Unchanged, served_added, served_removed, new_diagnostics };
        if !first && Arc::ptr_eq(&current, &table) {
            tracing::debug!(build = %Rounded(started.elapsed()), translated, "table unchanged");
            return build;
        }
        let (hosts, routes) = (table.host_count(), table.route_count());
        self.store.publish(table);
        self.published.send_replace(());
        // Freeing a large table takes time that the next build need not wait for.
        if Arc::strong_count(&current) == 1 {
            std::thread::spawn(move || drop(current));
        }
        self.metrics.table_swapped();
        let ingresses = self.incremental.served_count();
        let time = Rounded(started.elapsed());
        if first {
            // The first table makes /readyz answer 200: the one line that says ostium serves.
            // Not the backends: counting them walks every route, and the loop has changes to take.
            let service_ports = self.store.current().endpoint_sets().count();
            tracing::info!(ingresses, routes, service_ports, hosts, build = %time, "ready");
        } else {
            tracing::info!(ingresses, routes, hosts, translated, full, build = %time, "table published");
        }
        Build { outcome: Outcome::Published, ..build }
    }

    /// Moves the endpoints of these Services in place, in the current table. Returns `false`
    /// when that is not enough (a Service or port the table uses is gone): then rebuild.
    pub(crate) fn refresh_endpoints(&self, objects: &Objects, services: &BTreeSet<NamespacedName>) -> bool {
        let current = self.store.current();
        let mut swapped = 0;
        for service in services {
            for set in current.endpoint_sets_of(service) {
                let Some(addrs) = objects.endpoint_addrs(set.key()) else { return false };
                if set.replace(addrs) {
                    swapped += 1;
                    let endpoints = set.load().len();
                    tracing::debug!(service = %service, port = set.key().port, endpoints, "endpoints changed");
                }
            }
        }
        self.metrics.endpoints_swapped(swapped);
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
                // The level is the severity, so filtering on ERROR finds every route denied.
                match d.severity {
                    Severity::Error => {
                        tracing::error!(object = %d.object, reason = d.reason.as_str(), "{}", d.message)
                    }
                    Severity::Warning => {
                        tracing::warn!(object = %d.object, reason = d.reason.as_str(), "{}", d.message)
                    }
                }
                new.push(d);
            }
            now.insert(rendered);
        }
        self.reported = now;
        self.metrics.set_diagnostics(&counts.into_iter().collect::<Vec<_>>());
        new
    }
}

/// A duration for a log line, to three significant digits: `840µs`, `12.3ms`, `1.52s`.
pub(crate) struct Rounded(pub(crate) Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_secs_f64() * 1e6;
        let (value, unit) = match micros {
            m if m < 1e3 => (m, "µs"),
            m if m < 1e6 => (m / 1e3, "ms"),
            m => (m / 1e6, "s"),
        };
        let decimals = match value {
            v if v < 10.0 => 2,
            v if v < 100.0 => 1,
            _ => 0,
        };
        let decimals = if unit == "µs" { 0 } else { decimals };
        write!(f, "{value:.decimals$}{unit}")
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
        assert_eq!(p.update(&Objects::default(), None).outcome, Outcome::Published);
        assert!(p.reader().is_ready());
        assert_eq!(p.update(&Objects::default(), None).outcome, Outcome::Unchanged);
    }

    #[test]
    fn each_published_table_is_announced_and_an_unchanged_one_is_not() {
        let mut p = publisher();
        let mut published = p.subscribe();
        assert!(!published.has_changed().unwrap());
        p.update(&objects("a.example.com", "10.0.0.1"), None);
        assert!(published.has_changed().unwrap());
        published.mark_unchanged();
        p.update(&objects("a.example.com", "10.0.0.1"), None);
        assert!(!published.has_changed().unwrap(), "the same table is not published again");
        p.update(&objects("b.example.com", "10.0.0.1"), None);
        assert!(published.has_changed().unwrap());
    }

    #[test]
    fn endpoint_change_moves_endpoints_without_a_new_table() {
        let mut p = publisher();
        p.update(&objects("a.example.com", "10.0.0.1"), None);
        let before = p.reader().load_full();
        let key = EndpointKey {
            service: NamespacedName::new("default", "web"),
            port: 80,
            protocol: ostium_model::Transport::Tcp,
        };

        assert_eq!(p.update(&objects("a.example.com", "10.0.0.2"), None).outcome, Outcome::Unchanged);
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
        p.update(&objects("a.example.com", "10.0.0.1"), None);
        let before = p.reader().load_full();
        assert_eq!(p.update(&objects("b.example.com", "10.0.0.1"), None).outcome, Outcome::Published);
        let after = p.reader().load_full();
        assert!(after.route(Some("b.example.com"), "/").is_some());
        assert!(after.route(Some("a.example.com"), "/").is_none());
        let key = EndpointKey {
            service: NamespacedName::new("default", "web"),
            port: 80,
            protocol: ostium_model::Transport::Tcp,
        };
        assert!(Arc::ptr_eq(before.endpoint_set(&key).unwrap(), after.endpoint_set(&key).unwrap()));
    }

    /// What `f` logs at debug and above, as plain text.
    fn logged(f: impl FnOnce()) -> String {
        let buffer = ostium_test_support::log::LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        buffer.text()
    }

    #[test]
    fn the_first_publish_says_ready_with_counts_and_build_time() {
        let mut p = publisher();
        let log = logged(|| {
            p.update(&objects("a.example.com", "10.0.0.1"), None);
            p.update(&objects("b.example.com", "10.0.0.1"), None);
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains(" ready ingresses=1 routes=1 service_ports=1 hosts=1 build="), "{log}");
        assert!(lines[1].contains(" table published ingresses=1"), "{log}");
        assert!(!lines[1].contains("ready"), "{log}");
    }

    #[test]
    fn diagnostics_are_logged_at_the_level_of_their_severity() {
        let mut p = publisher();
        // A backend Service that does not exist is an error; an Ingress of our class name when
        // no IngressClass defines it, a warning.
        let ingress = |name: &str, service: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec: {{ingressClassName: ostium, defaultBackend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
            )
        };
        let broken = format!("{CLASS}---\n{}", ingress("broken", "nope"));
        let classless = ingress("classless", "web");
        let log = logged(|| {
            p.update(&Objects::from_yaml(&broken).unwrap(), None);
            p.update(&Objects::from_yaml(&classless).unwrap(), None);
        });
        let error = log.lines().find(|l| l.contains("MissingService")).unwrap_or_else(|| panic!("{log}"));
        assert!(error.contains(" ERROR "), "{log}");
        let warning =
            log.lines().find(|l| l.contains("UnknownIngressClass")).unwrap_or_else(|| panic!("{log}"));
        assert!(warning.contains(" WARN "), "{log}");
    }

    #[test]
    fn an_endpoint_change_is_one_debug_line() {
        let mut p = publisher();
        let first = objects("a.example.com", "10.0.0.1");
        p.update(&first, None);
        let moved = objects("a.example.com", "10.0.0.2");
        let services = BTreeSet::from([NamespacedName::new("default", "web")]);
        let log = logged(|| assert!(p.refresh_endpoints(&moved, &services)));
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("DEBUG"), "{log}");
        assert!(log.contains("endpoints changed service=default/web port=80 endpoints=1"), "{log}");
    }

    #[test]
    fn durations_are_logged_to_three_digits() {
        let rounded = |nanos: u64| Rounded(Duration::from_nanos(nanos)).to_string();
        assert_eq!(rounded(840_123), "840µs");
        assert_eq!(rounded(1_234_567), "1.23ms");
        assert_eq!(rounded(12_345_678), "12.3ms");
        assert_eq!(rounded(123_456_789), "123ms");
        assert_eq!(rounded(1_520_000_000), "1.52s");
    }
}
