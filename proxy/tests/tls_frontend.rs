//! The TLS frontend: `ssl-passthrough` (the ClientHello read first, a passthrough host's
//! connection spliced undecrypted to its backend, every other one terminated on the same port),
//! and the handshake settings of `ssl-ciphers` and `ssl-prefer-server-ciphers`.
//!
//! Follows ingress-nginx's test/e2e/settings/ssl_passthrough.go (the backend's own TLS answers
//! an annotated host; another host on the same port is served by the controller) and
//! test/e2e/annotations/sslciphers.go, with nginx's `ssl_ciphers` (TLS 1.2 and below) and
//! `ssl_prefer_server_ciphers` as the template sets them per server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ostium_model::{ServerTls, TlsVersions};
use ostium_proxy::{ConnectionLimits, ProxyConfig};
use ostium_test_support::{EchoBackend, certificate, echoed};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{CipherSuite, NamedGroup, SupportedCipherSuite};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS echo backend with a certificate of its own for `name`, and that certificate.
async fn tls_backend(name: &str) -> (EchoBackend, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    (EchoBackend::start_tls(name, Arc::new(config)).await, generated.cert.der().clone())
}

/// What one HTTPS request with SNI `sni` (none for an IP address) got: the certificate
/// presented, the suite negotiated and the echo backend that answered.
struct Exchange {
    certificate: CertificateDer<'static>,
    suite: CipherSuite,
    backend: Option<String>,
}

async fn exchange(
    addr: std::net::SocketAddr,
    sni: &str,
    suites: Option<Vec<SupportedCipherSuite>>,
) -> Exchange {
    let provider = match suites {
        Some(cipher_suites) => CryptoProvider { cipher_suites, ..default_provider() },
        None => default_provider(),
    };
    let mut config = ostium_proxy::upstream_tls_config(Arc::new(provider));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, stream).await.unwrap();
    let (_, connection) = tls.get_ref();
    let certificate = connection.peer_certificates().unwrap()[0].clone();
    let suite = connection.negotiated_cipher_suite().unwrap().suite();
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    let answer = parse(&bytes);
    assert_eq!(answer.status, 200, "{sni}: {answer:?}");
    Exchange { certificate, suite, backend: echoed(&answer.body, "backend").map(str::to_owned) }
}

#[tokio::test]
async fn a_passthrough_host_reaches_its_backend_undecrypted_and_the_others_are_terminated() {
    let (passed, passed_certificate) = tls_backend("pass.example.com").await;
    let terminated = EchoBackend::start("terminated").await;
    let own = certificate(&["app.example.com"]);
    let default = certificate(&["default.invalid"]);
    let proxy = Harness::start(
        TableBuilder::with_default_certificate(default.clone())
            .site(Some("app.example.com"), "terminated", terminated.addr, Default::default())
            .site(None, "terminated", terminated.addr, Default::default())
            .tls("app.example.com", own.clone())
            .passthrough("pass.example.com", "passed", passed.addr)
            .build(),
    )
    .await;

    let through = exchange(proxy.https, "pass.example.com", None).await;
    assert_eq!(through.certificate, passed_certificate, "the backend's own certificate");
    assert_eq!(through.backend.as_deref(), Some("pass.example.com"));
    assert_eq!(passed.requests(), 1);

    let app = exchange(proxy.https, "app.example.com", None).await;
    assert_eq!(app.certificate, own.key.cert[0], "ostium's certificate for the host");
    assert_eq!(app.backend.as_deref(), Some("terminated"));

    // An IP address is sent without SNI.
    let no_sni = exchange(proxy.https, "127.0.0.1", None).await;
    assert_eq!(no_sni.certificate, default.key.cert[0]);
    assert_eq!(no_sni.backend.as_deref(), Some("terminated"));
    assert_eq!(passed.requests(), 1, "only the passthrough host reached the TLS backend");
}

#[tokio::test]
async fn without_passthrough_the_host_is_terminated_like_any_other() {
    let (tls_backend, tls_certificate) = tls_backend("pass.example.com").await;
    let terminated = EchoBackend::start("terminated").await;
    let default = certificate(&["default.invalid"]);
    // What translation builds without --enable-ssl-passthrough: the host's routes, no passthrough.
    let proxy = Harness::start(
        TableBuilder::with_default_certificate(default.clone())
            .site(Some("pass.example.com"), "terminated", terminated.addr, Default::default())
            .build(),
    )
    .await;
    let exchange = exchange(proxy.https, "pass.example.com", None).await;
    assert_eq!(exchange.certificate, default.key.cert[0]);
    assert_ne!(exchange.certificate, tls_certificate);
    assert_eq!(exchange.backend.as_deref(), Some("terminated"));
    assert_eq!(tls_backend.requests(), 0);
}

#[tokio::test]
async fn a_passthrough_host_whose_backend_refuses_is_closed_without_a_handshake() {
    let proxy = Harness::start(
        TableBuilder::new().passthrough("pass.example.com", "gone", closed_port().await).build(),
    )
    .await;
    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let server_name = ServerName::try_from("pass.example.com").unwrap();
    let result = tls_client(&[]).connect(server_name, stream).await;
    assert!(result.is_err(), "no TLS answer from ostium for a passthrough host");
}

fn tls12(suites: &[SupportedCipherSuite]) -> Option<Vec<SupportedCipherSuite>> {
    Some(suites.to_vec())
}

