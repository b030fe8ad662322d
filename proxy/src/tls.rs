//! TLS termination: one `ServerConfig` for the process, whose certificate resolver reads the
//! current table at each handshake (exact SNI name, then one-label wildcard, then the default
//! certificate). Certificates were parsed when the table was built, so a handshake only looks
//! up, and a new table takes effect for the next handshake.

use std::sync::Arc;

use ostium_model::TableReader;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, certificates by SNI from the current table.
pub fn server_config(tables: TableReader, provider: Arc<CryptoProvider>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        // The ring provider supports both versions.
        .expect("TLS 1.2 and 1.3 are supported")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { tables }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's cipher suite order (strongest first) decides, not the client's.
    config.ignore_client_order = true;
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
