//! Client certificates (`auth-tls-*`) on loopback TLS connections, with certificates made by
//! rcgen: a CA, a client certificate it issued, one from another CA, an expired one, a revoked
//! one, and none. Expectations follow ingress-nginx's test/e2e/annotations/authtls.go and its
//! nginx.tmpl (400 without a valid certificate, 302 to `auth-tls-error-page`, 403 for
//! `auth-tls-match-cn`, the `ssl-client-*` headers), and nginx's 421 for a request whose host
//! requests certificates on a connection made for another name.

mod support;

use std::sync::Arc;

use ostium_model::{ClientAuth, ClientTrust, ClientVerify, HttpsRedirect, Policy, VerifyClient};
use ostium_test_support::{EchoBackend, echoed_header};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::DistinguishedName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use support::{Answer, Harness, TableBuilder, certificate, parse, provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "secure.example.com";

/// A CA: its certificate and what signs with it.
struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A client's certificate chain and key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca { der, issuer: Issuer::new(params, key) }
}

fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Example");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn identity(params: CertificateParams, ca: &Ca) -> Identity {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Identity { chain: vec![cert.der().clone()], key: PrivateKeyDer::Pkcs8(key.serialize_der().into()) }
}

fn client(common_name: &str, ca: &Ca) -> Identity {
    identity(client_params(common_name), ca)
}

/// Trust in `ca`, with its revocation lists.
fn trust(ca: &Ca, crls: Vec<CertificateRevocationListDer<'static>>) -> Arc<ClientTrust> {
    let anchor = webpki::anchor_from_trusted_cert(&ca.der).unwrap().to_owned();
    let subjects = vec![DistinguishedName::in_sequence(&anchor.subject)];
    Arc::new(ClientTrust { anchors: vec![anchor], subjects, crls })
}

fn verify(mode: VerifyClient, ca: &Ca) -> ClientVerify {
    ClientVerify {
        mode,
        depth: 1,
        trust: trust(ca, Vec::new()),
        error_page: None,
        pass_certificate: false,
        match_cn: None,
        source: "default/ca".into(),
    }
}

/// A proxy serving `HOST` (with `client_auth`) and `open.example.com` (without) from one echo
/// backend.
async fn serve(client_auth: ClientAuth) -> (Harness, EchoBackend) {
    serve_with(client_auth, Policy::default()).await
}

async fn serve_with(client_auth: ClientAuth, policy: Policy) -> (Harness, EchoBackend) {
    let backend = EchoBackend::start("app").await;
    let table = TableBuilder::new()
        .site(Some(HOST), "app", backend.addr, policy.clone())
        .site(Some("open.example.com"), "open", backend.addr, policy)
        .tls(HOST, certificate(&[HOST]))
        .client_auth(Some(HOST), client_auth)
        .build();
    (Harness::start(table).await, backend)
}

/// `GET /` with `Host: host` over TLS with `sni`, presenting `identity` if asked for one.
async fn get(harness: &Harness, sni: &str, host: &str, identity: Option<&Identity>) -> Answer {
    request(harness, sni, &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"), identity)
        .await
}

async fn request(harness: &Harness, sni: &str, head: &str, identity: Option<&Identity>) -> Answer {
    let mut config = ostium_proxy::upstream_tls_config(provider());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if let Some(identity) = identity {
        let key = provider().key_provider.load_private_key(identity.key.clone_key()).unwrap();
        let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), key);
        config.client_auth_cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(harness.https).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = connector.connect(name, stream).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    parse(&bytes)
}

fn header<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
    echoed_header(&answer.body, name)
}

