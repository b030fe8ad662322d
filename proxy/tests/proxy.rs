//! The proxy on real loopback sockets: routing, headers, TLS/SNI, upstream failures, balancing,
//! framing, limits, upgrades, table swaps and shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use ostium_model::{PathRule, Policy, Protocol, Target};
use ostium_proxy::ProxyConfig;
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// --- Routing ---

#[tokio::test]
async fn routes_by_host_and_path_to_endpoints() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let table = TableBuilder::new()
        .route(Some("app.example.com"), "/", "a", endpoints("a", &[a.addr]))
        .route(Some("app.example.com"), "/api", "b", endpoints("b", &[b.addr]))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "app.example.com", "/api/users?id=7").await;
    assert_eq!(answer.status, 200);
    assert_eq!(echoed(&answer.body, "backend"), Some("b"));
    assert_eq!(echoed(&answer.body, "target"), Some("/api/users?id=7"));
    assert_eq!(echoed(&answer.body, "version"), Some("HTTP/1.1"));
    assert_eq!(echoed(&get(proxy.http, "APP.example.com:80", "/apix").await.body, "backend"), Some("a"));
    assert_eq!(get(proxy.http, "other.example.com", "/").await.status, 404);
}

#[tokio::test]
async fn no_spelling_of_a_path_escapes_its_rule_and_the_backend_sees_the_judged_path() {
    let (admin, public) = (EchoBackend::start("admin").await, EchoBackend::start("public").await);
    let table = TableBuilder::new()
        .route(None, "/", "public", endpoints("public", &[public.addr]))
        .route(None, "/admin", "admin", endpoints("admin", &[admin.addr]))
        .build();
    let proxy = Harness::start(table).await;
    for path in ["/admin", "//admin", "/x/../admin", "/%61dmin/x", "/public/%2e%2e/admin", "/admin%2Fx"] {
        let answer = get(proxy.http, "h", path).await;
        assert_eq!(echoed(&answer.body, "backend"), Some("admin"), "{path}");
        let target = echoed(&answer.body, "target").unwrap();
        assert!(target.starts_with("/admin"), "{path} reached the backend as {target}");
    }
    assert_eq!(get(proxy.http, "h", "/../etc/passwd").await.status, 400);
    // An encoded `/` with dot segments inside would read differently to the router and a
    // backend that keeps `%2F` as a character.
    assert_eq!(get(proxy.http, "h", "/x%2F..%2Fadmin").await.status, 400);
    assert_eq!(get(proxy.http, "h", "/%zz").await.status, 400);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let backend = EchoBackend::start("a").await;
    let table =
        TableBuilder::new().route(Some("app.example.com"), "/", "a", endpoints("a", &[backend.addr])).build();
    let proxy = Harness::start(table).await;

    let (mut sender, _connection) = h2c(proxy.http).await;
    let request = http::Request::get("http://app.example.com/h2").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(echoed(&body, "version"), Some("HTTP/1.1"));
    assert_eq!(echoed_header(&body, "host"), ["app.example.com"]);
}

#[tokio::test]
async fn backend_protocols_http1_h2c_https_and_h2_over_tls() {
    let plain = EchoBackend::start("plain").await;
    let tls = EchoBackend::start_tls("tls", backend_tls("backend.internal")).await;
    let table = TableBuilder::new()
        .route_protocol("/http", "http", endpoints("http", &[plain.addr]), Protocol::Http)
        .route_protocol("/grpc", "grpc", endpoints("grpc", &[plain.addr]), Protocol::Grpc)
        .route_protocol("/https", "https", endpoints("https", &[tls.addr]), Protocol::Https)
        .route_protocol("/grpcs", "grpcs", endpoints("grpcs", &[tls.addr]), Protocol::Grpcs)
        .build();
    let proxy = Harness::start(table).await;
    for (path, backend, version) in [
        ("/http", "plain", "HTTP/1.1"),
        ("/grpc", "plain", "HTTP/2.0"),
        ("/https", "tls", "HTTP/1.1"),
        ("/grpcs", "tls", "HTTP/2.0"),
    ] {
        let answer = get(proxy.http, "h", path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.head);
        assert_eq!(echoed(&answer.body, "backend"), Some(backend), "{path}");
        assert_eq!(echoed(&answer.body, "version"), Some(version), "{path}");
    }
}

