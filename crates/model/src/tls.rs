//! Server certificates by host name, ready to serve.

use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::{NamedGroup, SupportedCipherSuite};

use crate::host::{HostRule, NormalizedHost, normalize_host};
use crate::host_map::HostMap;

/// A certificate chain and its private key, parsed and checked when the table is built, so
/// handshakes only look up.
#[derive(Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// Where it came from, for logs and renderings (`default/foo-tls`, `self-signed`).
    pub source: Arc<str>,
}

/// Certificates for TLS hosts: exact names, one-label wildcards, and the default certificate
/// for every other name (and for handshakes without SNI).
///
/// A TLS host is a host some Ingress lists in its `spec.tls`. Most have a certificate of their
/// own; those whose Secret is missing, unusable or not valid for them (or whose entry names no
/// Secret) are served with the default certificate, and are TLS hosts all the same: they keep
/// the HTTPS redirect and HSTS, as with ingress-nginx, rather than fall back to plain HTTP.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsTable {
    exact: HostMap<Certificate>,
    wildcard: HostMap<Certificate>,
    /// TLS hosts served with the default certificate, by exact name and by wildcard suffix.
    exact_default: HostMap<()>,
    wildcard_default: HostMap<()>,
    default: Certificate,
    /// Handshake settings of hosts that differ from the defaults, by exact name and wildcard.
    exact_settings: HostMap<Arc<ServerTls>>,
    wildcard_settings: HostMap<Arc<ServerTls>>,
    /// The `--configmap` handshake settings: those of every host without settings of its own
    /// (and a host's own settings fall back to them field by field, at translation).
    default_settings: Option<ServerTls>,
}

/// The handshake settings of a host that annotations (`ssl-ciphers`,
/// `ssl-prefer-server-ciphers`) or the ConfigMap (`ssl-protocols`, `ssl-ciphers`,
/// `ssl-ecdh-curve`, `ssl-session-*`) change; `None` keeps the listener's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerTls {
    /// The TLS 1.2 cipher suites offered, in order. TLS 1.3 suites stay as they are: OpenSSL's
    /// cipher list, which `ssl-ciphers` sets, does not touch them either.
    pub tls12_cipher_suites: Option<Arc<[SupportedCipherSuite]>>,
    /// Whether the server's order of cipher suites decides rather than the client's.
    pub prefer_server_ciphers: Option<bool>,
    /// `ssl-protocols`: the versions offered (the listener's: TLS 1.2 and 1.3).
    pub versions: Option<TlsVersions>,
    /// `ssl-ecdh-curve`: the key exchange groups offered, in order (the listener's: all the
    /// provider has).
    pub kx_groups: Option<Arc<[NamedGroup]>>,
    /// `ssl-session-tickets`: resumption by stateless tickets (off, as ingress-nginx).
    pub session_tickets: Option<bool>,
    /// `ssl-session-cache`: resumption from a cache of sessions kept by the server (on).
    pub session_cache: Option<bool>,
}

/// The TLS versions a host is served with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersions {
    Tls12,
    Tls13,
    Both,
}

impl ServerTls {
    /// These settings, with `defaults`' for the ones left unset.
    pub fn or(self, defaults: &ServerTls) -> ServerTls {
        ServerTls {
            tls12_cipher_suites: self.tls12_cipher_suites.or_else(|| defaults.tls12_cipher_suites.clone()),
            prefer_server_ciphers: self.prefer_server_ciphers.or(defaults.prefer_server_ciphers),
            versions: self.versions.or(defaults.versions),
            kx_groups: self.kx_groups.or_else(|| defaults.kx_groups.clone()),
            session_tickets: self.session_tickets.or(defaults.session_tickets),
            session_cache: self.session_cache.or(defaults.session_cache),
        }
    }
}

// === impl TlsTable ===

impl TlsTable {
    pub fn new(default: Certificate) -> Self {
        Self {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
            exact_default: HostMap::default(),
            wildcard_default: HostMap::default(),
            default,
            exact_settings: HostMap::default(),
            wildcard_settings: HostMap::default(),
            default_settings: None,
        }
    }

    /// The ConfigMap's handshake settings, for hosts without their own; settings equal to the
    /// defaults are not kept.
    pub fn set_default_server_tls(&mut self, settings: ServerTls) {
        self.default_settings = (settings != ServerTls::default()).then_some(settings);
    }

    /// The ConfigMap's handshake settings (`None`: all defaults).
    pub fn default_server_tls(&self) -> Option<&ServerTls> {
        self.default_settings.as_ref()
    }

    /// Sets the handshake settings of a host; settings equal to the defaults are not kept.
    pub fn set_server_tls(&mut self, host: &HostRule, settings: ServerTls) {
        let (map, name) = match host {
            HostRule::Exact(name) => (&mut self.exact_settings, name),
            HostRule::Wildcard(suffix) => (&mut self.wildcard_settings, suffix),
        };
        if settings == ServerTls::default() {
            map.remove(name);
        } else {
            map.insert(name.as_ref().into(), Arc::new(settings));
        }
    }

