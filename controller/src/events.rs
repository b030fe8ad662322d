//! Kubernetes Events for translation diagnostics, so `kubectl describe ingress` shows why a rule
//! is not served. Each diagnostic is sent once, when it first appears (the publisher reports only
//! new ones), and only by the leader, so replicas do not repeat each other.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ostium_translate::{Diagnostic, Severity};
use tokio::sync::{mpsc, watch};

/// A diagnostic, with a reference to the object it is about (its uid when the store has it).
pub(crate) type Report = (Diagnostic, ObjectReference);

pub(crate) async fn run(
    client: Client,
    instance: String,
    mut diagnostics: mpsc::UnboundedReceiver<Vec<Report>>,
    leader: watch::Receiver<bool>,
) {
    let reporter = Reporter { controller: "ostium".into(), instance: Some(instance) };
    let recorder = Recorder::new(client, reporter);
    while let Some(batch) = diagnostics.recv().await {
        if !*leader.borrow() {
            continue;
        }
        for (diagnostic, reference) in batch {
            let event = Event {
                type_: if diagnostic.severity == Severity::Error {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: diagnostic.reason.as_str().into(),
                note: Some(truncate(&diagnostic.message, 1024)),
                action: "Translate".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(object = %diagnostic.object, "cannot record an event: {e}");
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}
