//! The client address on loopback, clients binding chosen 127.0.0.x source addresses: the
//! trusted proxy is 127.0.0.2 (`proxy-real-ip-cidr: 127.0.0.2/32`), any other address is a
//! client. As ingress-nginx renders the ConfigMap's keys (rootfs/etc/nginx/template/nginx.tmpl:
//! `real_ip_header`, `set_real_ip_from`, `real_ip_recursive on`, `$full_x_forwarded_for`,
//! `listen … proxy_protocol`, the `deny` lines of `block-cidrs`; rootfs/etc/nginx/lua/
//! lua_ingress.lua: `X-Forwarded-Proto` with `use-forwarded-headers`) and as its e2e tests
//! check them (test/e2e/settings/forwarded_headers.go, proxy_protocol.go).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ostium_model::{
    Blocked, ClientAddressing, ForwardedHeaders, GlobalSettings, HttpsRedirect, PathRule, Policy,
    ProxyProtocol, RateLimit, RateLimitZone, RequestRate, SourceAccess, Template, TemplatePart, UpstreamHash,
    Variable,
};
use ostium_proxy::ProxyConfig;
use ostium_test_support::log::LogBuffer;
use ostium_test_support::{EchoBackend, certificate, echoed};
use ppp::v2;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TRUSTED: &str = "127.0.0.2";
const CLIENT: &str = "127.0.0.3";

/// The settings with `127.0.0.2` trusted, changed by `change`.
fn settings(change: impl FnOnce(&mut ClientAddressing)) -> GlobalSettings {
    let mut client_address = ClientAddressing {
        trusted: Some(format!("{TRUSTED}/32").parse().unwrap()),
        ..ClientAddressing::default()
    };
    change(&mut client_address);
    GlobalSettings { client_address, ..GlobalSettings::default() }
}

/// `use-forwarded-headers: "true"` (with `compute-full-forwarded-for` when `full`).
fn use_forwarded_headers(full: bool) -> Option<ForwardedHeaders> {
    Some(ForwardedHeaders {
        client_header: http::HeaderName::from_static("x-forwarded-for"),
        scheme_and_host: true,
        full_forwarded_for: full,
    })
}

fn proxy_protocol() -> Option<ProxyProtocol> {
    Some(ProxyProtocol { header_timeout: Duration::from_secs(5) })
}