#[tokio::test]
async fn ssl_ciphers_is_what_a_tls12_client_negotiates_and_tls13_is_untouched() {
    let backend = EchoBackend::start("a").await;
    let only = cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    let proxy = Harness::start(
        TableBuilder::new()
            .site(None, "a", backend.addr, Default::default())
            .server_tls(
                "ciphers.example.com",
                ServerTls { tls12_cipher_suites: Some(Arc::new([only])), ..ServerTls::default() },
            )
            .build(),
    )
    .await;
    let every_tls12 = [
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        only,
    ];

    let restricted = exchange(proxy.https, "ciphers.example.com", tls12(&every_tls12)).await;
    assert_eq!(restricted.suite, only.suite());
    let other = exchange(proxy.https, "other.example.com", tls12(&every_tls12)).await;
    assert_eq!(other.suite, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "the server's first");

    // A client that offers none of the host's suites gets no handshake.
    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let provider = CryptoProvider { cipher_suites: every_tls12[..2].to_vec(), ..default_provider() };
    let config = ostium_proxy::upstream_tls_config(Arc::new(provider));
    let server_name = ServerName::try_from("ciphers.example.com").unwrap();
    assert!(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, stream).await.is_err());

    // nginx's ssl_ciphers sets the TLS 1.2 list only: TLS 1.3 keeps its suites.
    let tls13 = exchange(proxy.https, "ciphers.example.com", None).await;
    assert_eq!(tls13.suite, CipherSuite::TLS13_AES_256_GCM_SHA384);
}

#[tokio::test]
async fn ssl_prefer_server_ciphers_off_lets_the_client_order_decide() {
    let backend = EchoBackend::start("a").await;
    let proxy = Harness::start(
        TableBuilder::new()
            .site(None, "a", backend.addr, Default::default())
            .server_tls(
                "client.example.com",
                ServerTls { prefer_server_ciphers: Some(false), ..ServerTls::default() },
            )
            .build(),
    )
    .await;
    let client_order = [
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ];
    let client = exchange(proxy.https, "client.example.com", tls12(&client_order)).await;
    assert_eq!(client.suite, client_order[0].suite(), "the client's first choice");
    let server = exchange(proxy.https, "server.example.com", tls12(&client_order)).await;
    assert_eq!(server.suite, client_order[1].suite(), "the server's first choice by default");
}

/// What `openssl s_client` says of a handshake with the HTTPS listener, with `args`.
fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "any.example.com"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The ConfigMap's `ssl-protocols`, `ssl-ecdh-curve` and `ssl-session-tickets` (nginx's
/// `ssl_protocols`, `ssl_ecdh_curve`, `ssl_session_tickets`), seen by OpenSSL's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_protocols_curves_and_session_tickets_reach_a_real_client() {
    let backend = EchoBackend::start("a").await;
    let table = |settings: ServerTls| {
        TableBuilder::new()
            .site(None, "a", backend.addr, Default::default())
            .default_server_tls(settings)
            .build()
    };
    let proxy = Harness::start(table(ServerTls::default())).await;
    let https = proxy.https;
    let defaults = tokio::task::spawn_blocking(move || s_client(https, &["-tls1_2"])).await.unwrap();
    assert!(defaults.contains("Protocol  : TLSv1.2") || defaults.contains("TLSv1.2"), "{defaults}");
    assert!(!defaults.contains("TLS session ticket lifetime hint"), "no tickets by default: {defaults}");

    proxy.store.publish(Arc::new(table(ServerTls {
        versions: Some(TlsVersions::Tls13),
        kx_groups: Some(Arc::new([NamedGroup::secp384r1])),
        ..ServerTls::default()
    })));
    let tls12 = tokio::task::spawn_blocking(move || s_client(https, &["-tls1_2"])).await.unwrap();
    assert!(
        tls12.contains("alert")
            || tls12.contains("no protocols available")
            || tls12.contains("Cipher is (NONE)"),
        "{tls12}"
    );
    let tls13 = tokio::task::spawn_blocking(move || s_client(https, &["-tls1_3"])).await.unwrap();
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
    assert!(tls13.contains("P-384") || tls13.contains("secp384r1"), "the one group offered: {tls13}");

    proxy.store.publish(Arc::new(table(ServerTls { session_tickets: Some(true), ..ServerTls::default() })));
    let tickets = tokio::task::spawn_blocking(move || s_client(https, &["-tls1_2"])).await.unwrap();
    assert!(tickets.contains("TLS session ticket lifetime hint"), "{tickets}");
}

async fn with_limits(table: ostium_model::Table, connections: ConnectionLimits) -> Harness {
    Harness::start_with(table, ProxyConfig { access_log: false, connections, ..ProxyConfig::default() }).await
}

/// Whether the server closes `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut bytes = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut bytes)).await.is_ok()
}

#[tokio::test]
async fn a_client_hello_that_never_completes_is_timed_by_the_header_timeout() {
    let limits = ConnectionLimits { client_header_timeout: Duration::from_millis(300), ..Default::default() };
    let proxy = with_limits(TableBuilder::new().build(), limits).await;
    let mut silent = TcpStream::connect(proxy.https).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "silent");
    let mut partial = TcpStream::connect(proxy.https).await.unwrap();
    // A handshake record that announces 512 bytes and sends 4.
    partial.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252]).await.unwrap();
    assert!(closed_within(&mut partial, Duration::from_secs(5)).await, "partial");
}

#[tokio::test]
async fn a_passed_through_connection_counts_against_the_connection_cap() {
    let (passed, _) = tls_backend("pass.example.com").await;
    let limits = ConnectionLimits { max_connections: 1, ..Default::default() };
    let proxy = with_limits(
        TableBuilder::new().passthrough("pass.example.com", "passed", passed.addr).build(),
        limits,
    )
    .await;
    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let server_name = ServerName::try_from("pass.example.com").unwrap();
    let _spliced = tls_client(&[]).connect(server_name, stream).await.unwrap();
    let mut second = TcpStream::connect(proxy.https).await.unwrap();
    assert!(closed_within(&mut second, Duration::from_secs(2)).await, "the second connection was kept");
}
