//! Cluster source: one watcher per kind on the Kubernetes API, with backoff.
//!
//! Objects are read straight into their kind's type through a guard, so a single malformed
//! object is logged and skipped instead of failing its whole list. `managedFields` are dropped
//! before anything is kept. A watcher's (re)list is sent as one complete list, so objects deleted
//! while the watch was down disappear too. During an API outage the watchers retry with backoff
//! while the proxy keeps serving the last table.
//!
//! Recovery after an outage is bounded: every retry waits at most [`MAX_RETRY_DELAY`] (jittered,
//! so replicas do not reconnect in lockstep), and the client's connections are probed with TCP
//! keepalives and time out on connect, so a connection to an API server that went away without
//! closing it is dropped instead of being waited on or reused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::client::ConfigExt;
use kube::core::DynamicResourceScope;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use ostium_model::NamespacedName;
use ostium_translate::{Kind, KindVisitor, Malformed, ObjectKind, Reference, for_each_kind};
use serde::Deserialize;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::metrics::Metrics;
use crate::store::{Change, Update};

/// The longest wait between two attempts to reach the API server, jitter included: after an
/// outage, watches resume at most this long after the API server is back.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// A TCP connection to the API server must be established within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An idle connection (a quiet watch, a pooled one) is probed after this long without traffic,
/// then every [`KEEPALIVE_INTERVAL`]; after [`KEEPALIVE_PROBES`] unanswered probes it is dropped.
/// A probe to an API server that restarted is answered with a reset, which ends the connection
/// at once.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;

/// A request whose bytes stay unacknowledged this long has lost its connection.
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(10);

/// Pooled connections unused this long are closed rather than kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client for the API server of `config`: kube's usual stack (base URL, credentials, extra
/// headers, TLS) over connections that notice when the API server has gone (see the module
/// documentation). Its requests are not retried: our loops retry, and must see failures.
pub(crate) fn client(config: &kube::Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        // Only kube's own client tunnels through the kubeconfig's `proxy-url`.
        tracing::warn!(
            "the kubeconfig names a proxy: its connections keep kube's defaults (an outage is noticed later)"
        );
        return Client::try_from(config.clone());
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_keepalive(Some(KEEPALIVE_IDLE));
    tcp.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    tcp.set_keepalive_retries(Some(KEEPALIVE_PROBES));
    #[cfg(target_os = "linux")]
    tcp.set_tcp_user_timeout(Some(UNACKNOWLEDGED_TIMEOUT));
    let connector = config.rustls_https_connector_with_connector(tcp)?;
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// The delays between attempts to reach the API server: doubling from 200 ms up to half of
/// [`MAX_RETRY_DELAY`], each stretched by a random share of itself (up to double) so that many
/// replicas spread their retries.
pub(crate) fn retry_backoff() -> impl Backoff {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_RETRY_DELAY / 2)
        .with_jitter()
        .without_max_times();
    watcher::ExponentialBackoff::from(builder)
}

/// An error with its causes, `a: b: c`: kube's own message often leaves out why (`client error
/// (Connect)` rather than the refused connection behind it).
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        source = cause.source();
    }
    text
}

/// Starts a watcher and a fetcher for every kind translation reads. Returns the kinds whose
/// initial list the store must wait for.
pub(crate) async fn spawn(
    client: Client,
    api_url: &http::Uri,
    namespace: Option<&str>,
    updates: UnboundedSender<Update>,
    fetches: UnboundedReceiver<Reference>,
    metrics: Metrics,
) -> Vec<ObjectKind> {
    // EndpointSlices, or the Endpoints they replaced on API servers too old to have them.
    let slices = api::<EndpointSlice>(&client, namespace);
    let unwatched = match slices.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::warn!("the API server has no discovery.k8s.io/v1 EndpointSlices; watching Endpoints");
            ObjectKind::EndpointSlice
        }
        _ => ObjectKind::Endpoints,
    };
    let mut watchers = Watchers {
        client,
        api_url: api_url.to_string().into(),
        namespace,
        updates,
        metrics,
        unwatched,
        kinds: Vec::new(),
        fetchers: HashMap::new(),
    };
    for_each_kind(&mut watchers);
    tokio::spawn(route_fetches(fetches, watchers.fetchers));
    watchers.kinds
}

/// Starts the watcher and the fetcher of each kind.
struct Watchers<'a> {
    client: Client,
    /// Named in the log when the API cannot be reached.
    api_url: Arc<str>,
    namespace: Option<&'a str>,
    updates: UnboundedSender<Update>,
    metrics: Metrics,
    unwatched: ObjectKind,
    kinds: Vec<ObjectKind>,
    fetchers: HashMap<ObjectKind, UnboundedSender<NamespacedName>>,
}