    /// Makes everything this table has for `host` (certificate, default-certificate mark,
    /// handshake settings) what `other` has for it.
    pub fn replace_host(&mut self, host: &HostRule, other: &TlsTable) {
        let (name, certs, defaults, settings, other_certs, other_defaults, other_settings) = match host {
            HostRule::Exact(name) => (
                name,
                &mut self.exact,
                &mut self.exact_default,
                &mut self.exact_settings,
                &other.exact,
                &other.exact_default,
                &other.exact_settings,
            ),
            HostRule::Wildcard(suffix) => (
                suffix,
                &mut self.wildcard,
                &mut self.wildcard_default,
                &mut self.wildcard_settings,
                &other.wildcard,
                &other.wildcard_default,
                &other.wildcard_settings,
            ),
        };
        let name: &str = name;
        certs.remove(name);
        defaults.remove(name);
        settings.remove(name);
        if let Some((key, certificate)) = other_certs.get_key_value(name) {
            certs.insert(key.clone(), certificate.clone());
        }
        if let Some((key, ())) = other_defaults.get_key_value(name) {
            defaults.insert(key.clone(), ());
        }
        if let Some((key, value)) = other_settings.get_key_value(name) {
            settings.insert(key.clone(), value.clone());
        }
    }

    /// The handshake settings for an SNI name (exact name, then one-label wildcard), else the
    /// ConfigMap's; `None` when neither differs from the listener's.
    pub fn server_tls(&self, sni: Option<&str>) -> Option<&ServerTls> {
        let own = sni.and_then(normalize_host).and_then(|host| {
            self.exact_settings
                .get(host.as_str())
                .or_else(|| host.wildcard_suffix().and_then(|suffix| self.wildcard_settings.get(suffix)))
        });
        own.map(|s| &**s).or(self.default_settings.as_ref())
    }

    /// Every host with handshake settings of its own, sorted.
    pub fn server_tls_hosts(&self) -> Vec<(HostRule, &ServerTls)> {
        let exact = self.exact_settings.iter().map(|(n, s)| (HostRule::Exact((**n).into()), &**s));
        let wildcard = self.wildcard_settings.iter().map(|(n, s)| (HostRule::Wildcard((**n).into()), &**s));
        let mut hosts: Vec<_> = exact.chain(wildcard).collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }

    /// Adds the certificate for a host. The first certificate added for a host wins; `false`
    /// says the host had one already.
    pub fn insert(&mut self, host: &HostRule, certificate: Certificate) -> bool {
        let (map, name) = match host {
            HostRule::Exact(name) => (&mut self.exact, name),
            HostRule::Wildcard(suffix) => (&mut self.wildcard, suffix),
        };
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.as_ref().into(), certificate);
        true
    }

    /// Records a TLS host served with the default certificate. A certificate of its own, added
    /// before or after, is what SNI presents for it; either way it stays a TLS host.
    pub fn insert_default(&mut self, host: &HostRule) {
        match host {
            HostRule::Exact(name) => self.exact_default.insert(name.as_ref().into(), ()),
            HostRule::Wildcard(suffix) => self.wildcard_default.insert(suffix.as_ref().into(), ()),
        };
    }

    /// The certificate to present for an SNI name: exact name, then one-label wildcard, then the
    /// default certificate (which TLS hosts without a certificate of their own get).
    pub fn resolve(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let certificate = sni.and_then(normalize_host).and_then(|host| self.lookup(&host));
        &certificate.unwrap_or(&self.default).key
    }

    /// Whether a host is a TLS host of some Ingress (exact name or one-label wildcard): it has a
    /// certificate of its own or is served with the default one. The default HTTPS redirect and
    /// HSTS apply to such hosts only.
    pub fn has_certificate(&self, host: &NormalizedHost) -> bool {
        let name = host.as_str();
        self.exact.contains_key(name)
            || self.exact_default.contains_key(name)
            || host.wildcard_suffix().is_some_and(|suffix| {
                self.wildcard.contains_key(suffix) || self.wildcard_default.contains_key(suffix)
            })
    }

    /// The certificate added for exactly this host rule.
    pub fn certificate(&self, host: &HostRule) -> Option<&Certificate> {
        match host {
            HostRule::Exact(name) => self.exact.get(name),
            HostRule::Wildcard(suffix) => self.wildcard.get(suffix),
        }
    }

    pub fn default_certificate(&self) -> &Certificate {
        &self.default
    }

    /// Every host with a certificate of its own, sorted.
    pub fn hosts(&self) -> Vec<(HostRule, &Certificate)> {
        let mut hosts: Vec<_> = (self.exact.iter().map(|(n, c)| (HostRule::Exact((**n).into()), c)))
            .chain(self.wildcard.iter().map(|(s, c)| (HostRule::Wildcard((**s).into()), c)))
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }

    /// Every TLS host served with the default certificate (none of its own), sorted.
    pub fn default_hosts(&self) -> Vec<HostRule> {
        let exact = self.exact_default.iter().map(|(n, ())| n).filter(|n| !self.exact.contains_key(n));
        let wildcard =
            self.wildcard_default.iter().map(|(s, ())| s).filter(|s| !self.wildcard.contains_key(s));
        let mut hosts: Vec<HostRule> = (exact.map(|n| HostRule::Exact((**n).into())))
            .chain(wildcard.map(|s| HostRule::Wildcard((**s).into())))
            .collect();
        hosts.sort();
        hosts
    }

    fn lookup(&self, host: &NormalizedHost) -> Option<&Certificate> {
        self.exact
            .get(host.as_str())
            .or_else(|| host.wildcard_suffix().and_then(|suffix| self.wildcard.get(suffix)))
    }
}

