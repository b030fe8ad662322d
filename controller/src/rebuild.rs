//! The rebuild loop: the one task that turns source updates into tables.
//!
//! No timer debounce: when idle, an update is acted on at once; while a build runs, updates pile
//! up in the channel and are all taken before the next decision, so any number of them cause
//! exactly one more build. Endpoint-only changes move endpoint sets in place, without a build.
//! Nothing is built before the store is synced (every initial list in, every wanted Secret
//! fetched), and the first build publishes, which makes `/readyz` answer 200.

use std::sync::Arc;

use ostium_model::NamespacedName;
use ostium_translate::Reference;
use tokio::sync::{mpsc, watch};

use crate::events::Report;
use crate::publish::Publisher;
use crate::store::{Store, Update};

/// Where the loop reports what it did, for the status writer, events and fetches.
#[derive(Debug)]
pub(crate) struct Outputs {
    /// The Ingresses the current table serves, after each build.
    pub(crate) served: watch::Sender<Arc<[NamespacedName]>>,
    /// Diagnostics new with a build, with a reference to their object.
    pub(crate) diagnostics: Option<mpsc::UnboundedSender<Vec<Report>>>,
    /// Objects wanted whole, to be fetched and sent back as [`crate::store::Change::Fetched`].
    pub(crate) fetches: Option<mpsc::UnboundedSender<Reference>>,
}

impl Outputs {
    pub(crate) fn new() -> (Self, watch::Receiver<Arc<[NamespacedName]>>) {
        let (served, receiver) = watch::channel(Arc::from([]));
        (Self { served, diagnostics: None, fetches: None }, receiver)
    }
}

/// Runs until every sender of `updates` is gone; returns the publisher (for tests).
pub(crate) async fn run(
    mut store: Store,
    mut publisher: Publisher,
    mut updates: mpsc::UnboundedReceiver<Update>,
    outputs: Outputs,
) -> Publisher {
    loop {
        let Some(update) = updates.recv().await else { return publisher };
        store.update(update);
        take_queued(&mut store, &mut updates, &outputs);
        while let Some(pending) = store.take_pending() {
            if !pending.rebuild {
                if !publisher.refresh_endpoints(store.objects(), &pending.endpoints) {
                    store.request_rebuild(&pending.endpoints);
                }
                continue;
            }
            let endpoints = pending.endpoints;
            // Translating everything can take a while with many objects: off the async workers.
            let wants_served = outputs.served.receiver_count() > 0;
            let (returned_store, returned_publisher, build, served) =
                tokio::task::spawn_blocking(move || {
                    let build = publisher.update(store.objects(), Some(&pending.changed));
                    // The whole list only for who reads it (the status writer), when it changed, and
                    // after the table is published.
                    let changed = !build.served_added.is_empty() || !build.served_removed.is_empty();
                    let served = (wants_served && changed).then(|| publisher.served());
                    (store, publisher, build, served)
                })
                .await
                .expect("the build does not panic");
            (store, publisher) = (returned_store, returned_publisher);
            store.built(build.served_added, &build.served_removed);
            if let Some(served) = served {
                outputs.served.send_replace(served.into());
            }
            if let Some(diagnostics) = &outputs.diagnostics
                && !build.new_diagnostics.is_empty()
            {
                let reports = build.new_diagnostics.into_iter().map(|d| {
                    let reference = store.reference(&d.object);
                    (d, reference)
                });
                let _ = diagnostics.send(reports.collect());
            }
            // A build translates only what changed: endpoints that moved too are moved now.
            if !endpoints.is_empty() && !publisher.refresh_endpoints(store.objects(), &endpoints) {
                store.request_rebuild(&endpoints);
            }
            // Updates that came in during the build are taken before deciding again.
            take_queued(&mut store, &mut updates, &outputs);
        }
    }
}

