//! TLS termination: one `ServerConfig` for the process, whose certificate resolver reads the
//! current table at each handshake (exact SNI name, then one-label wildcard, then the default
//! certificate). Certificates were parsed when the table was built, so a handshake only looks
//! up, and a new table takes effect for the next handshake. Hosts that request client
//! certificates get a configuration of their own, chosen by SNI from the ClientHello.

use std::sync::Arc;

use ostium_model::{ClientVerify, TableReader};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::client_cert::AnyClientCertificate;

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, certificates by SNI from the current table.
pub fn server_config(tables: TableReader, provider: Arc<CryptoProvider>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        // The ring provider supports both versions.
        .expect("TLS 1.2 and 1.3 are supported")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { tables }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's cipher suite order (strongest first) decides, not the client's.
    config.ignore_client_order = true;
    Arc::new(config)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `default` for a handshake with a host that requests client certificates (`auth-tls-*`):
/// the same certificates and protocols, and a request for a certificate naming the host's CAs.
/// Made per handshake (the cost is small beside the handshake's), and without session
/// resumption, so that no session of another host, or of an older configuration, stands in for
/// the certificate.
pub(crate) fn with_client_certificates(default: &ServerConfig, verify: &ClientVerify) -> Arc<ServerConfig> {
    let provider = default.crypto_provider().clone();
    let verifier = AnyClientCertificate::new(&verify.trust, provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .expect("the default configuration has these versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(default.cert_resolver.clone());
    config.alpn_protocols.clone_from(&default.alpn_protocols);
    config.ignore_client_order = default.ignore_client_order;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

#[derive(Debug)]
struct SniResolver {
    tables: TableReader,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.tables.load().tls().resolve(hello.server_name()).clone())
    }
}