// === impl Certificate ===

/// Two certificates are equal when their chains are; the key is checked against the leaf when
/// the certificate is built, so equal chains imply the same key pair.
impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.key, &other.key) || self.key.cert == other.key.cert
    }
}

impl fmt::Debug for Certificate {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("source", &self.source).finish_non_exhaustive()
    }
}

/// A certificate or key problem in words: rustls's own texts name enum variants (`keys may
/// not be consistent: KeyMismatch`), which tell an operator little.
pub fn describe_tls_error(error: &rustls::Error) -> String {
    use rustls::{CertificateError, Error, InconsistentKeys};
    match error {
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the private key does not belong to the certificate (the first of the chain)".to_owned()
        }
        Error::InconsistentKeys(InconsistentKeys::Unknown) => {
            "the private key cannot be checked against the certificate (an unsupported key type)".to_owned()
        }
        Error::InvalidCertificate(CertificateError::BadEncoding) => {
            "the certificate is malformed (not a valid X.509 certificate)".to_owned()
        }
        Error::InvalidCertificate(CertificateError::Expired) => "the certificate has expired".to_owned(),
        Error::InvalidCertificate(CertificateError::NotValidYet) => {
            "the certificate is not valid yet".to_owned()
        }
        Error::General(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::ring::sign::any_supported_type;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    fn certificate(name: &str) -> Certificate {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let key = any_supported_type(&key).unwrap();
        Certificate {
            key: Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], key)),
            source: name.into(),
        }
    }

    /// A key that belongs to another certificate is named in words, not as `KeyMismatch`.
    #[test]
    fn a_mismatched_key_is_described_in_words() {
        let cert = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.example.com".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(other.signing_key.serialize_der()));
        let provider = rustls::crypto::ring::default_provider();
        let error = CertifiedKey::from_der(vec![cert.cert.der().clone()], key, &provider).err().unwrap();
        let described = describe_tls_error(&error);
        assert_eq!(described, "the private key does not belong to the certificate (the first of the chain)");
        assert!(!described.contains("KeyMismatch"));
    }

    fn is_tls_host(tls: &TlsTable, host: &str) -> bool {
        tls.has_certificate(&normalize_host(host).unwrap())
    }

    #[test]
    fn hosts_served_with_the_default_certificate_are_tls_hosts() {
        let mut tls = TlsTable::new(certificate("default.invalid"));
        tls.insert_default(&"broken.example.com".parse().unwrap());
        tls.insert_default(&"*.broken.example.com".parse().unwrap());

        assert!(is_tls_host(&tls, "broken.example.com"));
        assert!(is_tls_host(&tls, "BROKEN.example.com."));
        assert!(is_tls_host(&tls, "a.broken.example.com"));
        assert!(!is_tls_host(&tls, "a.b.broken.example.com"));
        assert!(!is_tls_host(&tls, "other.example.com"));
        for sni in ["broken.example.com", "a.broken.example.com"] {
            assert!(Arc::ptr_eq(tls.resolve(Some(sni)), &tls.default_certificate().key), "{sni}");
        }
        let mut expected: Vec<HostRule> =
            vec!["broken.example.com".parse().unwrap(), "*.broken.example.com".parse().unwrap()];
        expected.sort();
        assert_eq!(tls.default_hosts(), expected);
    }

    #[test]
    fn a_certificate_of_its_own_wins_over_the_default_one() {
        let mut tls = TlsTable::new(certificate("default.invalid"));
        let own = certificate("foo.example.com");
        let wildcard = certificate("*.example.com");
        tls.insert_default(&"foo.example.com".parse().unwrap());
        assert!(tls.insert(&"foo.example.com".parse().unwrap(), own.clone()));
        assert!(tls.insert(&"*.example.com".parse().unwrap(), wildcard.clone()));
        tls.insert_default(&"bar.example.com".parse().unwrap());

        assert!(Arc::ptr_eq(tls.resolve(Some("foo.example.com")), &own.key));
        // An exact host without a certificate of its own still gets a covering wildcard one.
        assert!(Arc::ptr_eq(tls.resolve(Some("bar.example.com")), &wildcard.key));
        assert_eq!(tls.default_hosts(), vec!["bar.example.com".parse::<HostRule>().unwrap()]);
    }
}
