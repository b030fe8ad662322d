//! Timeouts, retries and request bodies on loopback: `proxy-connect-timeout`,
//! `proxy-next-upstream` (+ `-tries`, `-timeout`) and `proxy-request-buffering`, as nginx's
//! `proxy_next_upstream` and `proxy_request_buffering` behave (ngx_http_upstream_next and
//! ngx_http_upstream_test_next in ngx_http_upstream.c) with ingress-nginx's defaults
//! (internal/ingress/controller/config/config.go: "error timeout", 3 tries, no time limit,
//! request buffering on) and annotations (internal/ingress/annotations/proxy/main.go).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ostium_model::{NextUpstream, PathRule, Policy, Protocol, RetryCondition, RetryConditions};
use ostium_proxy::ProxyConfig;
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn policy(change: impl FnOnce(&mut Policy)) -> Policy {
    let mut policy = Policy::default();
    change(&mut policy);
    policy
}

/// `proxy-next-upstream` with these conditions (ingress-nginx's tries and timeout).
fn retry_on(conditions: &[RetryCondition]) -> NextUpstream {
    let conditions = conditions.iter().fold(RetryConditions::default(), |set, c| set.with(*c));
    NextUpstream { conditions, ..NextUpstream::default() }
}

/// Everything under `/` to `service` on `addrs`, with `policy`.
fn site(addrs: &[SocketAddr], policy: Policy) -> ostium_model::Table {
    TableBuilder::new()
        .route_with(None, PathRule::prefix("/").unwrap(), "svc", endpoints("svc", addrs), policy)
        .build()
}

async fn echo_backends(n: usize) -> Vec<EchoBackend> {
    let mut backends = Vec::new();
    for i in 0..n {
        backends.push(EchoBackend::start(&format!("b{i}")).await);
    }
    backends
}

fn addrs(backends: &[EchoBackend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

fn requests(backends: &[EchoBackend]) -> Vec<usize> {
    backends.iter().map(EchoBackend::requests).collect()
}

/// A backend that reads each request (head and `Content-Length` body), then closes the
/// connection without answering; it counts the requests it read.
async fn hanging_up_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if stream.read_exact(&mut body).await.is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, count)
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A request with a `Content-Length` body.
fn with_body(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

// --- proxy-connect-timeout ---

/// A listening socket that completes no more handshakes: its accept queue (backlog 0) is full,
/// so the kernel drops further SYNs and a connection attempt hangs until its timeout.
async fn unanswering_address() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => return (addr, listener, queued),
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

/// nginx.tmpl writes `proxy_connect_timeout {{ $location.Proxy.ConnectTimeout }}s;` per location.
#[tokio::test]
async fn a_route_connect_timeout_bounds_a_connection_nobody_accepts() {
    let (addr, _listener, _queued) = unanswering_address().await;
    let one_second =
        policy(|p| (p.upstream_timeouts.connect, p.next_upstream.tries) = (Some(Duration::from_secs(1)), 1));
    // The proxy's own connect timeout is far longer than the 10 s the client waits.
    let config =
        ProxyConfig { access_log: false, connect_timeout: Duration::from_secs(60), ..ProxyConfig::default() };
    let proxy = Harness::start_with(site(&[addr], one_second), config).await;
    let answer = get(proxy.http, "h", "/").await;
    assert_eq!(answer.status, 504, "{}", answer.head);
}

/// nginx's connect timeout covers the TLS handshake with an HTTPS upstream
/// (ngx_http_upstream_ssl_init_connection arms it): an endpoint that accepts and never answers
/// the handshake is given up on in time.
#[tokio::test]
async fn the_connect_timeout_covers_the_tls_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream); // accepted, never a byte back
        }
    });
    let table =
        TableBuilder::new().route_protocol("/", "tls", endpoints("tls", &[silent]), Protocol::Https).build();
    // The read timeout, the only other clock, is far longer than the 10 s the client waits.
    let config =
        ProxyConfig { access_log: false, connect_timeout: Duration::from_secs(1), ..ProxyConfig::default() };
    let proxy = Harness::start_with(table, config).await;
    let answer = raw(proxy.http, &with_body("POST", "/", b"buffered")).await;
    assert_eq!(answer.status, 504, "{}", answer.head);
}