// --- Errors ---

#[tokio::test]
async fn upstream_failures_map_to_502_503_504() {
    let slow = EchoBackend::start("slow").await;
    let refused = closed_port().await;
    let table = TableBuilder::new()
        .route(None, "/empty", "empty", endpoints("empty", &[]))
        .route(None, "/unavailable", "gone", Target::Unavailable)
        .route(None, "/refused", "refused", endpoints("refused", &[refused]))
        .route(None, "/slow", "slow", endpoints("slow", &[slow.addr]))
        .build();
    let config =
        ProxyConfig { access_log: false, read_timeout: Duration::from_millis(200), ..ProxyConfig::default() };
    let proxy = Harness::start_with(table, config).await;

    assert_eq!(get(proxy.http, "h", "/empty").await.status, 503);
    assert_eq!(get(proxy.http, "h", "/unavailable").await.status, 503);
    assert_eq!(get(proxy.http, "h", "/refused").await.status, 502);
    assert_eq!(
        get(proxy.http, "h", "/slow/delay/1000").await.status,
        200,
        "path is /slow/delay/1000, not /delay"
    );
    let table = TableBuilder::new().route(None, "/", "slow", endpoints("slow", &[slow.addr])).build();
    proxy.publish(table);
    assert_eq!(get(proxy.http, "h", "/delay/1000").await.status, 504);
}

