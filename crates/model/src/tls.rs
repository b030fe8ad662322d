//! Server certificates by host name, ready to serve.

use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::HashMap;
use crate::host::{HostRule, NormalizedHost, normalize_host};

/// A certificate chain and its private key, parsed and checked when the table is built, so
/// handshakes only look up.
#[derive(Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// Where it came from, for logs and renderings (`default/foo-tls`, `self-signed`).
    pub source: Box<str>,
}

/// Certificates for TLS hosts: exact names, one-label wildcards, and the default certificate
/// for every other name (and for handshakes without SNI).
#[derive(Clone, Debug, PartialEq)]
pub struct TlsTable {
    exact: HashMap<Box<str>, Certificate>,
    wildcard: HashMap<Box<str>, Certificate>,
    default: Certificate,
}

// === impl TlsTable ===

impl TlsTable {
    pub fn new(default: Certificate) -> Self {
        Self { exact: HashMap::default(), wildcard: HashMap::default(), default }
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
        map.insert(name.clone(), certificate);
        true
    }

    /// The certificate to present for an SNI name: exact name, then one-label wildcard, then the
    /// default certificate.
    pub fn resolve(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let certificate = sni.and_then(normalize_host).and_then(|host| self.lookup(&host));
        &certificate.unwrap_or(&self.default).key
    }

    /// Whether a host has a certificate of its own (not the default one). The HTTPS redirect
    /// applies only to such hosts.
    pub fn has_certificate(&self, host: &NormalizedHost) -> bool {
        self.lookup(host).is_some()
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
        let mut hosts: Vec<_> = (self.exact.iter().map(|(n, c)| (HostRule::Exact(n.clone()), c)))
            .chain(self.wildcard.iter().map(|(s, c)| (HostRule::Wildcard(s.clone()), c)))
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
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