// --- proxy-next-upstream ---

/// nginx passes a request whose connection was refused to the next server under `error` (the
/// default), whatever its method: nothing was sent (ngx_http_upstream_next only adds the
/// non-idempotent flag once `u->request_sent`). The buffered body is sent whole.
#[tokio::test]
async fn a_refused_connection_moves_on_even_for_a_post_with_a_body() {
    let good = EchoBackend::start("good").await;
    let refused = closed_port().await;
    let proxy = Harness::start(site(&[refused, good.addr], Policy::default())).await;
    for i in 0..4 {
        let answer = raw(proxy.http, &with_body("POST", "/upload", &[b'x'; 20_000])).await;
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(echoed(&answer.body, "received"), Some("20000"));
    }
    assert_eq!(good.requests(), 4);
}

#[tokio::test]
async fn off_gives_the_first_failure_to_the_client() {
    let good = EchoBackend::start("good").await;
    let refused = closed_port().await;
    let off = policy(|p| p.next_upstream = retry_on(&[]));
    let proxy = Harness::start(site(&[refused, good.addr], off)).await;
    // Round robin over two endpoints: one of two requests meets the refusing one.
    let statuses = [get(proxy.http, "h", "/").await.status, get(proxy.http, "h", "/").await.status];
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");
}

/// A listed status is not passed on while tries are left: the next endpoint is tried, never one
/// already tried while others are left; the last try's response is passed on as it came.
#[tokio::test]
async fn a_listed_status_is_tried_on_other_endpoints_up_to_the_tries() {
    let backends = echo_backends(4).await;
    let on_502 = policy(|p| p.next_upstream = retry_on(&[RetryCondition::Status(502)]));
    let proxy = Harness::start(site(&addrs(&backends), on_502)).await;
    let answer = get(proxy.http, "h", "/status/502").await;
    assert_eq!(answer.status, 502);
    assert!(echoed(&answer.body, "backend").is_some(), "the endpoint's own answer: {}", answer.body);
    let counts = requests(&backends);
    assert_eq!(counts.iter().sum::<usize>(), 3, "three tries: {counts:?}");
    assert!(counts.iter().all(|&n| n <= 1), "no endpoint twice: {counts:?}");
}

#[tokio::test]
async fn a_status_not_listed_is_passed_on_at_once() {
    let backends = echo_backends(2).await;
    let proxy = Harness::start(site(&addrs(&backends), Policy::default())).await;
    assert_eq!(get(proxy.http, "h", "/status/502").await.status, 502);
    assert_eq!(requests(&backends).iter().sum::<usize>(), 1, "error timeout: a 502 answer is final");
}

/// `proxy-next-upstream-tries: 0`: nginx's "no limit" is each endpoint once here; more tries
/// than endpoints go round again.
#[tokio::test]
async fn tries_beyond_the_endpoints_go_round_again_and_zero_means_each_once() {
    let backends = echo_backends(3).await;
    let each_once =
        policy(|p| p.next_upstream = NextUpstream { tries: 0, ..retry_on(&[RetryCondition::Status(503)]) });
    let proxy = Harness::start(site(&addrs(&backends), each_once)).await;
    assert_eq!(get(proxy.http, "h", "/status/503").await.status, 503);
    assert_eq!(requests(&backends), [1, 1, 1]);

    let backends = echo_backends(2).await;
    let five =
        policy(|p| p.next_upstream = NextUpstream { tries: 5, ..retry_on(&[RetryCondition::Status(503)]) });
    let proxy = Harness::start(site(&addrs(&backends), five)).await;
    assert_eq!(get(proxy.http, "h", "/status/503").await.status, 503);
    let counts = requests(&backends);
    assert_eq!(counts.iter().sum::<usize>(), 5);
    assert!(counts.iter().all(|&n| n >= 2), "round and round: {counts:?}");
}

