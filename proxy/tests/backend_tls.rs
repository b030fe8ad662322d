//! TLS toward the endpoints (`proxy-ssl-*`), against loopback backends whose certificates come
//! from a CA of their own, made with rcgen. As ingress-nginx's nginx.tmpl sets nginx's
//! proxy_ssl_trusted_certificate, proxy_ssl_verify, proxy_ssl_verify_depth, proxy_ssl_name,
//! proxy_ssl_server_name and proxy_ssl_certificate (internal/ingress/annotations/proxyssl/main.go):
//! a certificate that does not verify fails the handshake, and the client gets 502.

mod support;

use std::sync::{Arc, Mutex};

use ostium_model::{
    BackendTls, BackendTlsSettings, DEFAULT_BACKEND_TLS_NAME, Policy, Protocol, Verification,
};
use ostium_test_support::{EchoBackend, echoed};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, RootCertStore, ServerConfig};
use support::{Harness, TableBuilder, get, provider};

/// A certificate authority of the test's own.
struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate chain (leaf first) and the leaf's key.
type Issued = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl Ca {
    fn new(name: &str) -> Self {
        Self(CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().unwrap()).unwrap())
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> Self {
        Self(CertifiedIssuer::signed_by(ca_params(name), KeyPair::generate().unwrap(), &*self.0).unwrap())
    }

    fn der(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    /// A certificate for `names` signed by this CA, with its key.
    fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &*self.0).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

/// Presents one certificate and records the SNI name of every handshake.
#[derive(Debug)]
struct RecordingSni {
    key: Arc<CertifiedKey>,
    seen: Mutex<Vec<Option<String>>>,
}

impl ResolvesServerCert for RecordingSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.seen.lock().unwrap().push(hello.server_name().map(str::to_owned));
        Some(self.key.clone())
    }
}

/// A TLS echo backend presenting `issued`, asking for a client certificate from `client_ca`
/// when given; and what SNI it saw.
async fn backend(issued: Issued, client_ca: Option<&Ca>) -> (EchoBackend, Arc<RecordingSni>) {
    let (chain, key) = issued;
    let key = Arc::new(CertifiedKey::from_der(chain, key, &provider()).unwrap());
    let sni = Arc::new(RecordingSni { key, seen: Mutex::default() });
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            builder.with_client_cert_verifier(verifier.build().unwrap())
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(sni.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (EchoBackend::start_tls("tls", Arc::new(config)).await, sni)
}

/// Settings verifying with `ca` (none: unverified), checking `name`, TLS 1.2 and 1.3.
fn settings(ca: Option<&Ca>, name: &str) -> BackendTlsSettings {
    BackendTlsSettings {
        source: "default/backend-tls".into(),
        verify: ca.map(|ca| Verification { ca: vec![ca.der()], depth: 1 }),
        server_name: ServerName::try_from(name.to_owned()).unwrap(),
        send_server_name: false,
        versions: vec![ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3],
        cipher_suites: None,
        client_certificate: None,
    }
}

fn policy(settings: BackendTlsSettings, client_key: Option<PrivateKeyDer<'static>>) -> Policy {
    let tls = BackendTls::new(settings, client_key, &provider()).unwrap();
    Policy { backend_tls: Some(Arc::new(tls)), ..Policy::default() }
}

#[tokio::test]
async fn a_backend_certificate_from_the_trusted_ca_for_the_name_is_accepted() {
    let ca = Ca::new("backend CA");
    let (tls, _) = backend(ca.issue(&["backend.internal"]), None).await;
    let table = TableBuilder::new()
        .https_site("a.example", "tls", tls.addr, policy(settings(Some(&ca), "backend.internal"), None))
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "a.example", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(echoed(&answer.body, "backend"), Some("tls"));
}

/// GRPCS (HTTP/2 over TLS) gets the route's settings too.
#[tokio::test]
async fn grpcs_backends_are_verified_alike() {
    let (ca, other) = (Ca::new("backend CA"), Ca::new("another CA"));
    let (trusted, _) = backend(ca.issue(&["backend.internal"]), None).await;
    let (untrusted, _) = backend(other.issue(&["backend.internal"]), None).await;
    let verified = || policy(settings(Some(&ca), "backend.internal"), None);
    let table = TableBuilder::new()
        .tls_site("trusted.example", "trusted", trusted.addr, verified(), Protocol::Grpcs)
        .tls_site("untrusted.example", "untrusted", untrusted.addr, verified(), Protocol::Grpcs)
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "trusted.example", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(echoed(&answer.body, "version"), Some("HTTP/2.0"));
    assert_eq!(get(proxy.http, "untrusted.example", "/").await.status, 502);
}

#[tokio::test]
async fn a_backend_certificate_from_another_ca_fails_with_502() {
    let (ca, other) = (Ca::new("backend CA"), Ca::new("another CA"));
    let (tls, _) = backend(other.issue(&["backend.internal"]), None).await;
    let table = TableBuilder::new()
        .https_site(
            "verified.example",
            "verified",
            tls.addr,
            policy(settings(Some(&ca), "backend.internal"), None),
        )
        .https_site(
            "unverified.example",
            "unverified",
            tls.addr,
            policy(settings(None, "backend.internal"), None),
        )
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "verified.example", "/").await;
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert_eq!(tls.requests(), 0);
    // `proxy-ssl-verify: off`: the same backend is used.
    assert_eq!(get(proxy.http, "unverified.example", "/").await.status, 200);
}

