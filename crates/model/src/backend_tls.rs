//! TLS toward a route's endpoints (`proxy-ssl-*`): which certificates the endpoint may present,
//! the name checked and sent, the versions and cipher suites offered, and the certificate the
//! proxy presents. Turned into a rustls client config once, when the table is built.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, CipherSuite, DigitallySignedStruct, ProtocolVersion, SignatureScheme};

/// The name nginx checks and sends when `proxy-ssl-name` is not set: the host of ingress-nginx's
/// `proxy_pass`, its upstream block.
pub const DEFAULT_BACKEND_TLS_NAME: &str = "upstream_balancer";

/// A route's TLS toward its endpoints, ready for connections.
#[derive(Clone)]
pub struct BackendTls {
    pub settings: BackendTlsSettings,
    /// Built from `settings` (without ALPN, which the client for each protocol adds).
    pub config: Arc<rustls::ClientConfig>,
}

/// What a route asks of TLS toward its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTlsSettings {
    /// Where the settings come from (`namespace/name` of the Secret), for logs and renderings.
    pub source: Box<str>,
    /// `proxy-ssl-verify: on`: the certificates the endpoint's must chain to. `None`: any
    /// certificate is accepted (the handshake's signature is still checked).
    pub verify: Option<Verification>,
    /// The name the certificate must be valid for, sent as SNI when `send_server_name`.
    pub server_name: ServerName<'static>,
    /// `proxy-ssl-server-name: on`.
    pub send_server_name: bool,
    /// Versions offered, a subset of TLS 1.2 and 1.3.
    pub versions: Vec<ProtocolVersion>,
    /// Cipher suites offered, in the provider's order; `None` for all the provider's.
    pub cipher_suites: Option<Vec<CipherSuite>>,
    /// The chain presented when the endpoint asks for a client certificate (its key is in the
    /// config only).
    pub client_certificate: Option<Vec<CertificateDer<'static>>>,
}

/// How an endpoint's certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The trusted certificates (`ca.crt`).
    pub ca: Vec<CertificateDer<'static>>,
    /// `proxy-ssl-verify-depth`: how many intermediate certificates may stand between the
    /// endpoint's certificate and a trusted one (OpenSSL's verify depth).
    pub depth: u32,
}

/// Why settings cannot be turned into a client config.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    #[error("a CA certificate is not usable: {}", describe_ca_error(.0))]
    UnusableCa(webpki::Error),
    #[error("{}", crate::describe_tls_error(.0))]
    Rustls(#[from] rustls::Error),
}

/// Why a CA certificate cannot be a trust anchor, in words (webpki's text is the variant name).
fn describe_ca_error(error: &webpki::Error) -> String {
    match error {
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            "it is malformed (not a valid X.509 certificate)".to_owned()
        }
        webpki::Error::UnsupportedCertVersion => "it is not an X.509 version 3 certificate".to_owned(),
        other => format!("{other:?}"),
    }
}

// === impl BackendTls ===

impl BackendTls {
    /// Builds the client config; `key` is the private key of `settings.client_certificate`.
    pub fn new(
        settings: BackendTlsSettings,
        key: Option<PrivateKeyDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, BackendTlsError> {
        let verifier = Verifier {
            anchors: match &settings.verify {
                Some(verification) => Some((
                    verification
                        .ca
                        .iter()
                        .map(|ca| webpki::anchor_from_trusted_cert(ca).map(|anchor| anchor.to_owned()))
                        .collect::<Result<_, _>>()
                        .map_err(BackendTlsError::UnusableCa)?,
                    verification.depth,
                )),
                None => None,
            },
            provider: provider.clone(),
        };
        let mut provider = CryptoProvider::clone(provider);
        if let Some(suites) = &settings.cipher_suites {
            provider.cipher_suites.retain(|suite| suites.contains(&suite.suite()));
        }
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = rustls::ALL_VERSIONS
            .iter()
            .copied()
            .filter(|version| settings.versions.contains(&version.version))
            .collect();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match (&settings.client_certificate, key) {
            (Some(chain), Some(key)) => builder.with_client_auth_cert(chain.clone(), key)?,
            _ => builder.with_no_client_auth(),
        };
        config.enable_sni = settings.send_server_name;
        Ok(Self { settings, config: Arc::new(config) })
    }
}

/// Equal settings make equal configs.
impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for BackendTls {}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

/// Accepts any endpoint certificate, as nginx's default `proxy_ssl_verify off` (the signature
/// over the handshake is still checked): for TLS backends without `proxy-ssl-*` settings.
pub fn accept_any_server_certificate(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Verifier { anchors: None, provider })
}

/// Checks the endpoint's certificate as nginx's `proxy_ssl_verify`, with
/// `proxy_ssl_trusted_certificate` and `proxy_ssl_verify_depth`; without anchors it accepts any.
#[derive(Debug)]
struct Verifier {
    anchors: Option<(Vec<TrustAnchor<'static>>, u32)>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((anchors, depth)) = &self.anchors else { return Ok(ServerCertVerified::assertion()) };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        let within_depth = |path: &webpki::VerifiedPath<'_>| match path.intermediate_certificates().count() {
            n if n as u64 <= u64::from(*depth) => Ok(()),
            _ => Err(webpki::Error::MaximumPathDepthExceeded),
        };
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&within_depth),
        )
        .map_err(invalid)?;
        cert.verify_is_valid_for_subject_name(server_name).map_err(invalid)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn invalid(error: webpki::Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(match error {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertNotValidForName(_) => CertificateError::NotValidForName,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_is_described_in_words() {
        let settings = BackendTlsSettings {
            source: "default/ca".into(),
            verify: Some(Verification { ca: vec![CertificateDer::from(vec![1, 2, 3])], depth: 1 }),
            server_name: ServerName::try_from("a.example.com").unwrap().to_owned(),
            send_server_name: false,
            versions: vec![ProtocolVersion::TLSv1_3],
            cipher_suites: None,
            client_certificate: None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let error = BackendTls::new(settings, None, &provider).err().unwrap().to_string();
        assert_eq!(error, "a CA certificate is not usable: it is malformed (not a valid X.509 certificate)");
    }
}
