//! Regressions of the security review: connection clocks and limits, request path and header
//! handling, protocol refusals. Each test is named after the behaviour it pins; framing cases
//! are raw bytes, so no client library tidies the request up first.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Empty};
use ostium_model::{
    BasicAuth, ClientLimits, Credentials, Denial, GlobalSettings, PasswordHash, PathRegex, PathRule, Policy,
    Rewrite,
};
use ostium_proxy::{ConnectionLimits, ProxyConfig, ProxyMetrics};
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(change: impl FnOnce(&mut ProxyConfig)) -> ProxyConfig {
    let mut config = ProxyConfig { access_log: false, ..ProxyConfig::default() };
    change(&mut config);
    config
}

fn short_clocks(header: u64, keepalive: u64, http2_idle: u64) -> ConnectionLimits {
    ConnectionLimits {
        client_header_timeout: Duration::from_millis(header),
        keepalive_timeout: Duration::from_millis(keepalive),
        http2_idle_timeout: Duration::from_millis(http2_idle),
        ..ConnectionLimits::default()
    }
}

/// A proxy serving `table` with these connection clocks, in milliseconds.
async fn with_clocks(table: ostium_model::Table, header: u64, keepalive: u64, http2_idle: u64) -> Harness {
    let limits = short_clocks(header, keepalive, http2_idle);
    Harness::start_with(table, config(|c| c.connections = limits)).await
}

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut bytes)).await {
        Ok(_) => Some(bytes),
        Err(_) => None,
    }
}

fn site_table(addr: SocketAddr) -> ostium_model::Table {
    TableBuilder::new().site(None, "a", addr, Policy::default()).build()
}

/// A backend that answers every connection with `response` after reading the request head, or
/// reads nothing at all when `response` is `None`.
async fn raw_backend(response: Option<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Some(response) = response else {
                    tokio::time::sleep(Duration::from_secs(30)).await; // holds the socket, reads nothing
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(response).await;
                tokio::time::sleep(Duration::from_secs(30)).await; // and then stalls
            });
        }
    });
    addr
}

// --- Connections and limits ---

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let proxy = with_clocks(TableBuilder::new().build(), 300, 60_000, 60_000).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed_after_the_header_timeout() {
    let proxy = with_clocks(TableBuilder::new().build(), 300, 60_000, 60_000).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn a_tls_handshake_followed_by_silence_is_closed_after_the_header_timeout() {
    let proxy = with_clocks(TableBuilder::new().build(), 500, 60_000, 60_000).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let stream = TcpStream::connect(proxy.https).await.unwrap();
        let name = ServerName::try_from("a.example").unwrap();
        let mut tls = tls_client(&[alpn]).connect(name, stream).await.unwrap();
        assert!(closed_within(&mut tls, Duration::from_secs(5)).await.is_some(), "{alpn:?}");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let backend = EchoBackend::start("a").await;
    // The header timeout is far longer: only the keep-alive clock can close it in time.
    let proxy = with_clocks(site_table(backend.addr), 30_000, 300, 60_000).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed when idle");
    assert!(bytes.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&bytes));
}

#[tokio::test]
async fn a_slow_request_head_after_a_keep_alive_request_is_timed_by_the_header_timeout() {
    let backend = EchoBackend::start("a").await;
    let proxy = with_clocks(site_table(backend.addr), 400, 30_000, 60_000).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHo").await.unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed mid-head");
    assert!(bytes.starts_with(b"HTTP/1.1 200"));
}

/// A table whose ConfigMap sets the client connection keys.
fn table_with_limits(addr: SocketAddr, limits: ClientLimits) -> ostium_model::Table {
    let global = GlobalSettings { client_limits: limits, ..GlobalSettings::default() };
    TableBuilder::new().site(None, "a", addr, Policy::default()).global(global).build()
}

