//! Client certificates (mTLS) of a host: what ingress-nginx's `auth-tls-*` annotations ask of
//! every request to it. Like nginx's `ssl_verify_client`, this belongs to the host (nginx's
//! `server`), not to a path.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use regex::Regex;
use rustls::DistinguishedName;
use rustls::pki_types::{CertificateRevocationListDer, TrustAnchor};

/// What a host asks of client certificates.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientAuth {
    /// Certificates are requested and judged as configured.
    Verify(ClientVerify),
    /// The host's `auth-tls-*` annotations cannot be applied (the CA Secret is missing, in
    /// another namespace or unusable, or `auth-tls-match-cn` is invalid): every request to the
    /// host is refused (403), as ingress-nginx's server then answers.
    Refused,
}

/// `auth-tls-secret` and the keys that go with it.
#[derive(Clone, Debug)]
pub struct ClientVerify {
    /// `auth-tls-verify-client`.
    pub mode: VerifyClient,
    /// `auth-tls-verify-depth`: how many intermediate CA certificates may stand between the
    /// client's certificate and a CA of [`ClientVerify::trust`] (nginx's `ssl_verify_depth`).
    pub depth: u32,
    /// The CAs of the Secret's `ca.crt`, and the revocation lists of its `ca.crl`.
    pub trust: Arc<ClientTrust>,
    /// `auth-tls-error-page`: where a client without a valid certificate is redirected (302)
    /// instead of getting 400.
    pub error_page: Option<HeaderValue>,
    /// `auth-tls-pass-certificate-to-upstream`: the certificate goes upstream in
    /// `ssl-client-cert` (PEM, URL-escaped).
    pub pass_certificate: bool,
    /// `auth-tls-match-cn`: the client certificate's subject (`CN=…,O=…`, RFC 2253) must match
    /// this (unanchored) pattern, else 403.
    pub match_cn: Option<Regex>,
    /// The Secret, for renderings (`default/ca`).
    pub source: Box<str>,
}

/// `auth-tls-verify-client`, as nginx's `ssl_verify_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyClient {
    /// A valid certificate is required: none, or an invalid one, gets 400.
    On,
    /// No certificate is requested.
    Off,
    /// A certificate is requested; none passes, an invalid one gets 400.
    Optional,
    /// A certificate is requested; one not issued by the host's CAs passes too (its status is
    /// still reported to the backend), other faults (expired, revoked …) get 400.
    OptionalNoCa,
}

/// The trust a host's client certificates are judged by, parsed at translation.
#[derive(Clone, Debug)]
pub struct ClientTrust {
    pub anchors: Vec<TrustAnchor<'static>>,
    /// The CAs' subjects, sent to clients as the names of acceptable issuers.
    pub subjects: Vec<DistinguishedName>,
    /// Revocation lists (checked well-formed); with any, every certificate of a chain must be
    /// covered by one, as nginx's `ssl_crl` asks.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

// === impl VerifyClient ===

impl fmt::Display for VerifyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Optional => "optional",
            Self::OptionalNoCa => "optional_no_ca",
        })
    }
}

// === impl ClientTrust ===

/// The subjects are those of the anchors.
impl PartialEq for ClientTrust {
    fn eq(&self, other: &Self) -> bool {
        self.anchors == other.anchors && self.crls == other.crls
    }
}

// === impl ClientVerify ===

/// Patterns compare by their text.
impl PartialEq for ClientVerify {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.depth == other.depth
            && self.trust == other.trust
            && self.error_page == other.error_page
            && self.pass_certificate == other.pass_certificate
            && self.match_cn.as_ref().map(Regex::as_str) == other.match_cn.as_ref().map(Regex::as_str)
            && self.source == other.source
    }
}