/// Without `proxy-ssl-name`, nginx checks the host of ingress-nginx's `proxy_pass`, its
/// upstream block `upstream_balancer` (kubernetes/ingress-nginx#4928 shows the resulting 502).
#[tokio::test]
async fn the_name_checked_is_upstream_balancer_unless_proxy_ssl_name_says_otherwise() {
    let ca = Ca::new("backend CA");
    let (tls, _) = backend(ca.issue(&["backend.internal"]), None).await;
    let (balancer, _) = backend(ca.issue(&[DEFAULT_BACKEND_TLS_NAME]), None).await;
    let table = TableBuilder::new()
        .https_site(
            "default.example",
            "default",
            tls.addr,
            policy(settings(Some(&ca), DEFAULT_BACKEND_TLS_NAME), None),
        )
        .https_site("named.example", "named", tls.addr, policy(settings(Some(&ca), "backend.internal"), None))
        .https_site("wrong.example", "wrong", tls.addr, policy(settings(Some(&ca), "other.internal"), None))
        .https_site(
            "balancer.example",
            "balancer",
            balancer.addr,
            policy(settings(Some(&ca), DEFAULT_BACKEND_TLS_NAME), None),
        )
        .build();
    let proxy = Harness::start(table).await;
    for (host, status) in
        [("default.example", 502), ("named.example", 200), ("wrong.example", 502), ("balancer.example", 200)]
    {
        let answer = get(proxy.http, host, "/").await;
        assert_eq!(answer.status, status, "{host}: {}", answer.head);
    }
}

#[tokio::test]
async fn the_name_is_sent_as_sni_only_with_proxy_ssl_server_name() {
    let ca = Ca::new("backend CA");
    let (with_sni, seen_with) = backend(ca.issue(&["backend.internal"]), None).await;
    let (without_sni, seen_without) = backend(ca.issue(&["backend.internal"]), None).await;
    let sni = BackendTlsSettings { send_server_name: true, ..settings(Some(&ca), "backend.internal") };
    let table = TableBuilder::new()
        .https_site("sni.example", "sni", with_sni.addr, policy(sni, None))
        .https_site(
            "plain.example",
            "plain",
            without_sni.addr,
            policy(settings(Some(&ca), "backend.internal"), None),
        )
        .build();
    let proxy = Harness::start(table).await;
    assert_eq!(get(proxy.http, "sni.example", "/").await.status, 200);
    assert_eq!(get(proxy.http, "plain.example", "/").await.status, 200);
    assert_eq!(*seen_with.seen.lock().unwrap(), [Some("backend.internal".to_owned())]);
    assert_eq!(*seen_without.seen.lock().unwrap(), [None]);
}

#[tokio::test]
async fn the_client_certificate_is_presented_to_a_backend_that_requires_one() {
    let (ca, client_ca) = (Ca::new("backend CA"), Ca::new("client CA"));
    let (tls, _) = backend(ca.issue(&["backend.internal"]), Some(&client_ca)).await;
    let (chain, key) = client_ca.issue(&["ostium.client"]);
    let with_certificate =
        BackendTlsSettings { client_certificate: Some(chain), ..settings(Some(&ca), "backend.internal") };
    let table = TableBuilder::new()
        .https_site("with.example", "with", tls.addr, policy(with_certificate, Some(key)))
        .https_site(
            "without.example",
            "without",
            tls.addr,
            policy(settings(Some(&ca), "backend.internal"), None),
        )
        .build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "with.example", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(get(proxy.http, "without.example", "/").await.status, 502);
}

/// OpenSSL's verify depth counts the intermediate certificates between the endpoint's and a
/// trusted one.
#[tokio::test]
async fn the_verify_depth_bounds_the_intermediate_certificates() {
    let root = Ca::new("root CA");
    let first = root.intermediate("first intermediate");
    let second = first.intermediate("second intermediate");
    let (mut chain, key) = second.issue(&["backend.internal"]);
    chain.extend([second.der(), first.der()]);
    let (tls, _) = backend((chain, key), None).await;
    let depth = |depth| {
        let mut settings = settings(Some(&root), "backend.internal");
        settings.verify.as_mut().unwrap().depth = depth;
        policy(settings, None)
    };
    let table = TableBuilder::new()
        .https_site("one.example", "one", tls.addr, depth(1))
        .https_site("two.example", "two", tls.addr, depth(2))
        .build();
    let proxy = Harness::start(table).await;
    assert_eq!(get(proxy.http, "one.example", "/").await.status, 502);
    assert_eq!(get(proxy.http, "two.example", "/").await.status, 200);
}
