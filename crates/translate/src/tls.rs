//! TLS: `kubernetes.io/tls` Secrets turned into ready-to-serve certificates, assigned to hosts.
//!
//! A certificate is parsed once per translation and checked against its key. The hosts of a
//! `tls` entry are those its `hosts` lists (or, when that list is empty, every rule host of its
//! Ingress). Each gets the entry's certificate when it is valid for that name. Otherwise (no
//! Secret named, Secret missing or unusable, certificate not valid for the name) the host is
//! served with the default certificate and stays a TLS host, keeping its HTTPS redirect and HSTS
//! rather than silently falling back to plain HTTP, as with ingress-nginx.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressTLS;
use ostium_model::{Certificate, HashMap, HostRule, NamespacedName, TableBuilder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

use crate::{Diagnostic, ObjectKind, ObjectRef, Objects, Options, Reason};

/// A label that stands for "any one label" when checking a wildcard host against a certificate.
const WILDCARD_PROBE_LABEL: &str = "ostium-wildcard-probe";

pub(crate) struct Certificates<'a> {
    objects: &'a Objects,
    options: &'a Options,
    parsed: HashMap<NamespacedName, Result<Certificate, SecretError>>,
}

/// Why a Secret gives no certificate. Messages never quote the key.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("secret {0} not found")]
    NotFound(NamespacedName),
    #[error("secret {0}: `tls.crt` and `tls.key` are required")]
    MissingKeys(NamespacedName),
    #[error("secret {0}: `tls.crt` is not PEM: {1}")]
    CertificateNotPem(NamespacedName, String),
    #[error("secret {0}: `tls.crt` holds no certificate")]
    NoCertificate(NamespacedName),
    #[error("secret {0}: `tls.key` is not a PEM private key")]
    KeyNotPem(NamespacedName),
    #[error("secret {0}: certificate and key are not usable together: {1}")]
    Unusable(NamespacedName, String),
}

impl SecretError {
    fn reason(&self) -> Reason {
        match self {
            Self::NotFound(_) => Reason::MissingSecret,
            _ => Reason::InvalidTlsSecret,
        }
    }
}

impl<'a> Certificates<'a> {
    pub(crate) fn new(objects: &'a Objects, options: &'a Options) -> Self {
        Self { objects, options, parsed: HashMap::default() }
    }

    /// `--default-ssl-certificate` when set and valid, else the fallback (self-signed) one.
    pub(crate) fn default_certificate(&mut self, diagnostics: &mut Vec<Diagnostic>) -> Certificate {
        let Some(id) = &self.options.default_ssl_certificate else {
            return self.options.fallback_certificate.clone();
        };
        match self.certificate(id) {
            Ok(certificate) => certificate,
            Err(error) => {
                let object = ObjectRef::new(ObjectKind::Secret, Some(&id.namespace), &id.name);
                let message =
                    format!("--default-ssl-certificate: {error}; a self-signed certificate is served");
                diagnostics.push(Diagnostic::error(object, error.reason(), message));
                self.options.fallback_certificate.clone()
            }
        }
    }