/// The ConfigMap's `client-header-timeout` and `keep-alive` win over the flags, for connections
/// accepted after the table is published (nginx's client_header_timeout, keepalive_timeout).
#[tokio::test]
async fn configmap_timeouts_override_the_flags_for_new_connections() {
    let backend = EchoBackend::start("a").await;
    let proxy = with_clocks(site_table(backend.addr), 60_000, 60_000, 60_000).await;
    let short = ClientLimits { header_timeout: Some(Duration::from_millis(300)), ..ClientLimits::default() };
    proxy.store.publish(Arc::new(table_with_limits(backend.addr, short)));
    let mut silent = TcpStream::connect(proxy.http).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some(), "header timeout");

    let no_keepalive = ClientLimits { keepalive_timeout: Some(Duration::ZERO), ..ClientLimits::default() };
    proxy.store.publish(Arc::new(table_with_limits(backend.addr, no_keepalive)));
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed after one request");
    let answer = parse(&bytes);
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")));
}

/// `keep-alive-requests`: the last request a connection may carry is answered with
/// `Connection: close`, and the connection closes (nginx's keepalive_requests).
#[tokio::test]
async fn configmap_keep_alive_requests_close_the_connection_after_the_last() {
    let backend = EchoBackend::start("a").await;
    let limits = ClientLimits { keepalive_requests: 2, ..ClientLimits::default() };
    let proxy = with_clocks(table_with_limits(backend.addr, limits), 60_000, 60_000, 60_000).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let three = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n";
    stream.write_all(three).await.unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed after two");
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(backend.requests(), 2);
}

/// `large-client-header-buffers`: heads beyond the buffers' total are refused (431).
#[tokio::test]
async fn configmap_header_buffers_limit_the_request_head() {
    let backend = EchoBackend::start("a").await;
    let limits = ClientLimits { max_header_bytes: Some(8192), ..ClientLimits::default() };
    let proxy = with_clocks(table_with_limits(backend.addr, limits), 60_000, 60_000, 60_000).await;
    let small =
        format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\nConnection: close\r\n\r\n", "a".repeat(512));
    assert_eq!(parse(&raw_exchange(proxy.http, small.as_bytes()).await).status, 200);
    let large =
        format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\nConnection: close\r\n\r\n", "a".repeat(16 * 1024));
    assert_eq!(parse(&raw_exchange(proxy.http, large.as_bytes()).await).status, 431);
}

async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    closed_within(&mut stream, Duration::from_secs(5)).await.unwrap_or_default()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_http2_idle_timeout() {
    let backend = EchoBackend::start("a").await;
    let proxy = with_clocks(site_table(backend.addr), 30_000, 30_000, 300).await;
    let (mut sender, connection) = h2c(proxy.http).await;
    let request = http::Request::get("http://h/").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "the server did not close the idle HTTP/2 connection");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let mut registry = prometheus_client::registry::Registry::with_prefix("ostium");
    let metrics = ProxyMetrics::register(&mut registry);
    let store = ostium_model::TableStore::new(TableBuilder::new().build());
    let limits = ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() };
    let proxy =
        ostium_proxy::Proxy::new(store.reader(), config(|c| c.connections = limits), metrics, provider());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ostium_proxy::serve_http(proxy, listener, std::future::pending()));

    let _held = [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(2)).await.is_some(), "the third was kept");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("ostium_connections_refused_total 1"), "{text}");
}

#[tokio::test]
async fn the_admin_server_closes_silent_connections_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = |_: &http::Request<hyper::body::Incoming>| {
        http::Response::new(http_body_util::Full::new(Bytes::from("ok")))
    };
    tokio::spawn(ostium_proxy::serve_admin(
        listener,
        short_clocks(300, 300, 300),
        handler,
        std::future::pending(),
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await.is_some());
}

// --- Request path and headers ---

#[tokio::test]
async fn a_multi_byte_character_at_a_prefix_boundary_is_routed_without_panicking() {
    let (admin, public) = (EchoBackend::start("admin").await, EchoBackend::start("public").await);
    let table = TableBuilder::new()
        .route(None, "/", "public", endpoints("public", &[public.addr]))
        .route(None, "/admin", "admin", endpoints("admin", &[admin.addr]))
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "h", "/admi%C3%A9").await;
    assert_eq!(echoed(&answer.body, "backend"), Some("public"));
    assert_eq!(echoed(&get(proxy.http, "h", "/admin/%C3%A9").await.body, "backend"), Some("admin"));
}