/// authtls.go: "should set sslClientCertificate, sslVerifyClient and sslVerifyDepth with
/// auth-tls-secret" — no certificate gets 400, a valid one passes with its status and names.
#[tokio::test]
async fn on_requires_a_certificate_the_hosts_ca_issued() {
    let (ca, other) = (ca("Test CA"), ca("Other CA"));
    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::On, &ca))).await;

    let none = get(&harness, HOST, HOST, None).await;
    assert_eq!((none.status, none.body.as_str()), (400, "400 No required SSL certificate was sent\n"));
    let foreign = get(&harness, HOST, HOST, Some(&client("alice", &other))).await;
    assert_eq!((foreign.status, foreign.body.as_str()), (400, "400 The SSL certificate error\n"));
    let mut expired = client_params("alice");
    (expired.not_before, expired.not_after) = (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1));
    assert_eq!(get(&harness, HOST, HOST, Some(&identity(expired, &ca))).await.status, 400);

    let valid = get(&harness, HOST, HOST, Some(&client("alice", &ca))).await;
    assert_eq!(valid.status, 200, "{valid:?}");
    assert_eq!(header(&valid, "ssl-client-verify"), ["SUCCESS"]);
    assert_eq!(header(&valid, "ssl-client-subject-dn"), ["CN=alice,O=Example"]);
    assert_eq!(header(&valid, "ssl-client-issuer-dn"), ["CN=Test CA"]);
    assert!(header(&valid, "ssl-client-cert").is_empty());
    harness.shutdown().await;
}

/// nginx's `optional`: no certificate passes (`NONE`), an invalid one does not; what a client
/// sends in `ssl-client-*` itself never reaches the backend.
#[tokio::test]
async fn optional_lets_clients_without_a_certificate_through() {
    let (ca, other) = (ca("Test CA"), ca("Other CA"));
    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::Optional, &ca))).await;

    let forged = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin\r\nConnection: close\r\n\r\n"
    );
    let none = request(&harness, HOST, &forged, None).await;
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(header(&none, "ssl-client-verify"), ["NONE"]);
    assert!(header(&none, "ssl-client-subject-dn").is_empty());
    assert_eq!(get(&harness, HOST, HOST, Some(&client("alice", &other))).await.status, 400);
    let valid = get(&harness, HOST, HOST, Some(&client("alice", &ca))).await;
    assert_eq!(header(&valid, "ssl-client-verify"), ["SUCCESS"]);
    harness.shutdown().await;
}

/// nginx's `optional_no_ca`: a certificate of an unknown CA passes, with its failure reported
/// upstream; other faults (here: expiry) still get 400.
#[tokio::test]
async fn optional_no_ca_lets_certificates_of_other_cas_through() {
    let (ca, other) = (ca("Test CA"), ca("Other CA"));
    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::OptionalNoCa, &ca))).await;

    let foreign = get(&harness, HOST, HOST, Some(&client("mallory", &other))).await;
    assert_eq!(foreign.status, 200, "{foreign:?}");
    assert_eq!(header(&foreign, "ssl-client-verify"), ["FAILED:unable to get local issuer certificate"]);
    assert_eq!(header(&foreign, "ssl-client-issuer-dn"), ["CN=Other CA"]);
    let mut expired = client_params("alice");
    (expired.not_before, expired.not_after) = (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1));
    assert_eq!(get(&harness, HOST, HOST, Some(&identity(expired, &ca))).await.status, 400);
    harness.shutdown().await;
}

