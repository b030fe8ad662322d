//! A small in-memory Kubernetes API server on loopback, for testing cluster mode where no real
//! one is available.
//!
//! It keeps JSON objects per resource path and speaks the parts of the API a controller uses:
//! list (with a collection `resourceVersion`), watch (newline-delimited events after a given
//! `resourceVersion`, until the client goes away or `timeoutSeconds`), get, create, replace
//! (with `resourceVersion` preconditions: a stale write gets 409), merge patch (also on the
//! `status` subresource), delete, and metadata-only lists. It validates nothing else, so
//! EndpointSlices may point at loopback addresses. Tests change objects through [`KubeApi::apply`]
//! and [`KubeApi::delete`], which watchers see like any other change, and can play an outage: the
//! server answering 503 ([`KubeApi::set_down`]), or gone, its port refusing connections and every
//! open one closed ([`KubeApi::set_unreachable`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

/// Kinds the server knows: (collection path prefix, plural, kind, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("/apis/networking.k8s.io/v1", "ingresses", "Ingress", true),
    ("/apis/networking.k8s.io/v1", "ingressclasses", "IngressClass", false),
    ("/api/v1", "services", "Service", true),
    ("/api/v1", "endpoints", "Endpoints", true),
    ("/api/v1", "secrets", "Secret", true),
    ("/api/v1", "configmaps", "ConfigMap", true),
    ("/apis/discovery.k8s.io/v1", "endpointslices", "EndpointSlice", true),
    ("/apis/coordination.k8s.io/v1", "leases", "Lease", true),
    ("/apis/events.k8s.io/v1", "events", "Event", true),
];

/// A running fake API server; stops when dropped (with the runtime that serves it).
#[derive(Clone, Debug)]
pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
    down: AtomicBool,
    /// Every request as `METHOD path`, with ` (metadata only)` for metadata-only reads.
    requests: Mutex<Vec<String>>,
    unreachable: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// Every change, for watches that start from an older version.
    history: Vec<WatchEvent>,
}

#[derive(Clone, Debug)]
struct WatchEvent {
    version: u64,
    plural: String,
    namespace: String,
    object: Value,
}

/// What a request is about.
struct Target {
    plural: &'static str,
    kind: &'static str,
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl KubeApi {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API");
        let addr = listener.local_addr().expect("local address");
        let (events, _) = broadcast::channel(4096);
        let unreachable = watch::Sender::new(false);
        let state = Arc::new(State {
            inner: Mutex::default(),
            events,
            down: AtomicBool::new(false),
            requests: Mutex::default(),
            unreachable,
        });
        tokio::spawn(serve(listener, state.clone()));
        Self { addr, state }
    }

    /// A kubeconfig that points at this server, without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.addr
        )
    }

    /// Creates or replaces an object (given as JSON with apiVersion, kind and metadata).
    pub fn apply(&self, object: Value) {
        let kind = object["kind"].as_str().expect("kind");
        let &(_, plural, _, namespaced) =
            KINDS.iter().find(|k| k.2 == kind).expect("a kind the fake API knows");
        let namespace = match object["metadata"]["namespace"].as_str() {
            Some(ns) => ns.to_owned(),
            None if namespaced => "default".to_owned(),
            None => String::new(),
        };
        let name = object["metadata"]["name"].as_str().expect("metadata.name").to_owned();
        let mut inner = self.state.inner.lock().unwrap();
        let existed = inner.objects.contains_key(&(plural.to_string(), namespace.clone(), name.clone()));
        store(
            &self.state,
            &mut inner,
            plural,
            &namespace,
            &name,
            object,
            if existed { "MODIFIED" } else { "ADDED" },
        );
    }

    /// Deletes an object, if it exists.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut inner = self.state.inner.lock().unwrap();
        remove(&self.state, &mut inner, plural, namespace, name);
    }

    /// The stored object.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner.objects.get(&(plural.to_owned(), namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner.objects.iter().filter(|((p, _, _), _)| p == plural).map(|(_, o)| o.clone()).collect()
    }

    /// Every request so far, as `METHOD path`, with ` (metadata only)` for a list that asked for
    /// `PartialObjectMetadataList`.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// While down, every request gets 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// While unreachable, as when the API server's process is gone: every open connection is
    /// closed and the port refuses new ones. Back, the same port accepts again.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.state.unreachable.send_replace(unreachable);
    }
}

