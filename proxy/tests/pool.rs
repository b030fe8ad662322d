//! Connections to endpoints are kept and used again: one HTTP/1.1 connection serves request
//! after request, one HTTP/2 connection carries many requests at once, TLS connections are kept
//! like plain ones, and a new table that keeps an endpoint keeps its connections.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};
use ostium_model::{PathRule, Policy, Protocol};
use ostium_test_support::{EchoBackend, echoed};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `requests` requests one after another, each on a new client connection.
async fn get_many(proxy: SocketAddr, host: &str, requests: usize) {
    for i in 0..requests {
        let answer = get(proxy, host, &format!("/{i}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
}

#[tokio::test]
async fn one_upstream_connection_serves_request_after_request() {
    let backend = EchoBackend::start("b").await;
    let table = TableBuilder::new().site(None, "svc", backend.addr, Policy::default()).build();
    let proxy = Harness::start(table).await;
    get_many(proxy.http, "h", 50).await;
    assert_eq!(backend.requests(), 50);
    assert_eq!(backend.connections(), 1, "every request after the first reused the first connection");
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_then_kept() {
    let backend = EchoBackend::start("b").await;
    let table = TableBuilder::new().site(None, "svc", backend.addr, Policy::default()).build();
    let proxy = Harness::start(table).await;
    for _ in 0..5 {
        let batch: Vec<_> = (0..8)
            .map(|i| tokio::spawn(get(proxy.http, "h", if i % 2 == 0 { "/a" } else { "/b" })))
            .collect();
        for request in batch {
            assert_eq!(request.await.unwrap().status, 200);
        }
    }
    assert_eq!(backend.requests(), 40);
    let opened = backend.connections();
    assert!((1..=8).contains(&opened), "8 at a time need at most 8 connections, opened {opened}");
}

#[tokio::test]
async fn https_endpoints_keep_their_connections_too() {
    let backend = EchoBackend::start_tls("b", backend_tls("b.internal")).await;
    let table = TableBuilder::new().https_site("h", "svc", backend.addr, Policy::default()).build();
    let proxy = Harness::start(table).await;
    get_many(proxy.http, "h", 20).await;
    assert_eq!(backend.connections(), 1, "one TLS handshake for 20 requests");
}

#[tokio::test]
async fn one_http2_connection_carries_concurrent_requests() {
    let backend = EchoBackend::start("grpc").await;
    let table = TableBuilder::new()
        .route_protocol("/", "svc", endpoints("svc", &[backend.addr]), Protocol::Grpc)
        .build();
    let proxy = Harness::start(table).await;
    // The first request makes the connection; the rest share it, 16 at a time, from 4 client
    // connections.
    let answer = get(proxy.http, "h", "/first").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed(&answer.body, "version"), Some("HTTP/2.0"));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(h2c(proxy.http).await.0);
    }
    let mut requests = Vec::new();
    for i in 0..16 {
        let mut client = clients[i % 4].clone();
        requests.push(tokio::spawn(async move {
            let request = Request::get(format!("http://h/{i}")).body(Empty::new()).unwrap();
            let response = client.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            status
        }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(backend.requests(), 17);
    assert_eq!(backend.connections(), 1, "17 requests, one HTTP/2 connection");
}

#[tokio::test]
async fn a_new_table_with_the_same_endpoints_keeps_their_connections() {
    let backend = EchoBackend::start("b").await;
    // The controller shares a Service port's endpoint set between the tables that use it.
    let target = endpoints("svc", &[backend.addr]);
    let table = |extra: &str| {
        TableBuilder::new()
            .route_with(None, PathRule::prefix("/").unwrap(), "svc", target.clone(), Policy::default())
            .route_with(None, PathRule::prefix(extra).unwrap(), "svc", target.clone(), Policy::default())
            .build()
    };
    let proxy = Harness::start(table("/one")).await;
    get_many(proxy.http, "h", 5).await;
    for extra in ["/two", "/three", "/four"] {
        proxy.publish(table(extra));
        get_many(proxy.http, "h", 5).await;
    }
    assert_eq!(backend.requests(), 20);
    assert_eq!(backend.connections(), 1, "three table swaps, still the first connection");

    // A table with endpoints of its own (a new set) starts over with them, once.
    proxy.publish(TableBuilder::new().site(None, "svc", backend.addr, Policy::default()).build());
    get_many(proxy.http, "h", 5).await;
    assert_eq!(backend.connections(), 2);
}

/// A raw backend that runs `serve` on each connection it accepts, and counts them.
async fn counting_backend<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// Answers one request, keeps the connection open a moment (no `Connection: close`), then
/// closes it.
async fn answer_once_then_close(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
        head.push(byte[0]);
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_connection_the_endpoint_closed_while_idle_is_not_used() {
    let (addr, accepted) = counting_backend(answer_once_then_close).await;
    let table = TableBuilder::new().site(None, "svc", addr, Policy::default()).build();
    let proxy = Harness::start(table).await;
    for i in 0..5 {
        let answer = get(proxy.http, "h", &format!("/{i}")).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"), "{answer:?}");
        // The endpoint closes the pooled connection meanwhile.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 5, "a new connection for each request");
}

#[tokio::test]
async fn a_connection_that_closes_at_once_is_not_dialled_again_and_again() {
    // An endpoint that accepts and hangs up: each try makes one connection, and fails.
    let (addr, accepted) = counting_backend(|stream| async move { drop(stream) }).await;
    let table = TableBuilder::new().site(None, "svc", addr, Policy::default()).build();
    let proxy = Harness::start(table).await;
    for i in 0..10 {
        assert_eq!(get(proxy.http, "h", &format!("/{i}")).await.status, 502);
    }
    // ingress-nginx's default is 3 tries a request.
    let made = accepted.load(Ordering::Relaxed);
    assert!((10..=30).contains(&made), "10 requests made {made} connections");
}

#[tokio::test]
async fn a_closed_http2_connection_is_replaced() {
    let backend = EchoBackend::start("grpc").await;
    let addr = backend.addr;
    let table =
        TableBuilder::new().route_protocol("/", "svc", endpoints("svc", &[addr]), Protocol::Grpc).build();
    let proxy = Harness::start(table).await;
    assert_eq!(get(proxy.http, "h", "/").await.status, 200);
    // The endpoint restarts on the same address: the pooled connection is gone with it.
    drop(backend);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let backend = EchoBackend::start_on("grpc", addr).await.unwrap();
    let answer = get(proxy.http, "h", "/again").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed(&answer.body, "version"), Some("HTTP/2.0"));
    assert_eq!(backend.connections(), 1);
}