/// nginx never passes a sent POST, LOCK or PATCH to the next server unless `non_idempotent` is
/// listed; ingress-nginx's buildNextUpstream keeps the token.
#[tokio::test]
async fn a_post_is_sent_again_only_with_non_idempotent() {
    let backends = echo_backends(3).await;
    let on_502 = retry_on(&[RetryCondition::Status(502)]);
    let proxy = Harness::start(site(&addrs(&backends), policy(|p| p.next_upstream = on_502))).await;
    for method in ["POST", "PATCH", "LOCK"] {
        assert_eq!(raw(proxy.http, &with_body(method, "/status/502", b"once")).await.status, 502);
    }
    assert_eq!(requests(&backends).iter().sum::<usize>(), 3, "one try per request");
    assert_eq!(raw(proxy.http, &with_body("PUT", "/status/502", b"idem")).await.status, 502);
    assert_eq!(requests(&backends).iter().sum::<usize>(), 6, "PUT is idempotent: three tries");

    let backends = echo_backends(3).await;
    let both = NextUpstream { non_idempotent: true, ..on_502 };
    let proxy = Harness::start(site(&addrs(&backends), policy(|p| p.next_upstream = both))).await;
    let answer = raw(proxy.http, &with_body("POST", "/status/502", b"again")).await;
    assert_eq!(answer.status, 502);
    assert_eq!(requests(&backends), [1, 1, 1]);
}

/// A try that sent the request and got no answer is an `error`; with a buffered body the next
/// endpoint gets the whole body again (here past `client-body-buffer-size`, from the file).
#[tokio::test]
async fn a_buffered_body_is_sent_again_after_an_endpoint_hangs_up() {
    let (hanging_up, hung_up) = hanging_up_backend().await;
    let good = EchoBackend::start("good").await;
    let proxy = Harness::start(site(&[hanging_up, good.addr], Policy::default())).await;
    for i in 0..2 {
        let answer = raw(proxy.http, &with_body("PUT", "/upload", &[b'y'; 20_000])).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.head);
        assert_eq!(echoed(&answer.body, "received"), Some("20000"));
    }
    assert!(hung_up.load(Ordering::Relaxed) >= 1, "one request met the endpoint that hangs up");
}

/// nginx does not pass a request whose body it streams (`proxy_request_buffering off`) to the
/// next server once sent: `u->request_sent && r->request_body_no_buffering`.
#[tokio::test]
async fn a_streamed_body_is_not_sent_again() {
    let (hanging_up, hung_up) = hanging_up_backend().await;
    let good = EchoBackend::start("good").await;
    let streamed = policy(|p| p.request_buffering = false);
    let proxy = Harness::start(site(&[hanging_up, good.addr], streamed)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(raw(proxy.http, &with_body("PUT", "/upload", &[b'z'; 20_000])).await.status);
    }
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");
    assert_eq!((hung_up.load(Ordering::Relaxed), good.requests()), (1, 1));
}

/// A refused connection read nothing of a streamed body, so it can still go to the next endpoint
/// (nginx checks `u->request_sent`, not the buffering, first).
#[tokio::test]
async fn a_streamed_body_moves_on_after_a_refused_connection() {
    let good = EchoBackend::start("good").await;
    let refused = closed_port().await;
    let streamed = policy(|p| p.request_buffering = false);
    let proxy = Harness::start(site(&[refused, good.addr], streamed)).await;
    for i in 0..2 {
        let answer = raw(proxy.http, &with_body("POST", "/upload", &[b'x'; 20_000])).await;
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(echoed(&answer.body, "received"), Some("20000"));
    }
}

/// The answer is decided before anything goes to the client: a response cut short after its
/// head is the client's, and no other endpoint is asked.
#[tokio::test]
async fn nothing_is_tried_again_once_the_response_head_is_taken() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
        }
    });
    let good = EchoBackend::start("good").await;
    let proxy = Harness::start(site(&[cut, good.addr], Policy::default())).await;
    let answers = [get(proxy.http, "h", "/").await, get(proxy.http, "h", "/").await];
    let cut_short = answers.iter().find(|a| a.body == "0123456789").expect("one met the endpoint that cuts");
    assert_eq!(cut_short.status, 200);
    assert_eq!(good.requests(), 1, "only the other request reached it");
}