impl KindVisitor for Watchers<'_> {
    fn visit<K: Kind>(&mut self) {
        if K::OBJECT_KIND == self.unwatched {
            return;
        }
        let api = api::<K>(&self.client, self.namespace);
        tokio::spawn(watch(api, self.api_url.clone(), self.updates.clone(), self.metrics.clone()));
        let (fetcher, wanted) = mpsc::unbounded_channel();
        tokio::spawn(fetch::<K>(self.client.clone(), wanted, self.updates.clone()));
        self.fetchers.insert(K::OBJECT_KIND, fetcher);
        self.kinds.push(K::OBJECT_KIND);
    }
}

/// The API of a kind, in `namespace` when one is given and the kind is namespaced.
fn api<K: Kind>(client: &Client, namespace: Option<&str>) -> Api<Guarded<K>> {
    match namespace {
        Some(namespace) if K::NAMESPACED => Api::namespaced_with(client.clone(), namespace, &()),
        _ => Api::all_with(client.clone(), &()),
    }
}

/// Follows one kind until the store goes away.
async fn watch<K: Kind>(
    api: Api<Guarded<K>>,
    api_url: Arc<str>,
    updates: UnboundedSender<Update>,
    metrics: Metrics,
) {
    let kind = K::OBJECT_KIND.as_str();
    // `any_semantic`: lists may come from the API server's watch cache, as informers do.
    let stream = watcher(api, watcher::Config::default().any_semantic()).backoff(retry_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut listed = Vec::new();
    let mut health = Health::default();
    while let Some(event) = stream.next().await {
        let transition = health.observe(event.as_ref());
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                metrics.watch_error(kind);
                // Logged once per outage; the backoff retries meanwhile.
                if transition == (Transition::Failed { first: true }) {
                    tracing::warn!(kind, api = %api_url, "watch failed, retrying: {}", with_causes(&e));
                } else {
                    tracing::debug!(kind, "watch still failing: {}", with_causes(&e));
                }
                continue;
            }
        };
        match transition {
            Transition::Reconnected => {
                metrics.watch_restarted(kind);
                tracing::info!(kind, "watch reconnected");
            }
            Transition::Expired => {
                metrics.watch_restarted(kind);
                tracing::info!(kind, "watch expired: listing again");
            }
            Transition::Failed { .. } | Transition::Unchanged => {}
        }
        let change = match event {
            watcher::Event::Init => {
                listed.clear();
                continue;
            }
            watcher::Event::InitApply(object) => {
                listed.extend(object.accept(&metrics));
                continue;
            }
            watcher::Event::InitDone => {
                tracing::debug!(kind, objects = listed.len(), "listed");
                Change::Listed(std::mem::take(&mut listed))
            }
            watcher::Event::Apply(object) => match object.accept(&metrics) {
                Some(object) => Change::Apply(object),
                None => continue,
            },
            watcher::Event::Delete(object) => Change::Delete(K::key_of(object.metadata())),
        };
        if updates.send(change.into()).is_err() {
            return;
        }
    }
}

/// What a watch's events say about its health, so that an outage is logged once and a restart
/// is counted when the API server answers again.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
    lists: u64,
}

/// A change in a watch's health, to log and count.
#[derive(Debug, PartialEq, Eq)]
enum Transition {
    /// A call failed; `first` for the first failure since the watch last worked.
    Failed {
        first: bool,
    },
    /// Something came from the API server after failures.
    Reconnected,
    /// A watch that had listed lists again, without a failure first.
    Expired,
    Unchanged,
}

impl Health {
    fn observe<T>(&mut self, event: Result<&watcher::Event<T>, &watcher::Error>) -> Transition {
        match event {
            Err(_) => Transition::Failed { first: !std::mem::replace(&mut self.failing, true) },
            // The watcher announces each (re)list before it asks, retries included: nothing has
            // come from the API server yet.
            Ok(watcher::Event::Init) if self.failing => Transition::Unchanged,
            Ok(watcher::Event::Init) if self.lists > 0 => Transition::Expired,
            Ok(watcher::Event::Init) => Transition::Unchanged,
            Ok(event) => {
                if matches!(event, watcher::Event::InitDone) {
                    self.lists += 1;
                }
                if std::mem::take(&mut self.failing) {
                    Transition::Reconnected
                } else {
                    Transition::Unchanged
                }
            }
        }
    }
}

/// Gets the objects the store wants whole (a Secret's data), retrying until the API answers.
async fn fetch<K: Kind>(
    client: Client,
    mut wanted: UnboundedReceiver<NamespacedName>,
    updates: UnboundedSender<Update>,
) {
    let kind = K::OBJECT_KIND.as_str();
    while let Some(key) = wanted.recv().await {
        let api = api::<K>(&client, Some(&key.namespace));
        let mut delays = retry_backoff();
        let mut failed = false;
        let object = loop {
            match api.get_opt(&key.name).await {
                Ok(object) => break object,
                // Refused for good (no RBAC right to it, a name the API rejects): asking again
                // changes nothing, so it serves as a missing object (which denies what needs it).
                Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                    tracing::warn!(kind, object = %key, "cannot get a referenced object; it counts as missing: {e}");
                    break None;
                }
                Err(e) => {
                    // Once per object; each retry at debug.
                    let e = with_causes(&e);
                    if std::mem::replace(&mut failed, true) {
                        tracing::debug!(kind, object = %key, "still cannot get a referenced object: {e}");
                    } else {
                        tracing::warn!(kind, object = %key, "cannot get a referenced object, retrying: {e}");
                    }
                    tokio::time::sleep(delays.next().unwrap_or(MAX_RETRY_DELAY)).await;
                }
            }
        };
        // A malformed object serves as well as none.
        let object = object.and_then(|o| o.0.ok()).map(Arc::new);
        if updates.send(Change::Fetched(key, object).into()).is_err() {
            return;
        }
    }
}