    /// Assigns the certificates of an Ingress's `tls` entries to their hosts.
    pub(crate) fn apply(
        &mut self,
        object: &ObjectRef,
        entries: &[IngressTLS],
        rule_hosts: &[Option<HostRule>],
        table: &mut TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        // Rule hosts that an entry without `hosts` has no valid certificate for: another entry
        // may well cover them, so they are only reported if none does.
        let mut uncovered = Vec::new();
        for tls in entries {
            self.apply_entry(object, tls, rule_hosts, table, &mut uncovered, diagnostics);
        }
        uncovered.sort();
        uncovered.dedup();
        for host in uncovered {
            if table.tls().certificate(&host).is_none() {
                let message = format!(
                    "no certificate of its tls entries is valid for {host}; the host keeps its HTTPS redirect and HSTS and is served with the default certificate"
                );
                diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    Reason::CertificateHostMismatch,
                    message,
                ));
            }
        }
    }

    fn apply_entry(
        &mut self,
        object: &ObjectRef,
        tls: &IngressTLS,
        rule_hosts: &[Option<HostRule>],
        table: &mut TableBuilder,
        uncovered: &mut Vec<HostRule>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let listed = tls.hosts.as_deref().unwrap_or_default();
        let mut hosts: Vec<HostRule> = Vec::new();
        if listed.is_empty() {
            hosts.extend(rule_hosts.iter().flatten().cloned());
        }
        for host in listed {
            match host.parse::<HostRule>() {
                Ok(h) => hosts.push(h),
                Err(e) => diagnostics.push(Diagnostic::error(
                    object.clone(),
                    Reason::InvalidHost,
                    format!("tls host: {e}; it is ignored"),
                )),
            }
        }

        // Without a secret the default certificate serves; the hosts are TLS hosts all the same.
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            hosts.iter().for_each(|host| table.tls_mut().insert_default(host));
            return;
        };
        let id = NamespacedName::new(object.namespace.as_deref().unwrap_or_default(), secret);
        let certificate = match self.certificate(&id) {
            Ok(certificate) => certificate,
            Err(error) => {
                let message = format!(
                    "{error}; its hosts keep their HTTPS redirect and HSTS and are served with the default certificate"
                );
                diagnostics.push(Diagnostic::error(object.clone(), error.reason(), message));
                hosts.iter().for_each(|host| table.tls_mut().insert_default(host));
                return;
            }
        };

        for host in hosts {
            if !covers(&certificate, &host) {
                table.tls_mut().insert_default(&host);
                if listed.is_empty() {
                    uncovered.push(host);
                    continue;
                }
                let outcome = match table.tls().certificate(&host) {
                    Some(existing) => format!("the host keeps the certificate of secret {}", existing.source),
                    None => "the host keeps its HTTPS redirect and HSTS and is served with the default certificate"
                        .to_owned(),
                };
                let message = format!("the certificate in secret {id} is not valid for {host}; {outcome}");
                diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    Reason::CertificateHostMismatch,
                    message,
                ));
                continue;
            }
            if table.tls_mut().insert(&host, certificate.clone()) {
                continue;
            }
            let existing = table.tls().certificate(&host).map(|c| c.source.clone()).unwrap_or_default();
            if *existing != *certificate.source {
                let message = format!(
                    "host {host} already has the certificate of secret {existing}; {id} is ignored for it"
                );
                diagnostics.push(Diagnostic::error(object.clone(), Reason::TlsHostConflict, message));
            }
        }
    }

    /// The certificate in a Secret, parsed once per translation.
    fn certificate(&mut self, id: &NamespacedName) -> Result<Certificate, SecretError> {
        if let Some(parsed) = self.parsed.get(id) {
            return parsed.clone();
        }
        let parsed = self.parse(id);
        self.parsed.insert(id.clone(), parsed.clone());
        parsed
    }

    fn parse(&self, id: &NamespacedName) -> Result<Certificate, SecretError> {
        let secret = self.objects.secrets.get(id).ok_or_else(|| SecretError::NotFound(id.clone()))?;
        let data = secret.data.as_ref();
        let (Some(crt), Some(key)) =
            (data.and_then(|d| d.get("tls.crt")), data.and_then(|d| d.get("tls.key")))
        else {
            return Err(SecretError::MissingKeys(id.clone()));
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt.0)
            .collect::<Result<_, _>>()
            .map_err(|e| SecretError::CertificateNotPem(id.clone(), e.to_string()))?;
        if chain.is_empty() {
            return Err(SecretError::NoCertificate(id.clone()));
        }
        // Errors about the key never include the key.
        let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|_| SecretError::KeyNotPem(id.clone()))?;
        let certified = CertifiedKey::from_der(chain, key, &self.options.crypto_provider)
            .map_err(|e| SecretError::Unusable(id.clone(), ostium_model::describe_tls_error(&e)))?;
        Ok(Certificate { key: Arc::new(certified), source: id.to_string().into() })
    }
}

/// Whether the leaf certificate is valid for a host (for a wildcard host: for any one label).
pub(crate) fn covers(certificate: &Certificate, host: &HostRule) -> bool {
    let name = match host {
        HostRule::Exact(name) => name.to_string(),
        HostRule::Wildcard(suffix) => format!("{WILDCARD_PROBE_LABEL}.{suffix}"),
    };
    let Ok(dns) = DnsName::try_from(name) else { return false };
    let Some(leaf) = certificate.key.cert.first() else { return false };
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns)))
        .is_ok()
}