/// `proxy-next-upstream-timeout`: no try starts once it has passed since the first began (the
/// try under way is not cut short).
#[tokio::test]
async fn no_try_starts_after_the_next_upstream_timeout() {
    let backends = echo_backends(4).await;
    let limited = policy(|p| {
        p.upstream_timeouts.read = Some(Duration::from_millis(500));
        p.next_upstream =
            NextUpstream { tries: 0, timeout: Some(Duration::from_millis(750)), ..p.next_upstream };
    });
    // Each try times out after 500 ms: the second starts at 0.5 s, within the limit; a third
    // would start at 1 s, past it.
    let proxy = Harness::start(site(&addrs(&backends), limited)).await;
    assert_eq!(get(proxy.http, "h", "/delay/5000").await.status, 504);
    assert_eq!(requests(&backends).iter().sum::<usize>(), 2);
}

// --- proxy-request-buffering ---

/// `proxy_request_buffering on` (ingress-nginx's default): nginx reads the whole body before it
/// connects, and sends it with its length.
#[tokio::test]
async fn a_buffered_body_reaches_the_endpoint_complete_and_with_its_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Harness::start(site(&[addr], Policy::default())).await;
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    // Give a proxy that did not wait for the body every chance to connect now.
    let early = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(early.is_err(), "the endpoint was contacted before the body was complete");
    client.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let (mut upstream, _) =
        tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    let head = read_head(&mut upstream).await.to_ascii_lowercase();
    assert!(head.contains("content-length: 11\r\n") && !head.contains("transfer-encoding"), "{head}");
    let mut body = [0u8; 11];
    upstream.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"hello world");
}

/// `proxy_request_buffering off`: the endpoint gets the request while the client still sends.
#[tokio::test]
async fn a_streamed_body_reaches_the_endpoint_as_it_arrives() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streamed = policy(|p| p.request_buffering = false);
    let proxy = Harness::start(site(&[addr], streamed)).await;
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let (mut upstream, _) =
        tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    let head = read_head(&mut upstream).await.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked") && !head.contains("content-length"), "{head}");
    let mut chunk = [0u8; 10];
    upstream.read_exact(&mut chunk).await.unwrap();
    assert_eq!(&chunk, b"5\r\nhello\r\n", "the first chunk came before the client sent the rest");
    client.write_all(b"0\r\n\r\n").await.unwrap();
}

/// nginx's gRPC module always streams the request body (`r->request_body_no_buffering = 1` in
/// ngx_http_grpc_handler), whatever `proxy_request_buffering` says.
#[tokio::test]
async fn grpc_request_bodies_are_streamed_even_when_buffering_is_on() {
    let backend = EchoBackend::start("grpc").await;
    let table = TableBuilder::new()
        .route_protocol("/", "grpc", endpoints("grpc", &[backend.addr]), Protocol::Grpc)
        .build();
    let proxy = Harness::start(table).await;
    let chunked = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let answer = raw(proxy.http, chunked).await;
    assert_eq!(answer.status, 200);
    assert_eq!(echoed(&answer.body, "received"), Some("5"));
    assert!(echoed_header(&answer.body, "content-length").is_empty(), "streamed: {}", answer.body);
}

/// Only `client-body-buffer-size` of a body is kept in memory: the rest needs the temporary
/// directory, and without one the request fails (500, as nginx when it cannot write
/// client_body_temp_path) rather than being held in memory.
#[tokio::test]
async fn a_body_past_the_memory_buffer_goes_to_the_temporary_directory() {
    let backend = EchoBackend::start("a").await;
    let buffer_1k = policy(|p| p.client_body_buffer_size = 1024);
    let config = ProxyConfig {
        access_log: false,
        body_temp_dir: "/nonexistent/ostium-test".into(),
        ..ProxyConfig::default()
    };
    let proxy = Harness::start_with(site(&[backend.addr], buffer_1k), config).await;
    let fits = raw(proxy.http, &with_body("POST", "/upload", &[b'a'; 1024])).await;
    assert_eq!(echoed(&fits.body, "received"), Some("1024"));
    assert_eq!(raw(proxy.http, &with_body("POST", "/upload", &[b'a'; 1025])).await.status, 500);
    assert_eq!(backend.requests(), 1, "the endpoint never saw the body that could not be kept");
}
