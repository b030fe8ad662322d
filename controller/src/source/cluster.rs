//! Cluster source: one watcher per kind on the Kubernetes API, with backoff.
//!
//! Objects are read untyped and converted one by one, so a single malformed object is logged
//! and skipped instead of failing its whole list. `managedFields` are dropped before anything is
//! kept. A watcher's (re)list is sent as one complete list, so objects deleted while the watch
//! was down disappear too. During an API outage the watchers retry with backoff while the proxy
//! keeps serving the last table.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use ostium_model::NamespacedName;
use ostium_translate::{Object, ObjectKind};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::Metrics;
use crate::store::Update;

/// Starts a watcher for every kind translation reads, and the fetcher of referenced Secrets.
/// Returns the kinds whose initial list the store must wait for.
pub async fn spawn(
    client: Client,
    namespace: Option<&str>,
    updates: UnboundedSender<Update>,
    secret_fetches: UnboundedReceiver<NamespacedName>,
    metrics: Metrics,
) -> Vec<ObjectKind> {
    let api = |kind| {
        let resource = resource(kind);
        let api = match (kind, namespace) {
            (ObjectKind::IngressClass, _) | (_, None) => Api::all_with(client.clone(), &resource),
            (_, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        };
        (api, resource)
    };
    let mut kinds =
        vec![ObjectKind::Ingress, ObjectKind::IngressClass, ObjectKind::Service, ObjectKind::Secret];
    // EndpointSlices, or the Endpoints they replaced on API servers too old to have them.
    let (slices, _) = api(ObjectKind::EndpointSlice);
    let endpoint_kind = match slices.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::warn!("the API server has no discovery.k8s.io/v1 EndpointSlices; watching Endpoints");
            ObjectKind::Endpoints
        }
        _ => ObjectKind::EndpointSlice,
    };
    kinds.push(endpoint_kind);

    for &kind in &kinds {
        let (api, resource) = api(kind);
        tokio::spawn(watch(kind, api, resource, updates.clone(), metrics.clone()));
    }
    tokio::spawn(fetch_secrets(client, secret_fetches, updates));
    kinds
}

fn resource(kind: ObjectKind) -> ApiResource {
    match kind {
        ObjectKind::Ingress => ApiResource::erase::<Ingress>(&()),
        ObjectKind::IngressClass => ApiResource::erase::<IngressClass>(&()),
        ObjectKind::Service => ApiResource::erase::<Service>(&()),
        ObjectKind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        ObjectKind::Endpoints => ApiResource::erase::<Endpoints>(&()),
        ObjectKind::Secret => ApiResource::erase::<Secret>(&()),
    }
}

/// Follows one kind until the store goes away.
async fn watch(
    kind: ObjectKind,
    api: Api<DynamicObject>,
    resource: ApiResource,
    updates: UnboundedSender<Update>,
    metrics: Metrics,
) {
    let kind_name = kind.as_str();
    // `any_semantic`: lists may come from the API server's watch cache, as informers do.
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = Vec::new();
    let mut lists = 0u64;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                metrics.watch_error(kind_name);
                // Logged once per outage; the backoff retries meanwhile.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(kind = kind_name, "watch failed, retrying with backoff: {e}");
                } else {
                    tracing::debug!(kind = kind_name, "watch still failing: {e}");
                }
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            metrics.watch_restarted(kind_name);
            tracing::info!(kind = kind_name, "watch reconnected");
        } else if matches!(event, watcher::Event::Init) && lists > 0 {
            metrics.watch_restarted(kind_name);
            tracing::info!(kind = kind_name, "watch expired: listing again");
        }
        let update = match event {
            watcher::Event::Init => {
                listed.clear();
                continue;
            }
            watcher::Event::InitApply(object) => {
                listed.extend(convert(kind, &resource, object, &metrics));
                continue;
            }
            watcher::Event::InitDone => {
                lists += 1;
                tracing::debug!(kind = kind_name, objects = listed.len(), "listed");
                Update::Listed(kind, std::mem::take(&mut listed))
            }
            watcher::Event::Apply(object) => match convert(kind, &resource, object, &metrics) {
                Some(object) => Update::Apply(Box::new(object)),
                None => continue,
            },
            watcher::Event::Delete(object) => {
                let meta = &object.metadata;
                let namespace = if kind == ObjectKind::IngressClass {
                    ""
                } else {
                    meta.namespace.as_deref().unwrap_or_default()
                };
                let name = meta.name.as_deref().unwrap_or_default();
                Update::Delete(kind, NamespacedName::new(namespace, name))
            }
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

/// One object from the API, without `managedFields`; `None` (logged) when it does not have its
/// kind's shape.
fn convert(
    kind: ObjectKind,
    resource: &ApiResource,
    mut object: DynamicObject,
    metrics: &Metrics,
) -> Option<Object> {
    object.metadata.managed_fields = None;
    let name = format!(
        "{}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    );
    let mut value = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(kind = kind.as_str(), object = name, "skipped: {e}");
            metrics.malformed_object(kind.as_str());
            return None;
        }
    };
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    match Object::from_value(value) {
        Ok(object) => Some(object),
        Err(e) => {
            tracing::warn!(kind = kind.as_str(), object = name, "malformed object skipped: {e}");
            metrics.malformed_object(kind.as_str());
            None
        }
    }
}

/// Gets the Secrets the store wants the data of, retrying until the API answers.
async fn fetch_secrets(
    client: Client,
    mut wanted: UnboundedReceiver<NamespacedName>,
    updates: UnboundedSender<Update>,
) {
    while let Some(key) = wanted.recv().await {
        let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
        let mut delay = Duration::from_millis(100);
        let secret = loop {
            match api.get_opt(&key.name).await {
                Ok(secret) => break secret,
                Err(e) => {
                    tracing::warn!(secret = %key, "cannot get a referenced secret, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        let secret = secret.map(|mut s| {
            s.metadata.managed_fields = None;
            Box::new(s)
        });
        if updates.send(Update::Fetched(key, secret)).is_err() {
            return;
        }
    }
}
