//! TLS termination: one `ServerConfig` for the process, whose certificate resolver reads the
//! current table at each handshake (exact SNI name, then one-label wildcard, then the default
//! certificate). Certificates were parsed when the table was built, so a handshake only looks
//! up, and a new table takes effect for the next handshake.
//!
//! Hosts with handshake settings of their own (`ssl-ciphers`, `ssl-prefer-server-ciphers`) are
//! served with a config derived from that one, chosen by the SNI of the ClientHello read before
//! the handshake.
//! Hosts that request client certificates get a configuration of their own too, derived per
//! handshake.

use std::sync::{Arc, Mutex};

use ostium_model::{ClientVerify, ServerTls, TableReader, TlsVersions};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
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

/// The versions `ssl-protocols` leaves (both by default).
fn protocol_versions(versions: Option<TlsVersions>) -> &'static [&'static rustls::SupportedProtocolVersion] {
    const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match versions {
        Some(TlsVersions::Tls12) => TLS12,
        Some(TlsVersions::Tls13) => TLS13,
        Some(TlsVersions::Both) | None => VERSIONS,
    }
}

/// `default` for a handshake with a host that requests client certificates (`auth-tls-*`):
/// the same certificates and protocols, and a request for a certificate naming the host's CAs.
/// Made per handshake (the cost is small beside the handshake's), and without session
/// resumption, so that no session of another host, or of an older configuration, stands in for
/// the certificate.
pub(crate) fn with_client_certificates(
    default: &ServerConfig,
    verify: &ClientVerify,
    versions: Option<TlsVersions>,
) -> Arc<ServerConfig> {
    let provider = default.crypto_provider().clone();
    let verifier = AnyClientCertificate::new(&verify.trust, provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(versions))
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

/// Distinct host settings kept at most; beyond, the derived configs are made anew (settings
/// change only with the configuration, so this bounds what retired settings leave behind).
const MAX_DERIVED_CONFIGS: usize = 64;

/// The listener's config, and those derived from it for hosts with settings of their own.
#[derive(Debug)]
pub(crate) struct HostConfigs {
    base: Arc<ServerConfig>,
    derived: Mutex<Vec<(ServerTls, Arc<ServerConfig>)>>,
    /// For `ssl-session-tickets`: one ticket key rotation shared by every config, so that a
    /// ticket stays good across configuration changes.
    ticketer: Option<Arc<dyn ProducesTickets>>,
}

impl HostConfigs {
    pub(crate) fn new(base: Arc<ServerConfig>) -> Self {
        let ticketer = match rustls::crypto::ring::Ticketer::new() {
            Ok(ticketer) => Some(ticketer),
            Err(error) => {
                tracing::warn!(%error, "no TLS session tickets: the system gave no randomness");
                None
            }
        };
        Self { base, derived: Mutex::new(Vec::new()), ticketer }
    }

    /// The config for a host's settings (`None`: the listener's own).
    pub(crate) fn get(&self, settings: Option<&ServerTls>) -> Arc<ServerConfig> {
        let Some(settings) = settings else { return self.base.clone() };
        let mut derived = self.derived.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, config)) = derived.iter().find(|(s, _)| s == settings) {
            return config.clone();
        }
        if derived.len() >= MAX_DERIVED_CONFIGS {
            derived.clear();
        }
        let config = derive(&self.base, settings, self.ticketer.as_ref());
        derived.push((settings.clone(), config.clone()));
        config
    }
}

/// `base` with a host's settings: its TLS 1.2 cipher suites (the TLS 1.3 ones stay), whose
/// order of suites decides, its versions, key exchange groups and session resumption.
/// Certificates and ALPN are `base`'s, and so is the session cache when one is kept.
fn derive(
    base: &ServerConfig,
    settings: &ServerTls,
    ticketer: Option<&Arc<dyn ProducesTickets>>,
) -> Arc<ServerConfig> {
    let mut provider = CryptoProvider::clone(base.crypto_provider());
    if let Some(tls12) = &settings.tls12_cipher_suites {
        provider.cipher_suites.retain(|suite| suite.tls13().is_some());
        provider.cipher_suites.extend(tls12.iter().copied());
    }
    if let Some(groups) = &settings.kx_groups {
        let offered = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = groups
            .iter()
            .filter_map(|name| offered.iter().find(|group| group.name() == *name).copied())
            .collect();
        if provider.kx_groups.is_empty() {
            provider.kx_groups = offered;
        }
    }
    let versions = protocol_versions(settings.versions);
    let Ok(builder) =
        ServerConfig::builder_with_provider(Arc::new(provider)).with_protocol_versions(versions)
    else {
        // The settings leave no usable suite for a version (checked at translation): the
        // listener's config rather than none.
        return Arc::new(base.clone());
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(base.cert_resolver.clone());
    config.alpn_protocols = base.alpn_protocols.clone();
    config.ignore_client_order = settings.prefer_server_ciphers.unwrap_or(base.ignore_client_order);
    config.session_storage = base.session_storage.clone();
    config.send_tls13_tickets = base.send_tls13_tickets;
    if settings.session_cache == Some(false) {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    match (settings.session_tickets, ticketer) {
        (Some(true), Some(ticketer)) => {
            config.ticketer = ticketer.clone();
            config.send_tls13_tickets = config.send_tls13_tickets.max(1);
        }
        _ => config.ticketer = base.ticketer.clone(),
    }
    Arc::new(config)
}
