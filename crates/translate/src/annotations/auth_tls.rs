//! Client certificates: `auth-tls-secret`, `auth-tls-verify-client`, `auth-tls-verify-depth`,
//! `auth-tls-error-page`, `auth-tls-pass-certificate-to-upstream`, `auth-tls-match-cn`, as
//! ingress-nginx's `internal/ingress/annotations/authtls/main.go` reads them. They apply to the
//! hosts of the Ingress (nginx's `server`), not to its paths.

use std::sync::Arc;

use http::HeaderValue;
use ostium_model::{ClientAuth, ClientTrust, ClientVerify, NamespacedName, VerifyClient};
use regex::Regex;
use rustls::DistinguishedName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

use super::{Parser, auth_secret};
use crate::{Diagnostic, Objects, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
];

/// Why a host's client certificates cannot be checked (the host then refuses every request).
#[derive(Debug, thiserror::Error)]
enum CaError {
    #[error(
        "{prefix}/auth-tls-secret `{reference}` is in another namespace (allow-cross-namespace-resources is off)"
    )]
    OtherNamespace { prefix: String, reference: String },
    #[error("secret {0} not found")]
    SecretNotFound(NamespacedName),
    #[error("secret {0} has no key `ca.crt`")]
    NoCaKey(NamespacedName),
    #[error("secret {0}: `ca.crt` holds no usable CA certificate")]
    NoCaCertificate(NamespacedName),
    #[error("secret {0}: `ca.crl` is not a PEM certificate revocation list")]
    InvalidCrl(NamespacedName),
    #[error("{prefix}/auth-tls-match-cn must be `CN=` followed by a regular expression")]
    InvalidMatchCn { prefix: String },
}

impl Parser<'_> {
    /// What the Ingress's hosts ask of client certificates; `None` without `auth-tls-secret`.
    /// Fails closed: a CA that cannot be used, or an invalid `auth-tls-match-cn`, makes the
    /// hosts refuse every request (403), as ingress-nginx's server does.
    pub(super) fn client_auth(&mut self, objects: &Objects) -> Option<ClientAuth> {
        let Some(reference) = self.value("auth-tls-secret") else {
            let set: Vec<&str> = KEYS.iter().copied().filter(|name| self.value(name).is_some()).collect();
            for name in set {
                let message =
                    format!("annotation {}/{name} has no effect without auth-tls-secret", self.prefix);
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
            }
            return None;
        };
        let mode = match self.value("auth-tls-verify-client") {
            None | Some("on") => VerifyClient::On,
            Some("off") => VerifyClient::Off,
            Some("optional") => VerifyClient::Optional,
            Some("optional_no_ca") => VerifyClient::OptionalNoCa,
            Some(_) => {
                self.warn_default("auth-tls-verify-client", "on");
                VerifyClient::On
            }
        };
        // ingress-nginx takes 0 (and anything that is not a number) for its default, 1.
        let depth = match self.value("auth-tls-verify-depth").map(|d| d.trim().parse::<u32>()) {
            None | Some(Ok(0)) => 1,
            Some(Ok(depth)) => depth,
            Some(Err(_)) => {
                self.warn_default("auth-tls-verify-depth", "1");
                1
            }
        };
        let error_page = self.error_page();
        let pass_certificate = self.flag("auth-tls-pass-certificate-to-upstream").unwrap_or(false);
        let checked = self.match_cn().and_then(|match_cn| Ok((self.trust(reference, objects)?, match_cn)));
        match checked {
            Ok(((trust, source), match_cn)) => Some(ClientAuth::Verify(ClientVerify {
                mode,
                depth,
                trust: Arc::new(trust),
                error_page,
                pass_certificate,
                match_cn,
                source: source.to_string().into(),
            })),
            Err(error) => {
                let message = format!("{error}; every request to the hosts of this Ingress is refused (403)");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::AuthMisconfigured,
                    message,
                ));
                Some(ClientAuth::Refused)
            }
        }
    }

    /// `auth-tls-error-page`: a URL clients are redirected to (302). ingress-nginx also takes a
    /// path or a named location for an nginx internal redirect, which ostium does not make: such
    /// a value is reported and the client gets 400, as without the key.
    fn error_page(&mut self) -> Option<HeaderValue> {
        let page = self.value("auth-tls-error-page")?;
        let (scheme, rest) = match page.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            _ => (None, page),
        };
        let host = rest.split('/').next().unwrap_or("");
        let (name, port) = host.split_once(':').unwrap_or((host, "1"));
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && rest[host.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            && !rest[host.len()..].contains("//");
        match HeaderValue::from_str(page) {
            Ok(location) if valid && (scheme.is_some() || !page.starts_with('/')) => Some(location),
            _ => {
                self.invalid(
                    "auth-tls-error-page",
                    "an http:// or https:// URL (paths and named locations are not supported)",
                );
                None
            }
        }
    }

    /// `auth-tls-match-cn`: `CN=` and a regular expression, matched as a whole against the
    /// client certificate's subject (nginx: `if ($ssl_client_s_dn !~ "<value>")`).
    fn match_cn(&self) -> Result<Option<Regex>, CaError> {
        let Some(value) = self.value("auth-tls-match-cn") else { return Ok(None) };
        let invalid = || CaError::InvalidMatchCn { prefix: self.prefix.to_owned() };
        if !value.starts_with("CN=") {
            return Err(invalid());
        }
        Regex::new(value).map(Some).map_err(|_| invalid())
    }

    /// The CA certificates (`ca.crt`) and revocation lists (`ca.crl`) of the Secret named, in
    /// the Ingress's own namespace.
    fn trust(&self, reference: &str, objects: &Objects) -> Result<(ClientTrust, NamespacedName), CaError> {
        let namespace = self.object.namespace.as_deref().unwrap_or_default();
        let secret = auth_secret(namespace, reference, self.cross_namespace).ok_or_else(|| {
            CaError::OtherNamespace { prefix: self.prefix.to_owned(), reference: reference.to_owned() }
        })?;
        let data = objects
            .secrets
            .get(&secret)
            .ok_or_else(|| CaError::SecretNotFound(secret.clone()))?
            .data
            .clone()
            .unwrap_or_default();
        let ca = data.get("ca.crt").ok_or_else(|| CaError::NoCaKey(secret.clone()))?;
        let anchors: Vec<_> = CertificateDer::pem_slice_iter(&ca.0)
            .map(|cert| {
                let cert = cert.ok()?;
                webpki::anchor_from_trusted_cert(&cert).ok().map(|anchor| anchor.to_owned())
            })
            .collect::<Option<_>>()
            .filter(|anchors: &Vec<_>| !anchors.is_empty())
            .ok_or_else(|| CaError::NoCaCertificate(secret.clone()))?;
        let crls = match data.get("ca.crl") {
            None => Vec::new(),
            Some(crl) => CertificateRevocationListDer::pem_slice_iter(&crl.0)
                .map(|crl| {
                    let crl = crl.ok()?;
                    webpki::OwnedCertRevocationList::from_der(&crl).ok().map(|_| crl)
                })
                .collect::<Option<Vec<_>>>()
                .filter(|crls| !crls.is_empty())
                .ok_or_else(|| CaError::InvalidCrl(secret.clone()))?,
        };
        let subjects = anchors.iter().map(|a| DistinguishedName::in_sequence(&a.subject)).collect();
        Ok((ClientTrust { anchors, subjects, crls }, secret))
    }
}
