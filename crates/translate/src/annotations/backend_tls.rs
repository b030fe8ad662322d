//! TLS toward the endpoints: `proxy-ssl-secret`, `proxy-ssl-verify`, `proxy-ssl-verify-depth`,
//! `proxy-ssl-name`, `proxy-ssl-server-name`, `proxy-ssl-protocols`, `proxy-ssl-ciphers`.
//!
//! As ingress-nginx (internal/ingress/annotations/proxyssl/main.go): the other keys apply only
//! with `proxy-ssl-secret`, a `namespace/name` of the Ingress's own namespace whose Secret holds
//! `ca.crt` or `tls.crt` and `tls.key` (or both); a Secret that cannot be used denies the route.

use std::sync::Arc;

use ostium_model::{
    BackendTls, BackendTlsSettings, DEFAULT_BACKEND_TLS_NAME, Denial, NamespacedName, Verification,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CipherSuite, ProtocolVersion, SupportedCipherSuite};

use super::Parser;
use crate::{Diagnostic, Objects, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
];

/// OpenSSL's names of the cipher suites rustls offers (TLS 1.2 names, then TLS 1.3 ones).
const OPENSSL_CIPHERS: [(&str, CipherSuite); 9] = [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ("TLS_AES_128_GCM_SHA256", CipherSuite::TLS13_AES_128_GCM_SHA256),
    ("TLS_AES_256_GCM_SHA384", CipherSuite::TLS13_AES_256_GCM_SHA384),
    ("TLS_CHACHA20_POLY1305_SHA256", CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
];

/// What the Secret of `proxy-ssl-secret` gives.
struct SecretMaterial {
    ca: Option<Vec<CertificateDer<'static>>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// The Secret a `proxy-ssl-secret` value names: `namespace/name`, in the Ingress's own namespace
/// unless `cross_namespace` (`allow-cross-namespace-resources`); else why not.
pub(crate) fn backend_tls_secret(
    namespace: &str,
    reference: &str,
    cross_namespace: bool,
) -> Result<NamespacedName, &'static str> {
    match reference.trim().split('/').collect::<Vec<_>>()[..] {
        [ns, name] if (ns == namespace || cross_namespace) && !ns.is_empty() && !name.is_empty() => {
            Ok(NamespacedName::new(ns, name))
        }
        [_, name] if !name.is_empty() => {
            Err("is in another namespace (allow-cross-namespace-resources is off)")
        }
        _ => Err("is not namespace/name"),
    }
}

impl Parser<'_> {
    /// The route's TLS toward its endpoints; `None` for the proxy's. Anything that makes the
    /// asked verification impossible denies the route (503).
    pub(super) fn backend_tls(
        &mut self,
        objects: &Objects,
        provider: &Arc<CryptoProvider>,
        denied: &mut Option<Denial>,
    ) -> Option<Arc<BackendTls>> {
        let verify = match self.value("proxy-ssl-verify").map(str::trim) {
            None | Some("off") => false,
            Some("on") => true,
            Some(_) => {
                self.deny("proxy-ssl-verify", Reason::InvalidAnnotation, "expected on or off", denied);
                return None;
            }
        };
        let Some(reference) = self.value("proxy-ssl-secret") else {
            if verify {
                let why = "verification needs the CA certificates of proxy-ssl-secret";
                self.deny("proxy-ssl-verify", Reason::InvalidAnnotation, why, denied);
            }
            let ignored: Vec<&str> = KEYS
                .iter()
                .copied()
                .filter(|name| *name != "proxy-ssl-verify" && self.value(name).is_some())
                .collect();
            for name in ignored {
                let message =
                    format!("annotation {}/{name} has no effect without proxy-ssl-secret", self.prefix);
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
            }
            return None;
        };
        let material = match self.secret_material(reference, objects) {
            Ok(material) => material,
            Err((reason, why)) => {
                self.deny("proxy-ssl-secret", reason, &why, denied);
                return None;
            }
        };
        let depth = self.verify_depth();
        let verify = match (verify, material.ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(Verification { ca, depth }),
            (true, None) => {
                let why = format!("secret {reference} has no `ca.crt` to verify the endpoints with");
                self.deny("proxy-ssl-verify", Reason::InvalidTlsSecret, &why, denied);
                return None;
            }
        };
        let server_name = match self.value("proxy-ssl-name").map(str::trim).filter(|n| !n.is_empty()) {
            None => None,
            Some(name) => match ServerName::try_from(name.to_owned()) {
                Ok(name) => Some(name),
                Err(_) => {
                    self.warn_default("proxy-ssl-name", DEFAULT_BACKEND_TLS_NAME);
                    None
                }
            },
        };
        let server_name = server_name.unwrap_or_else(|| {
            ServerName::try_from(DEFAULT_BACKEND_TLS_NAME).expect("the default name is a DNS name")
        });
        let send_server_name = match self.value("proxy-ssl-server-name").map(str::trim) {
            None | Some("off") => false,
            Some("on") => true,
            Some(_) => {
                self.warn_default("proxy-ssl-server-name", "off");
                false
            }
        };
        let settings = BackendTlsSettings {
            source: reference.into(),
            verify,
            server_name,
            send_server_name,
            versions: self.protocols(),
            cipher_suites: self.cipher_suites(provider),
            client_certificate: material.client.as_ref().map(|(chain, _)| chain.clone()),
        };
        let key = material.client.map(|(_, key)| key);
        match BackendTls::new(settings, key, provider) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(error) => {
                let why = format!("secret {reference}: {error}");
                self.deny("proxy-ssl-secret", Reason::InvalidTlsSecret, &why, denied);
                None
            }
        }
    }

    /// Reports why a key cannot be applied and denies the route.
    fn deny(&mut self, name: &str, reason: Reason, why: &str, denied: &mut Option<Denial>) {
        let annotation = format!("{}/{name}", self.prefix);
        let message =
            format!("annotation {annotation}: {why}; every request to these paths is refused (503)");
        self.diagnostics.push(Diagnostic::error(self.object.clone(), reason, message));
        denied.get_or_insert(Denial::InvalidAnnotation { annotation: annotation.into() });
    }

    /// The CA certificates and client certificate of `proxy-ssl-secret`, which must be
    /// `namespace/name` in the Ingress's namespace. Errors never quote the key.
    fn secret_material(
        &self,
        reference: &str,
        objects: &Objects,
    ) -> Result<SecretMaterial, (Reason, String)> {
        let namespace = self.object.namespace.as_deref().unwrap_or_default();
        let id = backend_tls_secret(namespace, reference, self.cross_namespace)
            .map_err(|why| (Reason::InvalidAnnotation, format!("`{reference}` {why}")))?;
        let secret = objects
            .secrets
            .get(&id)
            .ok_or_else(|| (Reason::MissingSecret, format!("secret {id} not found")))?;
        let data = secret.data.clone().unwrap_or_default();
        let invalid = |why: &str| (Reason::InvalidTlsSecret, format!("secret {id}: {why}"));
        let certificates = |key: &str| -> Result<Option<Vec<CertificateDer<'static>>>, (Reason, String)> {
            let Some(pem) = data.get(key).filter(|pem| !pem.0.is_empty()) else { return Ok(None) };
            let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem.0)
                .collect::<Result<_, _>>()
                .map_err(|_| invalid(&format!("`{key}` is not PEM")))?;
            match certificates.is_empty() {
                true => Err(invalid(&format!("`{key}` holds no certificate"))),
                false => Ok(Some(certificates)),
            }
        };
        let ca = certificates("ca.crt")?;
        let client = match (certificates("tls.crt")?, data.get("tls.key")) {
            (Some(chain), Some(key)) => {
                let key = PrivateKeyDer::from_pem_slice(&key.0)
                    .map_err(|_| invalid("`tls.key` is not a PEM private key"))?;
                Some((chain, key))
            }
            _ => None,
        };
        if ca.is_none() && client.is_none() {
            return Err(invalid("holds neither `ca.crt` nor `tls.crt` and `tls.key`"));
        }
        Ok(SecretMaterial { ca, client })
    }

    /// `proxy-ssl-verify-depth`: 1 by default and for 0, as ingress-nginx.
    fn verify_depth(&mut self) -> u32 {
        match self.value("proxy-ssl-verify-depth").map(|v| v.trim().parse::<u32>()) {
            None | Some(Ok(0)) => 1,
            Some(Ok(depth)) => depth,
            Some(Err(_)) => {
                self.warn_default("proxy-ssl-verify-depth", "1");
                1
            }
        }
    }

    /// `proxy-ssl-protocols`: `TLSv1.2` and `TLSv1.3` (rustls has no older version), TLS 1.2
    /// alone by default, as ingress-nginx.
    fn protocols(&mut self) -> Vec<ProtocolVersion> {
        let default = vec![ProtocolVersion::TLSv1_2];
        let Some(value) = self.value("proxy-ssl-protocols").filter(|v| !v.trim().is_empty()) else {
            return default;
        };
        let mut versions = Vec::new();
        for name in value.split_whitespace() {
            let version = match name {
                "TLSv1.2" => ProtocolVersion::TLSv1_2,
                "TLSv1.3" => ProtocolVersion::TLSv1_3,
                _ => {
                    let message = format!(
                        "annotation {}/proxy-ssl-protocols: `{name}` is not offered (only TLSv1.2 and TLSv1.3 are); the default (`TLSv1.2`) is used",
                        self.prefix
                    );
                    self.diagnostics.push(Diagnostic::warning(
                        self.object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                    return default;
                }
            };
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        versions
    }

    /// `proxy-ssl-ciphers` (OpenSSL's names): the suites named that rustls offers. A version
    /// none of whose suites is named keeps all of them; names rustls does not offer (and
    /// OpenSSL's keywords such as `HIGH` or `!aNULL`) are reported and ignored. `None` for the
    /// provider's suites (`DEFAULT`).
    fn cipher_suites(&mut self, provider: &CryptoProvider) -> Option<Vec<CipherSuite>> {
        let value =
            self.value("proxy-ssl-ciphers").map(str::trim).filter(|v| !v.is_empty() && *v != "DEFAULT")?;
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"+:_-!".contains(&b)) {
            self.warn_default("proxy-ssl-ciphers", "DEFAULT");
            return None;
        }
        let offered = |suite: CipherSuite| provider.cipher_suites.iter().find(|s| s.suite() == suite);
        let (mut named, mut ignored) = (Vec::new(), Vec::new());
        for name in value.split(':').filter(|n| !n.is_empty()) {
            match OPENSSL_CIPHERS.iter().find(|(openssl, _)| *openssl == name).and_then(|(_, s)| offered(*s))
            {
                Some(suite) => named.push(*suite),
                None => ignored.push(name),
            }
        }
        if !ignored.is_empty() {
            let kept =
                if named.is_empty() { "the default (`DEFAULT`) is used" } else { "the others are used" };
            let message = format!(
                "annotation {}/proxy-ssl-ciphers: {} not offered and ignored; {kept}",
                self.prefix,
                ignored.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::InvalidAnnotation,
                message,
            ));
        }
        if named.is_empty() {
            return None;
        }
        let is_tls13 = |suite: &SupportedCipherSuite| matches!(suite, SupportedCipherSuite::Tls13(_));
        let suites = provider
            .cipher_suites
            .iter()
            .filter(|suite| {
                named.iter().any(|n| n.suite() == suite.suite())
                    || !named.iter().any(|n| is_tls13(n) == is_tls13(suite))
            })
            .map(|suite| suite.suite())
            .collect();
        Some(suites)
    }
}