fn alice_only() -> Policy {
    use sha1::Digest as _;
    let hash = PasswordHash::Sha1(sha1::Sha1::digest(b"s3cret").into());
    let users = HashMap::from([("alice".to_owned(), hash)]);
    let auth = BasicAuth::new(HeaderValue::from_static("Basic realm=\"r\""), Credentials::Users(users));
    Policy { auth: Some(Arc::new(auth)), ..Policy::default() }
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test]
async fn an_absolute_form_request_is_forwarded_with_the_host_it_was_routed_on() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let table = TableBuilder::new()
        .site(Some("a.example"), "a", a.addr, alice_only())
        .site(Some("b.example"), "b", b.addr, Policy::default())
        .build();
    let proxy = Harness::start(table).await;
    let answer = raw(
        proxy.http,
        b"GET http://b.example/admin HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echoed(&answer.body, "backend"), Some("b"));
    assert_eq!(echoed_header(&answer.body, "host"), ["b.example"]);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-host"), ["b.example"]);
    let userinfo =
        raw(proxy.http, b"GET http://x@b.example/ HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(userinfo.status, 400);
}

#[tokio::test]
async fn an_http2_host_header_that_disagrees_with_the_authority_is_refused() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(site_table(backend.addr)).await;
    let (mut sender, _connection) = h2c(proxy.http).await;
    let request = http::Request::get("http://a.example/")
        .header("host", "b.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 400);
    let request = http::Request::get("http://a.example/")
        .header("host", "A.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200, "same host, other case");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, alice_only()).build()).await;
    let credentials = basic("alice", "s3cret");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {credentials}\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(proxy.http, request.as_bytes()).await.status, 400);
    let one = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(proxy.http, one.as_bytes()).await;
    assert_eq!(answer.status, 200);
    assert!(echoed_header(&answer.body, "authorization").is_empty(), "consumed by the proxy");
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let backend = EchoBackend::start("a").await; // switches to whatever protocol is asked for
    let proxy = Harness::start(site_table(backend.addr)).await;
    let answer =
        raw(proxy.http, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(echoed_header(&answer.body, "upgrade").is_empty());
}

#[tokio::test]
async fn a_catch_all_regex_never_overrides_a_longer_protected_prefix() {
    let (open, admin) = (EchoBackend::start("open").await, EchoBackend::start("admin").await);
    let table = TableBuilder::new()
        .route_with(
            None,
            PathRule::regex("/.*").unwrap(),
            "open",
            endpoints("open", &[open.addr]),
            Policy::default(),
        )
        .route_with(
            None,
            PathRule::prefix("/admin").unwrap(),
            "admin",
            endpoints("admin", &[admin.addr]),
            alice_only(),
        )
        .build();
    let proxy = Harness::start(table).await;
    for path in ["/admin", "/admin/users", "/ADMIN/users"] {
        assert_eq!(get(proxy.http, "h", path).await.status, 401, "{path}");
    }
    assert_eq!(echoed(&get(proxy.http, "h", "/public").await.body, "backend"), Some("open"));
}

#[tokio::test]
async fn rewrite_captures_cannot_inject_a_query_or_fragment() {
    let backend = EchoBackend::start("a").await;
    let rewrite = Rewrite {
        pattern: PathRegex::new("/api/(.*)").unwrap(),
        target: "/v2/${1}?fixed=1".into(),
        forwarded_prefix: None,
    };
    let policy = Policy { rewrite: Some(rewrite), ..Policy::default() };
    let table = TableBuilder::new()
        .route_with(None, PathRule::regex("/api/(.*)").unwrap(), "a", endpoints("a", &[backend.addr]), policy)
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "h", "/api/x%3Ffixed=2%23?q=1").await;
    assert_eq!(echoed(&answer.body, "target"), Some("/v2/x%3Ffixed=2%23?fixed=1&q=1"));
}

#[tokio::test]
async fn encoded_slashes_reach_the_backend_encoded_but_route_decoded() {
    let (api, admin) = (EchoBackend::start("api").await, EchoBackend::start("admin").await);
    let table = TableBuilder::new()
        .route(None, "/api", "api", endpoints("api", &[api.addr]))
        .route_with(
            None,
            PathRule::prefix("/admin").unwrap(),
            "admin",
            endpoints("admin", &[admin.addr]),
            alice_only(),
        )
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "h", "/api/group%2Fproject//./x").await;
    assert_eq!(echoed(&answer.body, "target"), Some("/api/group%2Fproject/x"));
    assert_eq!(get(proxy.http, "h", "/admin%2Fx").await.status, 401, "routed by /admin");
}