/// Accepts and serves connections while reachable; closes them all and stops listening while not.
async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let addr = listener.local_addr().expect("local address");
    let mut listener = Some(listener);
    let mut unreachable = state.unreachable.subscribe();
    loop {
        let Some(open) = &listener else {
            let _ = unreachable.wait_for(|gone| !*gone).await;
            // The port was ours a moment ago; should another socket take it meanwhile, this fails
            // loudly rather than serving elsewhere.
            listener = Some(tokio::net::TcpListener::bind(addr).await.expect("bind the fake API again"));
            continue;
        };
        let accepted = tokio::select! {
            accepted = open.accept() => accepted,
            _ = unreachable.wait_for(|gone| *gone) => {
                listener = None;
                continue;
            }
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let mut unreachable = state.unreachable.subscribe();
            let service = hyper::service::service_fn({
                let state = state.clone();
                move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, request).await) }
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            // Dropping the connection closes its socket.
            tokio::select! {
                _ = connection => {}
                _ = unreachable.wait_for(|gone| *gone) => {}
            }
        });
    }
}

fn store(
    state: &State,
    inner: &mut Inner,
    plural: &str,
    namespace: &str,
    name: &str,
    mut object: Value,
    change: &str,
) -> Value {
    inner.version += 1;
    let version = inner.version;
    let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
    let uid = inner
        .objects
        .get(&key)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("uid-{version}"));
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    metadata.insert("resourceVersion".into(), version.to_string().into());
    metadata.insert("uid".into(), uid.into());
    metadata.entry("creationTimestamp").or_insert_with(|| "2026-01-01T00:00:00Z".into());
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), namespace.into());
    }
    inner.objects.insert(key, object.clone());
    let event = WatchEvent {
        version,
        plural: plural.to_owned(),
        namespace: namespace.to_owned(),
        object: json!({"type": change, "object": object}),
    };
    inner.history.push(event.clone());
    let _ = state.events.send(event);
    object
}

