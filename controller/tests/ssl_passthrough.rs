//! `--enable-ssl-passthrough` through the whole binary: an Ingress with `ssl-passthrough` has
//! its TLS connections passed to its backend undecrypted, on the same port where other hosts
//! are terminated; without the flag the annotation is reported and ignored. As ingress-nginx's
//! test/e2e/settings/ssl_passthrough.go.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ostium_e2e::Ostium;
use ostium_test_support::{EchoBackend, echoed};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

/// An HTTPS echo backend with its own certificate for `name`, and that certificate.
async fn tls_backend(name: &str) -> (EchoBackend, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![generated.cert.der().clone()], key)
            .unwrap();
    (EchoBackend::start_tls(name, Arc::new(config)).await, generated.cert.der().clone())
}

/// `GET /` over TLS with SNI `host`: the certificate presented and the response's text.
fn https_get(addr: SocketAddr, host: &str) -> (CertificateDer<'static>, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Accepts any certificate, so the test can look at which one was presented.
    let config = Arc::new(ostium_proxy::upstream_tls_config(provider));
    let mut connection =
        rustls::ClientConnection::new(config, ServerName::try_from(host.to_owned()).unwrap()).unwrap();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes);
    let certificate = connection.peer_certificates().unwrap()[0].clone();
    (certificate, String::from_utf8_lossy(&bytes).into_owned())
}

fn manifest(passed: SocketAddr, web: SocketAddr) -> String {
    let service = |name: &str, addr: SocketAddr| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: p, port: {port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: p, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n---\n",
            port = addr.port(),
            ip = addr.ip()
        )
    };
    let ingress = |name: &str, host: &str, port: u16, annotations: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: ostium\n  rules:\n  - host: {host}\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: {port}}}}}}}}}]\n---\n"
        )
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ostium}}\nspec: {{controller: ostium.dev/ingress-controller}}\n---\n{}{}{}{}",
        service("passed", passed),
        service("web", web),
        ingress(
            "passed",
            "pass.example.com",
            passed.port(),
            "nginx.ingress.kubernetes.io/ssl-passthrough: \"true\""
        ),
        ingress("web", "web.example.com", web.port(), ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_a_passthrough_host_gets_its_backend_and_others_are_terminated() {
    let (passed, passed_certificate) = tls_backend("pass.example.com").await;
    let web = EchoBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifest(passed.addr, web.addr)).unwrap();
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--enable-ssl-passthrough"]);
        let (certificate, text) = https_get(ostium.https, "pass.example.com");
        assert_eq!(certificate, passed_certificate, "the backend's own certificate: {}", ostium.log());
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(echoed(&text, "backend"), Some("pass.example.com"));

        let (certificate, text) = https_get(ostium.https, "web.example.com");
        assert_ne!(certificate, passed_certificate);
        assert_eq!(echoed(&text, "backend"), Some("web"), "{text}");
    });
    assert_eq!(passed.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_the_annotation_is_reported_and_the_host_terminated() {
    let (passed, passed_certificate) = tls_backend("pass.example.com").await;
    let web = EchoBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifest(passed.addr, web.addr)).unwrap();
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &[]);
        let (certificate, _) = https_get(ostium.https, "pass.example.com");
        assert_ne!(certificate, passed_certificate, "ostium terminates the connection");
        assert!(ostium.log().contains("needs the flag --enable-ssl-passthrough"), "{}", ostium.log());
    });
    assert_eq!(passed.requests(), 0, "no request reached the backend's TLS");
}
