//! The rebuild loop: the one task that turns source updates into tables.
//!
//! No timer debounce: when idle, an update is acted on at once; while a build runs, updates pile
//! up in the channel and are all taken before the next decision, so any number of them cause
//! exactly one more build. Endpoint-only changes move endpoint sets in place, without a build.
//! Nothing is built before the store is synced (every initial list in, every wanted Secret
//! fetched), and the first build publishes, which makes `/readyz` answer 200.

use std::sync::Arc;

use ostium_model::NamespacedName;
use ostium_translate::Diagnostic;
use tokio::sync::{mpsc, watch};

use crate::Publisher;
use crate::store::{Store, Update};

/// Where the loop reports what it did, for the status writer, events and Secret fetches.
#[derive(Debug)]
pub struct Outputs {
    /// The Ingresses the current table serves, after each build.
    pub served: watch::Sender<Arc<[NamespacedName]>>,
    /// Diagnostics new with a build.
    pub diagnostics: Option<mpsc::UnboundedSender<Vec<Diagnostic>>>,
    /// Secrets whose data must be fetched and sent back as [`Update::Fetched`].
    pub secret_fetches: Option<mpsc::UnboundedSender<NamespacedName>>,
}

impl Outputs {
    pub fn new() -> (Self, watch::Receiver<Arc<[NamespacedName]>>) {
        let (served, receiver) = watch::channel(Arc::from([]));
        (Self { served, diagnostics: None, secret_fetches: None }, receiver)
    }
}

/// Runs until every sender of `updates` is gone; returns the publisher (for tests).
pub async fn run(
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
                if !publisher.refresh_endpoints(&store, &pending.endpoints) {
                    store.request_rebuild();
                }
                continue;
            }
            // Translation can take a while with many objects: off the async workers.
            let snapshot = store.snapshot();
            let (returned, build) = tokio::task::spawn_blocking(move || {
                let build = publisher.update(&snapshot);
                (publisher, build)
            })
            .await
            .expect("the build does not panic");
            publisher = returned;
            store.built(&build.served);
            outputs.served.send_replace(build.served.into());
            if let Some(diagnostics) = &outputs.diagnostics
                && !build.new_diagnostics.is_empty()
            {
                let _ = diagnostics.send(build.new_diagnostics);
            }
            // Updates that came in during the build are taken before deciding again.
            take_queued(&mut store, &mut updates, &outputs);
        }
    }
}

/// Applies every update already queued, and asks for the Secrets they made wanted.
fn take_queued(store: &mut Store, updates: &mut mpsc::UnboundedReceiver<Update>, outputs: &Outputs) {
    while let Ok(update) = updates.try_recv() {
        store.update(update);
    }
    if let Some(fetches) = &outputs.secret_fetches {
        for secret in store.take_secret_fetches() {
            let _ = fetches.send(secret);
        }
    }
}