fn remove(state: &State, inner: &mut Inner, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let mut object = inner.objects.remove(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))?;
    inner.version += 1;
    let version = inner.version;
    object["metadata"]["resourceVersion"] = version.to_string().into();
    let event = WatchEvent {
        version,
        plural: plural.to_owned(),
        namespace: namespace.to_owned(),
        object: json!({"type": "DELETED", "object": object}),
    };
    inner.history.push(event.clone());
    let _ = state.events.send(event);
    Some(object)
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn respond(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("a valid response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    respond(code, body)
}

/// Parses `/api/v1/...` and `/apis/group/version/...` paths.
fn target(path: &str) -> Option<Target> {
    let (prefix, rest) = KINDS.iter().find_map(|(prefix, ..)| {
        let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
        Some((*prefix, rest))
    })?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    let mut namespace = None;
    if parts.first() == Some(&"namespaces") && parts.len() >= 3 {
        namespace = Some(parts[1].to_owned());
        parts.drain(..2);
    }
    let plural = parts.first()?;
    let &(_, plural, kind, _) = KINDS.iter().find(|k| k.0 == prefix && k.1 == *plural)?;
    let api_version = prefix.trim_start_matches("/apis/").trim_start_matches("/api/").to_owned();
    Some(Target {
        plural,
        kind,
        api_version,
        namespace,
        name: parts.get(1).map(|s| (*s).to_owned()),
        status: parts.get(2) == Some(&"status"),
    })
}

fn query(request: &Request<Incoming>, name: &str) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

async fn handle(state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    if state.down.load(Ordering::SeqCst) {
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "the fake API is down");
    }
    let Some(target) = target(request.uri().path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such resource");
    };
    // Metadata-only reads (kube's `list_metadata`): objects without their content.
    let metadata_only = request
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
    let seen = format!(
        "{} {}{}",
        request.method(),
        request.uri().path(),
        if metadata_only { " (metadata only)" } else { "" }
    );
    state.requests.lock().unwrap().push(seen);
    let watch = query(&request, "watch").is_some_and(|w| w == "true" || w == "1");
    let method = request.method().clone();
    let body: Value = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        let bytes = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
        }
    } else if watch {
        let from = query(&request, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let timeout = query(&request, "timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290);
        return watch_response(state, &target, from, timeout);
    } else {
        Value::Null
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    let mut inner = state.inner.lock().unwrap();
    match (method, &target.name) {
        (Method::GET, None) => {
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|((p, ns, _), _)| {
                    p == target.plural && (target.namespace.is_none() || *ns == namespace)
                })
                .map(|(_, o)| match metadata_only {
                    true => json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]}),
                    false => o.clone(),
                })
                .collect();
            let (kind, api_version) = match metadata_only {
                true => ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1".to_owned()),
                false => (format!("{}List", target.kind), target.api_version.clone()),
            };
            let list = json!({
                "kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": inner.version.to_string()}, "items": items,
            });
            respond(StatusCode::OK, list)
        }
        (Method::GET, Some(name)) => {
            match inner.objects.get(&(target.plural.to_owned(), namespace, name.clone())) {
                Some(object) => respond(StatusCode::OK, object.clone()),
                None => {
                    status(StatusCode::NOT_FOUND, "NotFound", &format!("{} {name} not found", target.plural))
                }
            }
        }
        (Method::POST, None) => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let name = if name.is_empty() {
                let prefix = body["metadata"]["generateName"].as_str().unwrap_or("object-");
                format!("{prefix}{}", inner.version + 1)
            } else {
                name
            };
            if inner.objects.contains_key(&(target.plural.to_owned(), namespace.clone(), name.clone())) {
                return status(StatusCode::CONFLICT, "AlreadyExists", &format!("{name} already exists"));
            }
            let mut body = body;
            body["metadata"]["name"] = name.clone().into();
            body["apiVersion"] = target.api_version.clone().into();
            body["kind"] = target.kind.into();
            let created = store(state, &mut inner, target.plural, &namespace, &name, body, "ADDED");
            respond(StatusCode::CREATED, created)
        }
        (Method::PUT, Some(name)) => {
            let key = (target.plural.to_owned(), namespace.clone(), name.clone());
            let Some(current) = inner.objects.get(&key) else {
                return status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found"));
            };
            let expected = body["metadata"]["resourceVersion"].as_str();
            if expected.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
                return status(StatusCode::CONFLICT, "Conflict", "the object has been modified");
            }
            let mut body = body;
            body["apiVersion"] = target.api_version.clone().into();
            body["kind"] = target.kind.into();
            let replaced = store(state, &mut inner, target.plural, &namespace, name, body, "MODIFIED");
            respond(StatusCode::OK, replaced)
        }
        (Method::PATCH, Some(name)) => {
            let key = (target.plural.to_owned(), namespace.clone(), name.clone());
            let Some(mut object) = inner.objects.get(&key).cloned() else {
                return status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found"));
            };
            let patch = if target.status { json!({"status": body["status"].clone()}) } else { body };
            merge(&mut object, &patch);
            let patched = store(state, &mut inner, target.plural, &namespace, name, object, "MODIFIED");
            respond(StatusCode::OK, patched)
        }
        (Method::DELETE, Some(name)) => match remove(state, &mut inner, target.plural, &namespace, name) {
            Some(object) => respond(StatusCode::OK, object),
            None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
        },
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the fake API"),
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn watch_response(state: &Arc<State>, target: &Target, from: u64, timeout: u64) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let mut live = state.events.subscribe();
    let backlog: Vec<WatchEvent> = {
        let inner = state.inner.lock().unwrap();
        inner.history.iter().filter(|e| e.version > from).cloned().collect()
    };
    let plural = target.plural;
    let namespace = target.namespace.clone();
    let state = state.clone();
    let matches =
        move |e: &WatchEvent| e.plural == plural && namespace.as_ref().is_none_or(|ns| *ns == e.namespace);
    tokio::spawn(async move {
        let send = |event: &WatchEvent| {
            let mut line = event.object.to_string();
            line.push('\n');
            tx.try_send(Ok(Frame::data(Bytes::from(line)))).is_ok()
        };
        let mut last = from;
        for event in backlog.iter().filter(|e| matches(e)) {
            if !send(event) {
                return;
            }
            last = event.version;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        let mut deadline = std::pin::pin!(deadline);
        let mut down_check = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) if event.version > last && matches(&event) => {
                        last = event.version;
                        if !send(&event) { return }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = down_check.tick() => {
                    if state.down.load(Ordering::SeqCst) || tx.is_closed() { return }
                }
                () = &mut deadline => return,
            }
        }
    });
    let stream = frames(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response")
}

/// A receiver as a stream of body frames.
fn frames(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