/// authtls.go: "should pass URL-encoded certificate to upstream".
#[tokio::test]
async fn the_certificate_goes_upstream_url_escaped() {
    let ca = ca("Test CA");
    let client = client("alice", &ca);
    let rules = ClientVerify { pass_certificate: true, ..verify(VerifyClient::On, &ca) };
    let (harness, _backend) = serve(ClientAuth::Verify(rules)).await;

    let answer = get(&harness, HOST, HOST, Some(&client)).await;
    let passed = header(&answer, "ssl-client-cert");
    assert_eq!(passed.len(), 1, "{answer:?}");
    assert!(passed[0].starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{}", passed[0]);
    let pem = passed[0].replace("%0A", "\n").replace("%20", " ").replace("%2B", "+").replace("%2F", "/");
    let pem = pem.replace("%3D", "=");
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap();
    assert_eq!(der, client.chain[0]);
    harness.shutdown().await;
}

/// authtls.go: "should return 403 using auth-tls-match-cn with no matching CN from client" and
/// "… where atleast one of the regex options matches".
#[tokio::test]
async fn match_cn_refuses_other_subjects() {
    let ca = ca("Test CA");
    let only_bob = ClientVerify {
        match_cn: Some(regex::Regex::new("CN=bob").unwrap()),
        ..verify(VerifyClient::On, &ca)
    };
    let (harness, _backend) = serve(ClientAuth::Verify(only_bob)).await;
    let refused = get(&harness, HOST, HOST, Some(&client("alice", &ca))).await;
    assert_eq!((refused.status, refused.body.as_str()), (403, "client certificate unauthorized"));
    assert_eq!(get(&harness, HOST, HOST, Some(&client("bob", &ca))).await.status, 200);
    harness.shutdown().await;

    let either = regex::Regex::new("CN=(bob|alice)").unwrap();
    let either = ClientVerify { match_cn: Some(either), ..verify(VerifyClient::On, &ca) };
    let (harness, _backend) = serve(ClientAuth::Verify(either)).await;
    assert_eq!(get(&harness, HOST, HOST, Some(&client("alice", &ca))).await.status, 200);
    harness.shutdown().await;
}

/// authtls.go: "should 302 redirect to error page instead of 400 when auth-tls-error-page is
/// set".
#[tokio::test]
async fn the_error_page_replaces_400() {
    let (ca, other) = (ca("Test CA"), ca("Other CA"));
    let page = http::HeaderValue::from_static("http://login.example.com/error");
    let rules = ClientVerify { error_page: Some(page), ..verify(VerifyClient::On, &ca) };
    let (harness, _backend) = serve(ClientAuth::Verify(rules)).await;

    let none = get(&harness, HOST, HOST, None).await;
    assert_eq!((none.status, none.header("location")), (302, Some("http://login.example.com/error")));
    let foreign = get(&harness, HOST, HOST, Some(&client("alice", &other))).await;
    assert_eq!(foreign.status, 302);
    assert_eq!(get(&harness, HOST, HOST, Some(&client("alice", &ca))).await.status, 200);
    harness.shutdown().await;
}

/// A connection made for another name (or none) cannot carry a request for a host that
/// requests certificates: its certificate was not judged by that host's rules (nginx: 421).
/// The other way round is fine.
#[tokio::test]
async fn a_request_for_another_host_than_the_handshakes_is_misdirected() {
    let ca = ca("Test CA");
    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::On, &ca))).await;
    let alice = client("alice", &ca);

    let misdirected = get(&harness, "open.example.com", HOST, Some(&alice)).await;
    assert_eq!(misdirected.status, 421, "{misdirected:?}");
    let mut ip = ostium_proxy::upstream_tls_config(provider());
    ip.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = TcpStream::connect(harness.https).await.unwrap();
    let no_sni = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(ip)).connect(no_sni, stream).await.unwrap();
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    assert_eq!(parse(&bytes).status, 421);

    let elsewhere = get(&harness, HOST, "open.example.com", None).await;
    assert_eq!(elsewhere.status, 200, "{elsewhere:?}");
    assert!(header(&elsewhere, "ssl-client-verify").is_empty());
    harness.shutdown().await;
}