async fn proxy_with(settings: GlobalSettings, policy: Policy) -> (Harness, EchoBackend) {
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new().site(None, "a", backend.addr, policy).global(settings).build();
    (Harness::start(table).await, backend)
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `bytes` from `source` and reads the answer until the proxy closes (10 s at most).
async fn send_from(source: &str, to: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = connect_from(source, to).await;
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    parse(&answer)
}

/// `GET /` from `source` with `headers` (each `Name: value`).
async fn get_with(source: &str, to: SocketAddr, headers: &[&str]) -> Answer {
    let mut request = String::from("GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send_from(source, to, request.as_bytes()).await
}

fn request() -> &'static [u8] {
    b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
}

fn v1_header(source: &str, destination_port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 4711 {destination_port}\r\n").into_bytes()
}

fn v2_header(source: &str, destination_port: u16) -> Vec<u8> {
    let source: SocketAddr = format!("{source}:4711").parse().unwrap();
    let destination: SocketAddr = format!("127.0.0.1:{destination_port}").parse().unwrap();
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn the_forwarded_for_header_of_a_trusted_peer_names_the_client() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(false)), Policy::default()).await;
    let trusted = get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 198.51.100.1, 203.0.113.7"]).await;
    assert_eq!(trusted.status, 200, "{trusted:?}");
    assert_eq!(echoed(&trusted.body, "header: x-real-ip"), Some("203.0.113.7"));
    assert_eq!(echoed(&trusted.body, "header: x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(
        echoed(&trusted.body, "header: x-original-forwarded-for"),
        Some("198.51.100.1, 203.0.113.7"),
        "what was sent is still passed on, under its own name"
    );

    let untrusted = get_with(CLIENT, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await;
    assert_eq!(echoed(&untrusted.body, "header: x-real-ip"), Some(CLIENT));
    assert_eq!(echoed(&untrusted.body, "header: x-forwarded-for"), Some(CLIENT));
}

/// test/e2e/settings/forwarded_headers.go: with `use-forwarded-headers`, the proxy's
/// `X-Forwarded-Port`, `-Proto` and `-Host` (its first entry) are passed on.
#[tokio::test]
async fn a_trusted_peers_forwarded_port_scheme_and_host_are_passed_on() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(false)), Policy::default()).await;
    let sent = [
        "X-Forwarded-Port: 1234",
        "X-Forwarded-Proto: myproto",
        "X-Forwarded-Scheme: myproto",
        "X-Forwarded-For: 1.2.3.4",
        "X-Forwarded-Host: myhost.com, another.host,example.net",
    ];
    let trusted = get_with(TRUSTED, proxy.http, &sent).await;
    for (name, value) in [
        ("x-forwarded-port", "1234"),
        ("x-forwarded-proto", "myproto"),
        ("x-forwarded-scheme", "myproto"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-host", "myhost.com"),
        ("host", "app.example"),
    ] {
        assert_eq!(
            echoed(&trusted.body, &format!("header: {name}")),
            Some(value),
            "{name}: {}",
            trusted.body
        );
    }
    let untrusted = get_with(CLIENT, proxy.http, &sent).await;
    for (name, value) in [
        ("x-forwarded-port", "80"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-scheme", "http"),
        ("x-forwarded-for", CLIENT),
        ("x-forwarded-host", "app.example"),
        ("x-original-forwarded-for", "1.2.3.4"),
    ] {
        assert_eq!(
            echoed(&untrusted.body, &format!("header: {name}")),
            Some(value),
            "{name}: {}",
            untrusted.body
        );
    }
}

#[tokio::test]
async fn without_forwarded_headers_the_peer_is_the_client_whatever_it_sends() {
    let (proxy, _backend) = proxy_with(settings(|_| {}), Policy::default()).await;
    let answer = get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await;
    assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some(TRUSTED));
}

#[tokio::test]
async fn a_custom_forwarded_for_header_names_the_client() {
    let custom = ForwardedHeaders {
        client_header: http::HeaderName::from_static("cf-connecting-ip"),
        ..use_forwarded_headers(false).unwrap()
    };
    let (proxy, _backend) = proxy_with(settings(|s| s.forwarded = Some(custom)), Policy::default()).await;
    let answer =
        get_with(TRUSTED, proxy.http, &["CF-Connecting-IP: 203.0.113.7", "X-Forwarded-For: 198.51.100.1"])
            .await;
    assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some("203.0.113.7"));
    let untrusted = get_with(CLIENT, proxy.http, &["CF-Connecting-IP: 203.0.113.7"]).await;
    assert_eq!(echoed(&untrusted.body, "header: x-real-ip"), Some(CLIENT));
}

#[tokio::test]
async fn compute_full_forwarded_for_appends_the_trusted_peer() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(true)), Policy::default()).await;
    let answer = get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 198.51.100.1, 203.0.113.7"]).await;
    assert_eq!(echoed(&answer.body, "header: x-forwarded-for"), Some("198.51.100.1, 203.0.113.7, 127.0.0.2"));
    assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some("203.0.113.7"));
    // A client's own list is not passed on as if a proxy had written it.
    let untrusted = get_with(CLIENT, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await;
    assert_eq!(echoed(&untrusted.body, "header: x-forwarded-for"), Some(CLIENT));
}

