//! `mirror-target`, `mirror-host`, `mirror-request-body` on loopback, as ingress-nginx's
//! internal mirror location (internal/ingress/controller/template/template.go
//! `buildMirrorLocations`: `proxy_set_header Host <mirror-host>; proxy_pass <mirror-target>;`,
//! with `mirror_request_body` from the annotation; test/e2e/annotations/mirror.go): the mirror
//! gets the client's method, URI and headers, its own `Host`, and the body unless
//! `mirror-request-body: off`. Unlike nginx, the client never waits for the mirror: the tests
//! get the client's answer while the mirror still holds its copy unanswered.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ostium_model::{Mirror, MirrorPath, Policy};
use ostium_proxy::{Proxy, ProxyConfig, ProxyMetrics};
use ostium_test_support::{EchoBackend, echoed};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

/// A request as the mirror received it.
#[derive(Debug)]
struct Received {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A mirror that records each request it gets, and answers only once `answers` has a permit
/// for it (none at first: every copy is held).
async fn mirror_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Received>, Arc<Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (copies, received) = mpsc::unbounded_channel();
    let answers = Arc::new(Semaphore::new(0));
    let allowed = answers.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (copies, allowed) = (copies.clone(), allowed.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (copies, allowed) = (copies.clone(), allowed.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let uri = parts.uri.to_string();
                        let copy =
                            Received { method: parts.method.to_string(), uri, headers: parts.headers, body };
                        let _ = copies.send(copy);
                        allowed.acquire().await.unwrap().forget();
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from("m"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received, answers)
}

fn mirror_to(addr: SocketAddr, path: MirrorPath, request_body: bool) -> Policy {
    let mirror = Mirror {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        path,
        host: HeaderValue::from_static("test.env.com"),
        request_body,
    };
    Policy { mirror: Some(Arc::new(mirror)), ..Policy::default() }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nX-Custom: kept\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn the_mirror_gets_the_method_uri_headers_and_body_while_holding_the_client_to_nothing() {
    let app = EchoBackend::start("app").await;
    let (mirror, mut copies, answers) = mirror_backend().await;
    let policy = mirror_to(mirror, MirrorPath::Fixed("/mirror".into()), true);
    let harness = Harness::start(TableBuilder::new().site(None, "app", app.addr, policy).build()).await;

    // The client's answer arrives while the mirror holds its copy unanswered.
    let answer = raw(harness.http, &post("/upload?page=2", "hello")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(echoed(&answer.body, "received"), Some("5"), "{}", answer.body);
    let copy = copies.recv().await.unwrap();
    assert_eq!(answers.available_permits(), 0, "the copy is still held");

    assert_eq!(copy.method, "POST");
    assert_eq!(copy.uri, "/mirror?page=2", "a fixed path keeps the query");
    assert_eq!(copy.headers["host"], "test.env.com");
    assert_eq!(copy.headers["x-custom"], "kept");
    assert_eq!(copy.headers["content-length"], "5");
    assert_eq!(copy.body, "hello");
    // The mirror location sets no forwarded headers of its own.
    assert!(copy.headers.get("x-forwarded-for").is_none() && copy.headers.get("x-request-id").is_none());
    answers.add_permits(1);
}

#[tokio::test]
async fn request_uri_is_the_clients_and_the_body_stays_back_when_off() {
    let app = EchoBackend::start("app").await;
    let (mirror, mut copies, answers) = mirror_backend().await;
    answers.add_permits(10);
    let path = MirrorPath::WithRequestUri(["/copy".into(), "".into()].into());
    let policy = mirror_to(mirror, path, false);
    let harness = Harness::start(TableBuilder::new().site(None, "app", app.addr, policy).build()).await;

    let answer = raw(harness.http, &post("/upload?page=2", "hello")).await;
    assert_eq!(echoed(&answer.body, "received"), Some("5"), "the endpoint still gets the body");
    let copy = copies.recv().await.unwrap();
    assert_eq!((copy.method.as_str(), copy.uri.as_str()), ("POST", "/copy/upload?page=2"));
    assert!(copy.body.is_empty(), "{:?}", copy.body);
    assert!(copy.headers.get("content-length").is_none_or(|v| v == "0"), "{:?}", copy.headers);
    assert_eq!(copy.headers["x-custom"], "kept");
}

#[tokio::test]
async fn a_dead_mirror_fails_nothing() {
    let app = EchoBackend::start("app").await;
    // Nobody listens; and a listener that never accepts (the copy's connection waits).
    let closed = closed_port().await;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    for mirror in [closed, silent.local_addr().unwrap()] {
        let policy = mirror_to(mirror, MirrorPath::Fixed("/".into()), true);
        let harness = Harness::start(TableBuilder::new().site(None, "app", app.addr, policy).build()).await;
        for _ in 0..3 {
            let answer = raw(harness.http, &post("/upload", "hello")).await;
            assert_eq!(answer.status, 200, "mirror {mirror}");
            assert_eq!(echoed(&answer.body, "received"), Some("5"));
        }
    }
    assert_eq!(app.requests(), 6);
}

#[tokio::test]
async fn copies_beyond_the_bound_are_dropped_and_counted() {
    let app = EchoBackend::start("app").await;
    let (mirror, mut copies, answers) = mirror_backend().await;
    let policy = mirror_to(mirror, MirrorPath::Fixed("/".into()), true);
    let mut registry = prometheus_client::registry::Registry::with_prefix("ostium");
    let metrics = ProxyMetrics::register(&mut registry);
    let store =
        ostium_model::TableStore::new(TableBuilder::new().site(None, "app", app.addr, policy).build());
    let config = ProxyConfig { access_log: false, mirrors_in_flight: 1, ..ProxyConfig::default() };
    let proxy = Proxy::new(store.reader(), config, metrics, provider());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ostium_proxy::serve_http(proxy, listener, std::future::pending()));

    // The first copy is held by the mirror and keeps the one slot; the next two are dropped.
    for _ in 0..3 {
        assert_eq!(raw(addr, &post("/", "hello")).await.status, 200);
    }
    copies.recv().await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("ostium_mirror_requests_dropped_total 2"), "{text}");

    // Once the mirror answers, the slot is free again.
    answers.add_permits(1);
    let mut sent = false;
    for _ in 0..50 {
        assert_eq!(raw(addr, &post("/", "again")).await.status, 200);
        tokio::task::yield_now().await;
        if let Ok(copy) = copies.try_recv() {
            assert_eq!(copy.body, "again");
            sent = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(sent, "no copy was sent after the slot came free");
}

#[tokio::test]
async fn a_mirrored_body_is_read_in_full_first_even_without_request_buffering() {
    // nginx reads the body before making the mirror's subrequest (`mirror_request_body on`).
    let app = EchoBackend::start("app").await;
    let (mirror, mut copies, answers) = mirror_backend().await;
    answers.add_permits(10);
    let policy =
        Policy { request_buffering: false, ..mirror_to(mirror, MirrorPath::Fixed("/m".into()), true) };
    let harness = Harness::start(TableBuilder::new().site(None, "app", app.addr, policy).build()).await;

    let answer = raw(harness.http, &post("/upload", "streamed?")).await;
    assert_eq!(echoed(&answer.body, "received"), Some("9"));
    assert_eq!(copies.recv().await.unwrap().body, "streamed?");
}