/// `ca.crl`: a revoked certificate gets 400; with revocation lists, every certificate must be
/// covered by one (nginx's `ssl_crl` checks the whole chain).
#[tokio::test]
async fn revoked_certificates_are_refused() {
    let ca = ca("Test CA");
    let mut revoked = client_params("alice");
    revoked.serial_number = Some(SerialNumber::from(42u64));
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(42u64),
            revocation_time: date_time_ymd(2020, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = crl.signed_by(&ca.issuer).unwrap().der().clone();
    let rules = ClientVerify { trust: trust(&ca, vec![crl]), ..verify(VerifyClient::Optional, &ca) };
    let (harness, _backend) = serve(ClientAuth::Verify(rules)).await;

    assert_eq!(get(&harness, HOST, HOST, Some(&identity(revoked, &ca))).await.status, 400);
    let valid = get(&harness, HOST, HOST, Some(&client("bob", &ca))).await;
    assert_eq!(header(&valid, "ssl-client-verify"), ["SUCCESS"], "{valid:?}");
    harness.shutdown().await;
}

/// `auth-tls-verify-depth`: intermediates between the client's certificate and the CA.
#[tokio::test]
async fn the_chain_may_be_as_deep_as_verify_depth() {
    let ca = ca("Test CA");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "Intermediate CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let intermediate = Ca {
        der: params.signed_by(&key, &ca.issuer).unwrap().der().clone(),
        issuer: Issuer::new(params, key),
    };
    let mut alice = client("alice", &intermediate);
    alice.chain.push(intermediate.der.clone());

    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::On, &ca))).await;
    let one = get(&harness, HOST, HOST, Some(&alice)).await;
    assert_eq!(header(&one, "ssl-client-issuer-dn"), ["CN=Intermediate CA"], "{one:?}");
    harness.shutdown().await;

    let shallow = ClientVerify { depth: 0, ..verify(VerifyClient::Optional, &ca) };
    let (harness, _backend) = serve(ClientAuth::Verify(shallow)).await;
    assert_eq!(get(&harness, HOST, HOST, Some(&alice)).await.status, 400);
    harness.shutdown().await;
}

/// Plain HTTP has no certificate to judge: nginx serves it (only `auth-tls-match-cn` refuses),
/// and sets no `ssl-client-*` header. A host whose rules cannot be applied refuses everything.
#[tokio::test]
async fn plain_http_and_refused_hosts() {
    let ca = ca("Test CA");
    let no_redirect = Policy { https_redirect: HttpsRedirect::Never, ..Policy::default() };
    let (harness, _backend) =
        serve_with(ClientAuth::Verify(verify(VerifyClient::On, &ca)), no_redirect).await;
    let forged =
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nssl-client-verify: SUCCESS\r\nConnection: close\r\n\r\n");
    let plain = support::raw(harness.http, forged.as_bytes()).await;
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(header(&plain, "ssl-client-verify").is_empty());
    harness.shutdown().await;

    let (harness, _backend) = serve(ClientAuth::Refused).await;
    assert_eq!(get(&harness, HOST, HOST, Some(&client("alice", &ca))).await.status, 403);
    assert_eq!(support::get(harness.http, HOST, "/").await.status, 403);
    assert_eq!(get(&harness, "open.example.com", "open.example.com", None).await.status, 200);
    harness.shutdown().await;
}

/// Records whether the server asked for a client certificate, and with which CA names.
#[derive(Debug, Default)]
struct AskedFor(std::sync::Mutex<Option<Vec<Vec<u8>>>>);