#[tokio::test]
async fn a_trusted_proxy_that_ended_tls_says_the_request_was_https() {
    let backend = EchoBackend::start("a").await;
    let policy = Policy { https_redirect: HttpsRedirect::WhenHostHasCertificate, ..Policy::default() };
    let table = TableBuilder::new()
        .site(Some("app.example"), "a", backend.addr, policy)
        .tls("app.example", certificate(&["app.example"]))
        .global(settings(|s| s.forwarded = use_forwarded_headers(false)))
        .build();
    let proxy = Harness::start(table).await;
    let behind = get_with(TRUSTED, proxy.http, &["X-Forwarded-Proto: https", "X-Forwarded-Port: 443"]).await;
    assert_eq!(behind.status, 200, "not redirected to where it came from: {behind:?}");
    assert_eq!(echoed(&behind.body, "header: x-forwarded-proto"), Some("https"));
    assert_eq!(echoed(&behind.body, "header: x-forwarded-port"), Some("443"));
    let client = get_with(CLIENT, proxy.http, &["X-Forwarded-Proto: https"]).await;
    assert_eq!(client.status, 308, "{client:?}");
}

#[tokio::test]
async fn proxy_headers_v1_and_v2_name_the_client_on_both_listeners() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.proxy_protocol = proxy_protocol()), Policy::default()).await;
    for header in [v1_header("203.0.113.7", 80), v2_header("203.0.113.7", 80)] {
        let mut bytes = header;
        bytes.extend_from_slice(request());
        let answer = send_from(TRUSTED, proxy.http, &bytes).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some("203.0.113.7"));
        assert_eq!(echoed(&answer.body, "header: x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(echoed(&answer.body, "header: x-forwarded-port"), Some("80"));
    }
    for header in [v1_header("203.0.113.8", 443), v2_header("203.0.113.8", 443)] {
        let mut stream = connect_from(TRUSTED, proxy.https).await;
        stream.write_all(&header).await.unwrap();
        let name = ServerName::try_from("app.example").unwrap();
        let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
        tls.write_all(request()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
        let answer = parse(&answer);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some("203.0.113.8"));
        assert_eq!(echoed(&answer.body, "header: x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn an_untrusted_peers_proxy_header_is_read_but_not_believed() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.proxy_protocol = proxy_protocol()), Policy::default()).await;
    let mut bytes = v1_header("203.0.113.7", 80);
    bytes.extend_from_slice(request());
    let answer = send_from(CLIENT, proxy.http, &bytes).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed(&answer.body, "header: x-real-ip"), Some(CLIENT));
}

#[tokio::test]
async fn a_connection_without_a_proxy_header_is_closed() {
    let (proxy, backend) =
        proxy_with(settings(|s| s.proxy_protocol = proxy_protocol()), Policy::default()).await;
    let answer = send_from(TRUSTED, proxy.http, request()).await;
    assert_eq!((answer.status, answer.head.as_str()), (0, ""), "closed without an answer");
    let name = ServerName::try_from("app.example").unwrap();
    let handshake = tls_client(&[b"http/1.1"]).connect(name, connect_from(TRUSTED, proxy.https).await).await;
    assert!(handshake.is_err(), "a TLS handshake without a PROXY header is refused");
    assert_eq!(backend.requests(), 0);

    // The setting is read as connections are accepted: a new table turns it off.
    proxy.publish(TableBuilder::new().site(None, "a", backend.addr, Policy::default()).build());
    let answer = send_from(TRUSTED, proxy.http, request()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn a_proxy_header_that_comes_too_late_is_refused() {
    let late = ProxyProtocol { header_timeout: Duration::from_millis(200) };
    let (proxy, backend) = proxy_with(settings(|s| s.proxy_protocol = Some(late)), Policy::default()).await;
    let mut stream = connect_from(TRUSTED, proxy.http).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut bytes = v1_header("203.0.113.7", 80);
    bytes.extend_from_slice(request());
    // The proxy may have closed already: the write or the read fails, or reads nothing.
    let _ = stream.write_all(&bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn source_ranges_judge_the_real_client() {
    let access = SourceAccess { allow: Some("203.0.113.0/24".parse().unwrap()), deny: None };
    let policy = Policy { source_access: Some(access), ..Policy::default() };
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(false)), policy).await;
    assert_eq!(get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await.status, 200);
    assert_eq!(get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 198.51.100.1"]).await.status, 403);
    assert_eq!(
        get_with(CLIENT, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await.status,
        403,
        "an untrusted peer cannot claim an allowed address"
    );
}

#[tokio::test]
async fn rate_limits_count_each_real_client() {
    let zone =
        std::sync::Arc::new(RateLimitZone::new(ostium_model::NamespacedName::new("default", "web"), "uid"));
    let rate_limit = RateLimit {
        per_second: None,
        per_minute: Some(RequestRate::per_minute(1, 0)),
        connections: None,
        allowlist: None,
        zone,
        statuses: Default::default(),
    };
    let policy = Policy { rate_limit: Some(rate_limit), ..Policy::default() };
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(false)), policy).await;
    let addr = proxy.http;
    let from = |client: &'static str| async move {
        let header = format!("X-Forwarded-For: {client}");
        get_with(TRUSTED, addr, &[header.as_str()]).await.status
    };
    assert_eq!(from("203.0.113.7").await, 200);
    assert_eq!(from("203.0.113.8").await, 200, "another client behind the same proxy");
    assert_eq!(from("203.0.113.7").await, 503);
}

#[tokio::test]
async fn block_cidrs_refuse_the_real_client_on_every_host() {
    let blocked = Blocked::Networks("203.0.113.0/24".parse().unwrap());
    let settings = settings(|s| {
        s.forwarded = use_forwarded_headers(false);
        s.proxy_protocol = proxy_protocol();
        s.blocked = Some(blocked);
    });
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new()
        .site(Some("app.example"), "a", backend.addr, Policy::default())
        .global(settings)
        .build();
    let proxy = Harness::start(table).await;
    let send = |header: Vec<u8>, request: &'static [u8]| {
        let mut bytes = header;
        bytes.extend_from_slice(request);
        async move { send_from(TRUSTED, proxy.http, &bytes).await.status }
    };
    assert_eq!(send(v2_header("203.0.113.7", 80), request()).await, 403, "named by the PROXY header");
    let forwarded =
        b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n";
    assert_eq!(send(v1_header("127.0.0.2", 80), forwarded).await, 403, "named by a trusted proxy's header");
    let elsewhere = b"GET / HTTP/1.1\r\nHost: nobody.example\r\nConnection: close\r\n\r\n";
    assert_eq!(send(v1_header("203.0.113.7", 80), elsewhere).await, 403, "a host without routes too");
    assert_eq!(send(v1_header("198.51.100.1", 80), elsewhere).await, 404);
    assert_eq!(send(v1_header("198.51.100.1", 80), request()).await, 200);
}

#[tokio::test]
async fn an_unreadable_block_list_refuses_everyone() {
    let (proxy, backend) =
        proxy_with(settings(|s| s.blocked = Some(Blocked::Unreadable)), Policy::default()).await;
    assert_eq!(get_with(CLIENT, proxy.http, &[]).await.status, 503);
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn the_access_log_names_the_real_client() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).init();
    let backend = EchoBackend::start("a").await;
    let table = TableBuilder::new()
        .site(None, "a", backend.addr, Policy::default())
        .global(settings(|s| s.forwarded = use_forwarded_headers(false)))
        .build();
    let proxy = Harness::start_with(table, ProxyConfig::default()).await;
    let answer = get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 203.0.113.7:4711"]).await;
    assert_eq!(answer.status, 200);
    // A line is written once its response body is done with, which can trail the client a little.
    let mut log = String::new();
    for _ in 0..100 {
        log = buffer.text();
        if log.contains("ostium::access") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.contains("\"client\":\"203.0.113.7:4711\""), "{log}");
}

#[tokio::test]
async fn the_proxy_header_comes_before_the_client_hello_of_a_passthrough_host() {
    let generated = rcgen::generate_simple_self_signed(vec!["pass.example".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    let passed = EchoBackend::start_tls("passed", Arc::new(config)).await;
    let table = TableBuilder::new()
        .passthrough("pass.example", "passed", passed.addr)
        .global(settings(|s| s.proxy_protocol = proxy_protocol()))
        .build();
    let proxy = Harness::start(table).await;
    let mut stream = connect_from(TRUSTED, proxy.https).await;
    stream.write_all(&v2_header("203.0.113.7", 443)).await.unwrap();
    let name = ServerName::try_from("pass.example").unwrap();
    let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], *generated.cert.der(), "the backend's own");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: pass.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = parse(&answer);
    assert_eq!(echoed(&answer.body, "backend"), Some("passed"), "{answer:?}");
}

/// An auth service that lets in the client `203.0.113.7` only, as its `X-Real-IP` and
/// `X-Forwarded-For` say.
async fn auth_service_for_one_client() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let headers = request.headers();
                        let allowed = headers.get("x-real-ip").is_some_and(|v| v == "203.0.113.7")
                            && headers.get("x-forwarded-for").is_some_and(|v| v == "203.0.113.7");
                        let status = if allowed { 200 } else { 403 };
                        let response = http::Response::builder()
                            .status(status)
                            .body(http_body_util::Empty::<bytes::Bytes>::new());
                        Ok::<_, std::convert::Infallible>(response.unwrap())
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_auth_service_is_told_the_real_client() {
    let auth = auth_service_for_one_client().await;
    let url = Template::new(vec![TemplatePart::Text(format!("http://{auth}/check").into())]);
    let policy = Policy { external_auth: Some(Arc::new(support::external_auth(url))), ..Policy::default() };
    let (proxy, _backend) =
        proxy_with(settings(|s| s.forwarded = use_forwarded_headers(false)), policy).await;
    assert_eq!(get_with(TRUSTED, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await.status, 200);
    assert_eq!(get_with(CLIENT, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await.status, 403);
}

#[tokio::test]
async fn upstream_hash_by_remote_addr_hashes_the_real_client() {
    let backends =
        [EchoBackend::start("a").await, EchoBackend::start("b").await, EchoBackend::start("c").await];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let key = Template::new(vec![TemplatePart::Variable(Variable::RemoteAddr)]);
    let hash = UpstreamHash { key, subset_size: None };
    let policy = Policy { upstream_hash: Some(Arc::new(hash)), ..Policy::default() };
    let table = TableBuilder::new()
        .route_with(None, PathRule::prefix("/").unwrap(), "hashed", endpoints("hashed", &addrs), policy)
        .global(settings(|s| {
            s.trusted = Some("127.0.0.0/29".parse().unwrap());
            s.forwarded = use_forwarded_headers(false);
        }))
        .build();
    let proxy = Harness::start(table).await;
    // The same client through different proxies: one backend, whatever the peer.
    let mut chosen = std::collections::BTreeSet::new();
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        let answer = get_with(source, proxy.http, &["X-Forwarded-For: 203.0.113.7"]).await;
        chosen.insert(echoed(&answer.body, "backend").unwrap().to_owned());
    }
    assert_eq!(chosen.len(), 1, "{chosen:?}");
    // Different clients behind the one proxy spread over the backends.
    let mut spread = std::collections::BTreeSet::new();
    for i in 1..=24 {
        let header = format!("X-Forwarded-For: 198.51.100.{i}");
        let answer = get_with(TRUSTED, proxy.http, &[header.as_str()]).await;
        spread.insert(echoed(&answer.body, "backend").unwrap().to_owned());
    }
    assert!(spread.len() > 1, "every client hashed as the proxy: {spread:?}");
}

#[tokio::test]
async fn http2_with_prior_knowledge_follows_a_proxy_header() {
    let (proxy, _backend) =
        proxy_with(settings(|s| s.proxy_protocol = proxy_protocol()), Policy::default()).await;
    let mut stream = connect_from(TRUSTED, proxy.http).await;
    stream.write_all(&v1_header("203.0.113.7", 80)).await.unwrap();
    let executor = hyper_util::rt::TokioExecutor::new();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request =
        http::Request::get("http://app.example/").body(http_body_util::Empty::<bytes::Bytes>::new());
    let response = sender.send_request(request.unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(echoed(&body, "header: x-real-ip"), Some("203.0.113.7"), "{body}");
}