#[tokio::test]
async fn refused_connection_is_retried_on_another_endpoint_and_the_endpoint_ejected() {
    let good = EchoBackend::start("good").await;
    let refused = closed_port().await;
    let table =
        TableBuilder::new().route(None, "/", "mixed", endpoints("mixed", &[good.addr, refused])).build();
    let proxy = Harness::start(table).await;
    for i in 0..20 {
        assert_eq!(get(proxy.http, "h", "/").await.status, 200, "request {i}");
    }
    assert_eq!(good.requests(), 20);
    // A refused connection sent nothing, so a POST moves on too, its buffered body whole.
    for _ in 0..10 {
        let answer = raw(
            proxy.http,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await;
        assert_eq!(answer.status, 200);
    }
}

// --- Headers ---

#[tokio::test]
async fn forwarded_headers_are_ours_and_host_is_preserved() {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build();
    let proxy = Harness::start(table).await;
    let request = "GET / HTTP/1.1\r\nHost: shop.example.com:8080\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                   X_Forwarded_For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
                   ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin\r\n\
                   Connection: close, X-Forwarded-For, X-Real-IP\r\nProxy: http://evil\r\n\r\n";
    let answer = raw(proxy.http, request.as_bytes()).await;
    let body = &answer.body;
    assert_eq!(echoed_header(body, "host"), ["shop.example.com:8080"]);
    assert_eq!(echoed_header(body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(body, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(echoed_header(body, "x-forwarded-host"), ["shop.example.com:8080"]);
    assert_eq!(echoed_header(body, "x-forwarded-port"), ["8080"]);
    assert_eq!(echoed_header(body, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed_header(body, "x-request-id")[0].len(), 32);
    assert!(echoed_header(body, "forwarded").is_empty());
    assert!(echoed_header(body, "proxy").is_empty());
    assert!(echoed_header(body, "ssl-client-verify").is_empty(), "no client certificate claims");
    assert!(echoed_header(body, "ssl-client-subject-dn").is_empty());
    assert!(!body.to_ascii_lowercase().contains("x_forwarded_for"), "{body}");

    // What the client claimed is passed on only under a name that says so.
    let answer = get_with(proxy.http, "X-Forwarded-For: 6.6.6.6, 7.7.7.7").await;
    assert_eq!(echoed_header(&answer.body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&answer.body, "x-original-forwarded-for"), ["6.6.6.6, 7.7.7.7"]);
    let answer = get_with(proxy.http, "X-Request-ID: trace-42").await;
    assert_eq!(echoed_header(&answer.body, "x-request-id"), ["trace-42"]);
}

async fn get_with(addr: std::net::SocketAddr, header: &str) -> Answer {
    raw(addr, format!("GET / HTTP/1.1\r\nHost: h\r\n{header}\r\nConnection: close\r\n\r\n").as_bytes()).await
}

// --- TLS ---

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default_and_follows_table_swaps() {
    let backend = EchoBackend::start("a").await;
    let (default, exact, wildcard) = (
        certificate(&["default.invalid"]),
        certificate(&["app.example.com"]),
        certificate(&["*.example.com"]),
    );
    let table = || {
        TableBuilder::with_default_certificate(default.clone())
            .route(None, "/", "a", endpoints("a", &[backend.addr]))
            .tls("app.example.com", exact.clone())
            .tls("*.example.com", wildcard.clone())
    };
    let proxy = Harness::start(table().build()).await;
    let leaf = |c: &ostium_model::Certificate| c.key.cert[0].clone();

    assert_eq!(handshake(proxy.https, "app.example.com", &[]).await.0, leaf(&exact));
    assert_eq!(handshake(proxy.https, "other.example.com", &[]).await.0, leaf(&wildcard));
    assert_eq!(handshake(proxy.https, "a.b.example.com", &[]).await.0, leaf(&default));
    assert_eq!(handshake(proxy.https, "unknown.org", &[]).await.0, leaf(&default));

    let rotated = certificate(&["app.example.com"]);
    proxy.publish(
        TableBuilder::with_default_certificate(default.clone())
            .route(None, "/", "a", endpoints("a2", &[backend.addr]))
            .tls("app.example.com", rotated.clone())
            .build(),
    );
    assert_eq!(
        handshake(proxy.https, "app.example.com", &[]).await.0,
        leaf(&rotated),
        "new handshakes see the new table"
    );
}

#[tokio::test]
async fn tls_negotiates_h2_and_http1_by_alpn_and_forwards_https_scheme() {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new()
        .route(Some("app.example.com"), "/", "a", endpoints("a", &[backend.addr]))
        .tls("app.example.com", certificate(&["app.example.com"]))
        .build();
    let proxy = Harness::start(table).await;
    assert_eq!(
        handshake(proxy.https, "app.example.com", &[b"h2", b"http/1.1"]).await.1.as_deref(),
        Some(&b"h2"[..])
    );

    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("app.example.com").unwrap();
    let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    let answer = parse(&bytes);
    assert_eq!(answer.status, 200);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-port"), ["443"]);
}

// --- Balancing ---

#[tokio::test]
async fn equal_endpoints_share_requests_evenly() {
    let backends =
        [EchoBackend::start("a").await, EchoBackend::start("b").await, EchoBackend::start("c").await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let table = TableBuilder::new().route(None, "/", "abc", endpoints("abc", &addrs)).build();
    let proxy = Harness::start(table).await;
    for _ in 0..60 {
        assert_eq!(get(proxy.http, "h", "/").await.status, 200);
    }
    let counts: Vec<_> = backends.iter().map(EchoBackend::requests).collect();
    assert_eq!(counts, [20, 20, 20], "round robin is the floor for evenness");
}

// --- Framing and limits ---

#[tokio::test]
async fn ambiguous_or_malformed_requests_get_400_or_431() {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build();
    let proxy = Harness::start(table).await;

    let two_hosts = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(proxy.http, two_hosts).await.status, 400, "two Host headers");
    assert_eq!(raw(proxy.http, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await.status, 400, "no Host");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(raw(proxy.http, huge.as_bytes()).await.status, 431);
    assert_eq!(backend.requests(), 0, "none of these reached the backend");
}

/// Content-Length with Transfer-Encoding is refused, in the first request of a connection and
/// after a keep-alive request with a body, and the smuggled request behind it is never read.
#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_and_smuggles_nothing() {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build();
    let proxy = Harness::start(table).await;
    let smuggle = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
    let answer = raw(proxy.http, smuggle).await;
    assert_eq!(answer.status, 400);
    assert!(!answer.body.contains("HTTP/1.1 "), "one response only: {}", answer.body);

    // On a keep-alive connection: a request with a body, its answer, then the ambiguous one.
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "the first request is fine");
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert_eq!(parse(&rest).status, 400, "the second is refused and the connection closed");
    assert_eq!(backend.requests(), 1, "only the first, unambiguous request reached the backend");
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413() {
    let backend = EchoBackend::start("a").await;
    let small = Policy { max_body_size: Some(16), ..Policy::default() };
    let table = TableBuilder::new()
        .route_with(None, PathRule::prefix("/").unwrap(), "a", endpoints("a", &[backend.addr]), small)
        .build();
    let proxy = Harness::start(table).await;

    let declared = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\nConnection: close\r\n\r\n01234567890123456";
    assert_eq!(raw(proxy.http, declared).await.status, 413);
    let chunked = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789012345\r\n10\r\n0123456789012345\r\n0\r\n\r\n";
    assert_eq!(raw(proxy.http, chunked).await.status, 413);
    let fits = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789012345";
    let answer = raw(proxy.http, fits).await;
    assert_eq!(answer.status, 200);
    assert_eq!(echoed(&answer.body, "received"), Some("16"));
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build();
    let config = ProxyConfig {
        access_log: false,
        connections: ostium_proxy::ConnectionLimits {
            client_header_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..ProxyConfig::default()
    };
    let proxy = Harness::start_with(table, config).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").await.unwrap(); // never finishes the head
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn request_heads_and_http2_prefaces_sent_in_pieces_are_served() {
    let backend = EchoBackend::start("a").await;
    let proxy =
        Harness::start(TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build())
            .await;
    let pause = Duration::from_millis(20);

    // HTTP/1.1 a byte at a time: "P" could still be the HTTP/2 preface, "PU" no longer.
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in b"PUT /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(echoed(&answer, "method"), Some("PUT"));
    assert_eq!(echoed(&answer, "target"), Some("/slow"));

    // Like the preface up to its version: answered as HTTP/1.1.
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"PRI * HTTP/").await.unwrap();
    tokio::time::sleep(pause).await;
    stream.write_all(b"1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");

    // The HTTP/2 preface's first line alone, then the rest from an HTTP/2 client.
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let first_line = b"PRI * HTTP/2.0\r\n";
    stream.write_all(first_line).await.unwrap();
    tokio::time::sleep(pause).await;
    let io = SentAlready { inner: stream, sent: first_line };
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://h/h2").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(echoed(&body, "target"), Some("/h2"));
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

/// A stream that drops the first bytes written to it, checking they are `sent`: the test sent
/// them itself, ahead of the client.
struct SentAlready {
    inner: TcpStream,
    sent: &'static [u8],
}

impl tokio::io::AsyncRead for SentAlready {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SentAlready {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if !self.sent.is_empty() {
            let n = self.sent.len().min(buf.len());
            assert_eq!(&buf[..n], &self.sent[..n], "the client writes what the test sent");
            self.sent = &self.sent[n..];
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// --- Upgrades ---

#[tokio::test]
async fn upgrades_are_tunnelled_both_ways() {
    let backend = EchoBackend::start("ws").await;
    let table = TableBuilder::new().route(None, "/", "ws", endpoints("ws", &[backend.addr])).build();
    let proxy = Harness::start(table).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"second frame"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
}

// --- Table swaps and shutdown ---

#[tokio::test]
async fn table_swap_keeps_in_flight_requests_and_applies_to_new_ones() {
    let (old, new) = (EchoBackend::start("old").await, EchoBackend::start("new").await);
    let proxy =
        Harness::start(TableBuilder::new().route(None, "/", "old", endpoints("old", &[old.addr])).build())
            .await;
    let in_flight: Vec<_> = (0..5).map(|_| tokio::spawn(get(proxy.http, "h", "/delay/400"))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.publish(TableBuilder::new().route(None, "/", "new", endpoints("new", &[new.addr])).build());

    assert_eq!(echoed(&get(proxy.http, "h", "/").await.body, "backend"), Some("new"));
    for request in in_flight {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(echoed(&answer.body, "backend"), Some("old"));
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let backend = EchoBackend::start("a").await;
    let proxy =
        Harness::start(TableBuilder::new().route(None, "/", "a", endpoints("a", &[backend.addr])).build())
            .await;
    let http = proxy.http;
    let slow = tokio::spawn(get(http, "h", "/delay/500"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A connection still telling HTTP/1.1 from HTTP/2 does not hold the drain (30 s here) up.
    let mut undecided = TcpStream::connect(http).await.unwrap();
    undecided.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown()).await.expect("drained in time");
    assert_eq!(slow.await.unwrap().status, 200, "the request in flight finished");
    assert!(TcpStream::connect(http).await.is_err(), "no longer accepting");
}