/// Reads one response head and its `Content-Length` body from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let answer = parse(&head);
    let length = answer.header("content-length").map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    Answer { body: String::from_utf8_lossy(&body).into_owned(), ..answer }
}

#[tokio::test]
async fn the_smuggling_guard_stays_on_after_a_request_that_asked_for_an_upgrade() {
    let proxy = Harness::start(TableBuilder::new().build()).await; // 404 for everything: no upgrade
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 404);
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 400);
}

#[tokio::test]
async fn a_slow_but_flowing_upload_outlives_the_read_timeout() {
    let backend = EchoBackend::start("a").await;
    let config = config(|c| c.read_timeout = Duration::from_millis(300));
    let proxy = Harness::start_with(site_table(backend.addr), config).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    for _ in 0..10 {
        stream.write_all(b"4\r\nabcd\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = parse(&closed_within(&mut stream, Duration::from_secs(10)).await.unwrap());
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(echoed(&answer.body, "received"), Some("40"));
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let backend = EchoBackend::start("a").await;
    let config = config(|c| c.connections.client_body_timeout = Duration::from_millis(300));
    let proxy = Harness::start_with(site_table(backend.addr), config).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = parse(&closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed"));
    assert_eq!(answer.status, 408);
}

#[tokio::test]
async fn an_endpoint_that_stops_reading_the_body_gets_504_after_the_send_timeout() {
    // Streamed, and buffered first (then sent from memory and the temporary file): both are
    // far larger than the socket buffers between the proxy and the endpoint.
    for (request_buffering, size) in [(false, 256 << 20), (true, 32 << 20)] {
        let backend = raw_backend(None).await;
        let policy = Policy { max_body_size: None, request_buffering, ..Policy::default() };
        let table = TableBuilder::new().site(None, "a", backend, policy).build();
        let config = config(|c| c.send_timeout = Duration::from_millis(300));
        let proxy = Harness::start_with(table, config).await;
        let stream = TcpStream::connect(proxy.http).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            let head = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n");
            write.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..(size >> 16) {
                if write.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            write // kept open: a half-closed client counts as gone
        });
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") && read.read_exact(&mut byte).await.is_ok() {
                head.push(byte[0]);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read_head).await.expect("answered in time");
        assert_eq!(parse(&head).status, 504, "request buffering {request_buffering}");
        drop(writer);
    }
}

#[tokio::test]
async fn an_endpoint_that_pauses_mid_response_is_cut_off_after_the_read_timeout() {
    let backend = raw_backend(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")).await;
    let config = config(|c| c.read_timeout = Duration::from_millis(300));
    let proxy = Harness::start_with(site_table(backend), config).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("cut off");
    let answer = parse(&bytes);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "0123456789", "the body stopped where the endpoint stopped");
}

#[tokio::test]
async fn tls_connections_speak_only_the_protocol_alpn_chose() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(site_table(backend.addr)).await;
    let name = || ServerName::try_from("a.example").unwrap();

    // `http/1.1` (and no ALPN at all): an HTTP/2 preface is not served as HTTP/2.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = TcpStream::connect(proxy.https).await.unwrap();
        let mut tls = tls_client(alpn).connect(name(), stream).await.unwrap();
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
        let bytes = closed_within(&mut tls, Duration::from_secs(5)).await.unwrap_or_default();
        // An HTTP/2 server's first frame would be SETTINGS: type 4 at byte 3.
        assert!(bytes.len() < 9 || bytes[3] != 4, "served HTTP/2 on {alpn:?}");
        assert_eq!(backend.requests(), 0);
    }
    // `h2`: an HTTP/1.1 request gets no HTTP/1.1 answer.
    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let mut tls = tls_client(&[b"h2"]).connect(name(), stream).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap();
    let bytes = closed_within(&mut tls, Duration::from_secs(5)).await.unwrap_or_default();
    assert!(!bytes.starts_with(b"HTTP/1.1"), "served HTTP/1.1 on h2");
    // The smuggling guard covers HTTP/1.1 over TLS.
    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let mut tls = tls_client(&[b"http/1.1"]).connect(name(), stream).await.unwrap();
    tls.write_all(b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await.unwrap();
    let bytes = closed_within(&mut tls, Duration::from_secs(5)).await.unwrap();
    assert!(bytes.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn the_endpoint_server_and_date_are_not_passed_on_and_http10_answers_become_http11() {
    let backend = raw_backend(Some(
        b"HTTP/1.0 200 OK\r\nServer: Apache/2.4.1 (Unix)\r\nDate: Mon, 01 Jan 1990 00:00:00 GMT\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ))
    .await;
    let proxy = Harness::start(site_table(backend)).await;
    let answer = get(proxy.http, "h", "/").await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    assert_eq!(answer.header("server"), None);
    assert_ne!(answer.header("date"), Some("Mon, 01 Jan 1990 00:00:00 GMT"));
    assert!(answer.header("date").is_some(), "our own Date");
    assert_eq!(answer.body, "ok");
}

#[tokio::test]
async fn protocol_refusals_follow_nginx() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(site_table(backend.addr)).await;
    let status = |request: &'static [u8]| {
        let addr = proxy.http;
        async move { raw(addr, request).await.status }
    };
    assert_eq!(status(b"TRACE / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await, 405);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").await,
        501
    );
    assert_eq!(
        status(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n").await,
        400
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "a".repeat(9000));
    assert_eq!(raw(proxy.http, long.as_bytes()).await.status, 414);
    assert_eq!(backend.requests(), 0, "none of them reached the backend");
}

#[tokio::test]
async fn http2_cookie_crumbs_are_joined_for_an_http1_endpoint() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(site_table(backend.addr)).await;
    let (mut sender, _connection) = h2c(proxy.http).await;
    let request = http::Request::get("http://h/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(echoed_header(&body, "cookie"), ["a=1; b=2"]);
}

#[tokio::test]
async fn a_route_denied_by_its_ingress_answers_503_and_never_reaches_the_backend() {
    let backend = EchoBackend::start("a").await;
    let denied = Denial::UnimplementedAnnotation {
        annotation: "nginx.ingress.kubernetes.io/whitelist-source-range".into(),
    };
    let policy = Policy { denied: Some(denied), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get(proxy.http, "h", "/").await.status, 503);
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn requests_hyper_refuses_before_routing_are_counted() {
    let mut registry = prometheus_client::registry::Registry::with_prefix("ostium");
    let metrics = ProxyMetrics::register(&mut registry);
    let store = ostium_model::TableStore::new(TableBuilder::new().build());
    let proxy = ostium_proxy::Proxy::new(store.reader(), config(|_| {}), metrics, provider());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ostium_proxy::serve_http(proxy, listener, std::future::pending()));

    assert_eq!(raw(addr, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").await.status, 400);
    let huge = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    assert_eq!(raw(addr, huge.as_bytes()).await.status, 431);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"ostium_requests_total{ingress="",service="",class="4xx"} 2"#), "{text}");
}

#[tokio::test]
async fn an_idle_websocket_is_closed_after_the_read_timeout() {
    let backend = EchoBackend::start("ws").await;
    let config = config(|c| c.read_timeout = Duration::from_millis(300));
    let proxy = Harness::start_with(site_table(backend.addr), config).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let bytes = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed when idle");
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&bytes));
}