impl rustls::client::ResolvesClientCert for AskedFor {
    fn resolve(
        &self,
        hints: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        *self.0.lock().unwrap() = Some(hints.iter().map(|hint| hint.to_vec()).collect());
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Only a host that requests certificates asks for one in the handshake, naming its CA; other
/// hosts' handshakes are the default ones.
#[tokio::test]
async fn only_hosts_with_client_certificate_rules_ask_for_one() {
    let ca = ca("Test CA");
    let (harness, _backend) = serve(ClientAuth::Verify(verify(VerifyClient::On, &ca))).await;
    for (sni, asked) in [(HOST, true), ("open.example.com", false)] {
        let resolver = Arc::new(AskedFor::default());
        let mut config = ostium_proxy::upstream_tls_config(provider());
        config.client_auth_cert_resolver = resolver.clone();
        let stream = TcpStream::connect(harness.https).await.unwrap();
        let name = ServerName::try_from(sni).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.unwrap();
        tls.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut bytes = Vec::new();
        let _ = tls.read_to_end(&mut bytes).await;
        let hints = resolver.0.lock().unwrap().clone();
        assert_eq!(hints.is_some(), asked, "{sni}");
        if let Some(hints) = hints {
            let anchor = webpki::anchor_from_trusted_cert(&ca.der).unwrap();
            assert_eq!(hints, [DistinguishedName::in_sequence(&anchor.subject).as_ref().to_vec()]);
        }
    }
    harness.shutdown().await;

    let verify_off = ClientAuth::Verify(verify(VerifyClient::Off, &ca));
    let (harness, _backend) = serve(verify_off).await;
    let answer = get(&harness, HOST, HOST, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(header(&answer, "ssl-client-verify"), ["NONE"]);
    harness.shutdown().await;
}

/// Without SNI, the handshake looks up the rules without a host, as requests for an unknown
/// host (an IP address) are routed: such requests carry the certificate judged by them.
#[tokio::test]
async fn a_handshake_without_sni_serves_the_hostless_rules() {
    let ca = ca("Test CA");
    let backend = EchoBackend::start("app").await;
    let table = TableBuilder::new()
        .site(None, "app", backend.addr, Policy::default())
        .client_auth(None, ClientAuth::Verify(verify(VerifyClient::On, &ca)))
        .build();
    let harness = Harness::start(table).await;
    let alice = client("alice", &ca);
    let mut config = ostium_proxy::upstream_tls_config(provider());
    let key = provider().key_provider.load_private_key(alice.key.clone_key()).unwrap();
    let certified = rustls::sign::CertifiedKey::new(alice.chain.clone(), key);
    config.client_auth_cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let stream = TcpStream::connect(harness.https).await.unwrap();
    let no_sni = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(no_sni, stream).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    let answer = parse(&bytes);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(header(&answer, "ssl-client-verify"), ["SUCCESS"]);
    harness.shutdown().await;
}

/// A connection's verdict counts only under the rules it was judged by: a newer table with equal
/// rules keeps it, but once the host's CA changes the next request on the connection is
/// misdirected (421), so the client connects again and is judged anew.
#[tokio::test]
async fn a_verdict_does_not_outlive_the_rules_it_was_judged_by() {
    let (ca, other) = (ca("Test CA"), ca("Other CA"));
    let backend = EchoBackend::start("app").await;
    let table = |ca: &Ca| {
        TableBuilder::new()
            .site(Some(HOST), "app", backend.addr, Policy::default())
            .tls(HOST, certificate(&[HOST]))
            .client_auth(Some(HOST), ClientAuth::Verify(verify(VerifyClient::On, ca)))
            .build()
    };
    let harness = Harness::start(table(&ca)).await;
    let alice = client("alice", &ca);
    let mut config = ostium_proxy::upstream_tls_config(provider());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let key = provider().key_provider.load_private_key(alice.key.clone_key()).unwrap();
    let certified = rustls::sign::CertifiedKey::new(alice.chain.clone(), key);
    config.client_auth_cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(harness.https).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from(HOST.to_owned()).unwrap(), stream).await.unwrap();
    // HEAD answers end with their head, so the connection stays usable.
    let head_status = async |tls: &mut tokio_rustls::client::TlsStream<TcpStream>| {
        tls.write_all(format!("HEAD / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        while !bytes.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(tls.read(&mut byte).await.unwrap(), 1, "connection closed early");
            bytes.push(byte[0]);
        }
        parse(&bytes).status
    };
    assert_eq!(head_status(&mut tls).await, 200);
    harness.publish(table(&ca));
    assert_eq!(head_status(&mut tls).await, 200, "equal rules from a newer table");
    harness.publish(table(&other));
    assert_eq!(head_status(&mut tls).await, 421, "judged by a CA the host no longer trusts");
}