/// Applies every update already queued, and asks for the objects they made wanted whole.
fn take_queued(store: &mut Store, updates: &mut mpsc::UnboundedReceiver<Update>, outputs: &Outputs) {
    while let Ok(update) = updates.try_recv() {
        store.update(update);
    }
    if let Some(fetches) = &outputs.fetches {
        for object in store.take_fetches() {
            let _ = fetches.send(object);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
    use ostium_model::{EndpointKey, Table, TableReader, TableStore, TlsTable};
    use ostium_translate::{ObjectKind, Options};

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Change;
    use crate::store::tests::{apply, class, ingress, listed, one, options, secret, service, slice};

    struct Harness {
        updates: mpsc::UnboundedSender<Update>,
        reader: TableReader,
        served: watch::Receiver<Arc<[NamespacedName]>>,
        fetches: mpsc::UnboundedReceiver<Reference>,
        task: tokio::task::JoinHandle<Publisher>,
    }

    /// The loop over a store that waits for lists of `kinds`, with the updates already queued.
    fn start(kinds: &[ObjectKind], queued: Vec<Update>) -> Harness {
        let options: Options = options();
        let store = TableStore::new(Table::new(TlsTable::new(options.fallback_certificate.clone())));
        let reader = store.reader();
        let publisher = Publisher::new(store, options.clone(), Metrics::default());
        let (updates, rx) = mpsc::unbounded_channel();
        for update in queued {
            updates.send(update).unwrap();
        }
        let (mut outputs, served) = Outputs::new();
        let (fetch_tx, fetches) = mpsc::unbounded_channel();
        outputs.fetches = Some(fetch_tx);
        let task = tokio::spawn(run(Store::new(options, kinds, true), publisher, rx, outputs));
        Harness { updates, reader, served, fetches, task }
    }

    impl Harness {
        /// Sends an update and waits until the loop has acted on everything sent.
        async fn send(&mut self, update: Update) {
            self.updates.send(update).unwrap();
            self.settle().await;
        }

        /// With time paused, a sleep ends only once every task is idle and no build is running
        /// on the blocking pool: the loop has acted on everything.
        async fn settle(&mut self) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }

        /// Stops the loop and counts the builds it made.
        async fn stop_builds(self) -> u64 {
            drop(self.updates);
            self.task.await.unwrap().builds()
        }
    }

    fn all_kinds() -> Vec<ObjectKind> {
        vec![
            ObjectKind::Ingress,
            ObjectKind::IngressClass,
            ObjectKind::Service,
            ObjectKind::EndpointSlice,
            ObjectKind::Endpoints,
            ObjectKind::Secret,
        ]
    }

    fn web_key() -> EndpointKey {
        EndpointKey {
            service: NamespacedName::new("default", "web"),
            port: 80,
            protocol: ostium_model::Transport::Tcp,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_built_before_every_initial_list_then_the_first_build_makes_ready() {
        let mut h = start(&all_kinds(), vec![]);
        h.send(listed(vec![class()])).await;
        h.send(listed(vec![ingress("a", "ostium", "web", "")])).await;
        h.send(listed(vec![service("web")])).await;
        h.send(listed(vec![slice("web", "10.0.0.1")])).await;
        h.send(listed::<Endpoints>(vec![])).await;
        assert!(!h.reader.is_ready(), "a kind is still listing");
        assert_eq!(h.stop_builds().await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_initial_list_builds_and_publishes() {
        let mut h = start(
            &all_kinds(),
            vec![
                listed(vec![class()]),
                listed(vec![ingress("a", "ostium", "web", "")]),
                listed(vec![service("web")]),
                listed(vec![slice("web", "10.0.0.1")]),
                listed::<Endpoints>(vec![]),
            ],
        );
        h.send(listed::<Secret>(vec![])).await;
        assert!(h.reader.is_ready());
        assert!(h.reader.load().route(Some("a.example.com"), "/").is_some());
        assert_eq!(&**h.served.borrow(), &[NamespacedName::new("default", "a")]);
        assert_eq!(h.stop_builds().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_queued_together_make_one_build() {
        let mut queued = vec![listed(vec![class()])];
        for i in 0..50 {
            queued.push(apply(ingress(&format!("i{i}"), "ostium", "web", "")));
            queued.push(apply(service("web")));
        }
        let mut h = start(&[ObjectKind::IngressClass], queued);
        h.settle().await;
        assert_eq!(h.reader.load().host_count(), 50);
        assert_eq!(h.stop_builds().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_changes_move_endpoints_in_the_served_table() {
        let mut h = start(
            &[ObjectKind::IngressClass],
            vec![
                apply(ingress("a", "ostium", "web", "")),
                apply(service("web")),
                apply(slice("web", "10.0.0.1")),
                listed(vec![class()]),
            ],
        );
        h.settle().await;
        let table = h.reader.load_full();
        h.send(apply(slice("web", "10.0.0.2"))).await;
        assert!(Arc::ptr_eq(&table, &h.reader.load_full()), "the same table");
        let addrs = table.endpoint_set(&web_key()).unwrap().addrs();
        assert_eq!(addrs, vec!["10.0.0.2:8080".parse::<SocketAddr>().unwrap()]);

        // The Service losing its port is more than endpoints: a new table.
        h.send(apply(one::<Service>(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{name: http, port: 81}]}\n",
        )))
        .await;
        assert!(!Arc::ptr_eq(&table, &h.reader.load_full()));
        assert_eq!(h.stop_builds().await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_referenced_secret_is_fetched_before_the_first_build() {
        let mut h = start(
            &[ObjectKind::Secret, ObjectKind::IngressClass],
            vec![
                listed(vec![secret("a-tls", "x")]),
                listed(vec![class()]),
                apply(ingress("a", "ostium", "web", "")),
            ],
        );
        h.settle().await;
        let wanted = NamespacedName::new("default", "a-tls");
        assert_eq!(h.fetches.recv().await, Some(Reference::new(ObjectKind::Secret, &wanted)));
        assert!(!h.reader.is_ready(), "waits for the Secret");
        h.send(Change::<Secret>::Fetched(wanted, None).into()).await;
        assert!(h.reader.is_ready());
        assert_eq!(h.stop_builds().await, 1);
    }
}