/// Hands each object the store wants whole to the fetcher of its kind.
async fn route_fetches(
    mut wanted: UnboundedReceiver<Reference>,
    fetchers: HashMap<ObjectKind, UnboundedSender<NamespacedName>>,
) {
    while let Some(Reference { kind, key }) = wanted.recv().await {
        if let Some(fetcher) = fetchers.get(&kind) {
            let _ = fetcher.send(key);
        }
    }
}

/// An object as the API sent it: of its kind's type, or [`Malformed`], so that one malformed
/// object is skipped rather than its whole list failing to read.
#[derive(Clone)]
struct Guarded<K>(Result<K, Malformed>);

impl<K: Kind> Guarded<K> {
    fn metadata(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.metadata(),
            Err(malformed) => &malformed.metadata,
        }
    }

    /// The object, or `None` (logged and counted) when it does not have its kind's shape.
    fn accept(self, metrics: &Metrics) -> Option<Arc<K>> {
        match self.0 {
            Ok(object) => Some(Arc::new(object)),
            Err(Malformed { metadata, reason }) => {
                let kind = K::OBJECT_KIND.as_str();
                let object = K::key_of(&metadata);
                tracing::warn!(kind, object = %object, "malformed object skipped: {reason}");
                metrics.malformed_object(kind);
                None
            }
        }
    }
}

impl<'de, K: Kind> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(K::from_value(value)))
    }
}

impl<K: Kind> kube::Resource for Guarded<K> {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <K as k8s_openapi::Resource>::KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::URL_PATH_SEGMENT.into()
    }

    fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.metadata_mut(),
            Err(malformed) => &mut malformed.metadata,
        }
    }
}

/// Names the object, never shows it (Secret data).
impl<K: Kind> fmt::Debug for Guarded<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", K::OBJECT_KIND.as_str(), K::key_of(self.metadata()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::watcher::{Error, Event};

    use super::{Health, MAX_RETRY_DELAY, Transition, retry_backoff};

    #[test]
    fn retries_start_quickly_wait_at_most_the_cap_and_differ_between_replicas() {
        let delays: Vec<Duration> = retry_backoff().take(40).collect();
        assert!(delays[0] < Duration::from_millis(400), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_RETRY_DELAY), "{delays:?}");
        assert!(delays[10..].iter().all(|d| *d >= MAX_RETRY_DELAY / 2), "{delays:?}");
        let other: Vec<Duration> = retry_backoff().take(40).collect();
        assert_ne!(delays, other, "jitter");
    }

    #[test]
    fn a_list_retried_while_it_fails_is_no_reconnection() {
        let mut health = Health::default();
        let failed = Error::NoResourceVersion;
        assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Unchanged);
        assert_eq!(health.observe::<()>(Err(&failed)), Transition::Failed { first: true });
        // Each retry of the list is announced before it is made, and fails again.
        for _ in 0..3 {
            assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Unchanged);
            assert_eq!(health.observe::<()>(Err(&failed)), Transition::Failed { first: false });
        }
        assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Unchanged);
        assert_eq!(health.observe(Ok(&Event::InitApply(()))), Transition::Reconnected);
        assert_eq!(health.observe(Ok(&Event::<()>::InitDone)), Transition::Unchanged);
        assert_eq!(health.observe(Ok(&Event::Apply(()))), Transition::Unchanged);
    }

    #[test]
    fn an_empty_list_or_a_watch_event_after_failures_is_a_reconnection() {
        let mut health = Health::default();
        let failed = Error::NoResourceVersion;
        assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Unchanged);
        assert_eq!(health.observe(Ok(&Event::<()>::InitDone)), Transition::Unchanged);
        assert_eq!(health.observe::<()>(Err(&failed)), Transition::Failed { first: true });
        assert_eq!(health.observe(Ok(&Event::Delete(()))), Transition::Reconnected);
        assert_eq!(health.observe::<()>(Err(&failed)), Transition::Failed { first: true });
        assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Unchanged);
        assert_eq!(health.observe(Ok(&Event::<()>::InitDone)), Transition::Reconnected);
        // Listing again without a failure first: the watch expired.
        assert_eq!(health.observe(Ok(&Event::<()>::Init)), Transition::Expired);
    }
}
