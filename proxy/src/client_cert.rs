//! Client certificates (mTLS), handled as nginx's `ssl_verify_client`: the handshake asks for a
//! certificate on hosts that want one and lets any certificate (or none) through; the
//! certificate is judged once, right after the handshake, against the host's CAs, and each
//! request is then let through or refused by its host's rules (`policy::client_cert`). Its
//! status and names go upstream in the `ssl-client-*` headers ingress-nginx sets.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use ostium_model::{ClientAuth, ClientTrust, ClientVerify, VerifyClient};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::ConnectionInfo;

/// The upstream headers ingress-nginx's template sets on hosts with client certificates.
const VERIFY: &str = "ssl-client-verify";
const SUBJECT: &str = "ssl-client-subject-dn";
const ISSUER: &str = "ssl-client-issuer-dn";
const CERTIFICATE: &str = "ssl-client-cert";

/// The client certificate of a connection, judged after the handshake.
#[derive(Clone, Debug)]
pub(crate) struct ClientCert {
    pub(crate) status: Status,
    /// `ssl-client-verify`: `SUCCESS`, `FAILED:<reason>` or `NONE`, as nginx's `$ssl_client_verify`.
    verify: HeaderValue,
    /// The certificate's subject and issuer (RFC 2253, as nginx's `$ssl_client_s_dn` and
    /// `$ssl_client_i_dn`), when it could be read.
    subject: Option<HeaderValue>,
    issuer: Option<HeaderValue>,
    /// The certificate as URL-escaped PEM (nginx's `$ssl_client_escaped_cert`), made only when
    /// the host passes it upstream.
    escaped_pem: Option<HeaderValue>,
}

/// How a client certificate fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// No certificate was sent.
    Absent,
    Valid,
    /// Invalid; `unknown_issuer` when the only fault is that no CA of the host issued it (what
    /// `optional_no_ca` lets through).
    Invalid {
        unknown_issuer: bool,
    },
}

// === impl ClientCert ===

impl ClientCert {
    /// Judges the certificate chain a client presented (`None`: none) by a host's rules.
    pub(crate) fn judge(
        verify: &ClientVerify,
        chain: Option<&[CertificateDer<'_>]>,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Self {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return Self::absent();
        };
        let (status, reason) = match chain_fault(verify, leaf, intermediates, algorithms) {
            None => (Status::Valid, None),
            Some(error) => {
                let unknown_issuer = matches!(error, webpki::Error::UnknownIssuer);
                (Status::Invalid { unknown_issuer }, Some(failure_reason(&error, leaf)))
            }
        };
        let verify_value = match reason {
            None => HeaderValue::from_static("SUCCESS"),
            Some(reason) => HeaderValue::from_str(&format!("FAILED:{reason}"))
                .unwrap_or(HeaderValue::from_static("FAILED")),
        };
        let names = webpki::EndEntityCert::try_from(leaf).ok();
        let name = |der: &[u8]| HeaderValue::from_str(&distinguished_name(der)?).ok();
        Self {
            status,
            verify: verify_value,
            subject: names.as_ref().and_then(|cert| name(cert.subject())),
            issuer: names.as_ref().and_then(|cert| name(cert.issuer())),
            escaped_pem: verify.pass_certificate.then(|| escaped_pem(leaf)),
        }
    }

    fn absent() -> Self {
        Self {
            status: Status::Absent,
            verify: HeaderValue::from_static("NONE"),
            subject: None,
            issuer: None,
            escaped_pem: None,
        }
    }

    /// The subject as `auth-tls-match-cn` sees it (empty without a certificate).
    pub(crate) fn subject(&self) -> &str {
        self.subject.as_ref().and_then(|s| s.to_str().ok()).unwrap_or("")
    }
}

/// Sets the `ssl-client-*` headers for a request to a host with client certificate rules (any
/// the client sent were removed with the other client claims, see `headers`). `cert` is the connection's certificate when it counts for this
/// host; on plain HTTP none is set (nginx's variables are empty there).
pub(crate) fn upstream_headers(
    headers: &mut HeaderMap,
    client_auth: &ClientAuth,
    cert: Option<&ClientCert>,
    is_tls: bool,
) {
    let ClientAuth::Verify(verify) = client_auth else { return };
    if !is_tls {
        return;
    }
    let absent;
    let cert = match cert {
        Some(cert) => cert,
        None => {
            absent = ClientCert::absent();
            &absent
        }
    };
    headers.insert(VERIFY, cert.verify.clone());
    if let Some(subject) = &cert.subject {
        headers.insert(SUBJECT, subject.clone());
    }
    if let Some(issuer) = &cert.issuer {
        headers.insert(ISSUER, issuer.clone());
    }
    if let Some(pem) = cert.escaped_pem.as_ref().filter(|_| verify.pass_certificate) {
        headers.insert(CERTIFICATE, pem.clone());
    }
}

/// What is wrong with a client's certificate chain, if anything: it must lead to a CA of the
/// host through at most `depth` intermediates, be valid now, allow client authentication, and
/// (with revocation lists) be covered by a list and not revoked, every certificate of the chain.
fn chain_fault(
    verify: &ClientVerify,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    algorithms: &WebPkiSupportedAlgorithms,
) -> Option<webpki::Error> {
    let leaf = match webpki::EndEntityCert::try_from(leaf) {
        Ok(leaf) => leaf,
        Err(error) => return Some(error),
    };
    let trust: &ClientTrust = &verify.trust;
    let crls: Vec<webpki::CertRevocationList<'_>> = match trust
        .crls
        .iter()
        .map(|crl| webpki::BorrowedCertRevocationList::from_der(crl).map(Into::into))
        .collect()
    {
        Ok(crls) => crls,
        Err(error) => return Some(error),
    };
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs).ok().map(|builder| {
        builder
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build()
    });
    let depth = usize::try_from(verify.depth).unwrap_or(usize::MAX);
    let within_depth = |path: &webpki::VerifiedPath<'_>| match path.intermediate_certificates().count() {
        n if n <= depth => Ok(()),
        _ => Err(webpki::Error::MaximumPathDepthExceeded),
    };
    leaf.verify_for_usage(
        algorithms.all,
        &trust.anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        revocation,
        Some(&within_depth),
    )
    .err()
}

/// OpenSSL's words for a verification error (`X509_verify_cert_error_string`), which nginx puts
/// after `FAILED:` in `$ssl_client_verify`.
fn failure_reason(error: &webpki::Error, leaf: &CertificateDer<'_>) -> &'static str {
    use webpki::Error;
    match error {
        Error::UnknownIssuer => match webpki::EndEntityCert::try_from(leaf) {
            Ok(cert) if cert.subject() == cert.issuer() => "self-signed certificate",
            _ => "unable to get local issuer certificate",
        },
        Error::CertExpired { .. } => "certificate has expired",
        Error::CertNotValidYet { .. } => "certificate is not yet valid",
        Error::CertRevoked => "certificate revoked",
        Error::UnknownRevocationStatus => "unable to get certificate CRL",
        Error::CrlExpired { .. } => "CRL has expired",
        Error::MaximumPathDepthExceeded => "certificate chain too long",
        Error::InvalidSignatureForPublicKey => "certificate signature failure",
        Error::RequiredEkuNotFoundContext(_) | Error::CaUsedAsEndEntity => "unsupported certificate purpose",
        _ => "unspecified certificate verification error",
    }
}

/// The leaf certificate as nginx's `$ssl_client_escaped_cert`: PEM, URL-escaped.
fn escaped_pem(leaf: &CertificateDer<'_>) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(leaf.as_ref());
    let mut pem = String::with_capacity(encoded.len() * 3 / 2 + 80);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut escaped = String::with_capacity(pem.len() * 2);
    for byte in pem.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => escaped.push(byte.into()),
            _ => {
                let _ = write!(escaped, "%{byte:02X}");
            }
        }
    }
    // Only unreserved characters and `%XX` are left.
    HeaderValue::from_str(&escaped).expect("URL-escaped text is a valid header value")
}

/// A distinguished name (the contents of an X.509 `Name`) written as OpenSSL writes it for
/// nginx (`XN_FLAG_RFC2253`): attributes last to first, `,` between them (`+` within one),
/// short names (`CN`, `O` …) or the dotted OID, special characters escaped with `\`, bytes
/// outside printable ASCII as `\XX`, values that are not strings as `#` and their DER in hex.
/// `None` for a malformed name; empty for an empty one.
pub(crate) fn distinguished_name(der: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let (tag, set, after) = tlv(rest)?;
        if tag != 0x31 {
            return None;
        }
        rest = after;
        let mut attributes = Vec::new();
        let mut set = set;
        while !set.is_empty() {
            let (tag, attribute, after) = tlv(set)?;
            if tag != 0x30 {
                return None;
            }
            set = after;
            let (tag, oid, value) = tlv(attribute)?;
            if tag != 0x06 {
                return None;
            }
            let mut text = attribute_name(oid)?;
            text.push('=');
            write_value(&mut text, value)?;
            attributes.push(text);
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// One DER element: its tag, contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let (bytes, rest) = (rest.get(..count)?, rest.get(count..)?);
            (bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b)), rest)
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// OpenSSL's short name of an attribute type, else its dotted OID.
fn attribute_name(oid: &[u8]) -> Option<String> {
    const NAMES: &[(&[u8], &str)] = &[
        (&[0x55, 0x04, 0x03], "CN"),
        (&[0x55, 0x04, 0x04], "SN"),
        (&[0x55, 0x04, 0x05], "serialNumber"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "street"),
        (&[0x55, 0x04, 0x0a], "O"),
        (&[0x55, 0x04, 0x0b], "OU"),
        (&[0x55, 0x04, 0x0c], "title"),
        (&[0x55, 0x04, 0x11], "postalCode"),
        (&[0x55, 0x04, 0x2a], "GN"),
        (&[0x55, 0x04, 0x2b], "initials"),
        (&[0x55, 0x04, 0x2e], "dnQualifier"),
        (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], "emailAddress"),
        (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01], "UID"),
        (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19], "DC"),
    ];
    if let Some((_, name)) = NAMES.iter().find(|(known, _)| *known == oid) {
        return Some((*name).to_owned());
    }
    let (&first, rest) = oid.split_first()?;
    let mut text = format!("{}.{}", first / 40, first % 40);
    let mut arc: u64 = 0;
    for &byte in rest {
        arc = arc.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            let _ = write!(text, ".{arc}");
            arc = 0;
        }
    }
    Some(text)
}

/// An attribute value (a whole DER element), escaped as RFC 2253 and OpenSSL ask.
fn write_value(out: &mut String, element: &[u8]) -> Option<()> {
    let (tag, contents, _) = tlv(element)?;
    let text: Vec<u8> = match tag {
        // UTF8String, NumericString, PrintableString, T61String, IA5String, VisibleString.
        0x0c | 0x12 | 0x13 | 0x14 | 0x16 | 0x1a => contents.to_vec(),
        // BMPString: UCS-2, written as UTF-8.
        0x1e => {
            let units = contents.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units).map(|c| c.unwrap_or('\u{fffd}')).collect::<String>().into_bytes()
        }
        _ => {
            out.push('#');
            for byte in element {
                let _ = write!(out, "{byte:02X}");
            }
            return Some(());
        }
    };
    let last = text.len().saturating_sub(1);
    for (i, &byte) in text.iter().enumerate() {
        match byte {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(byte.into());
            }
            b'#' if i == 0 => out.push_str("\\#"),
            b' ' if i == 0 || i == last => out.push_str("\\ "),
            0x20..=0x7e => out.push(byte.into()),
            _ => {
                let _ = write!(out, "\\{byte:02X}");
            }
        }
    }
    Some(())
}

/// The verifier of the handshakes of hosts that request client certificates: it names the
/// host's CAs to the client and checks that the client holds the key of the certificate it
/// sent, but lets any certificate, or none, through. The chain is judged after the handshake
/// ([`ClientCert::judge`]), so that a refusal is an HTTP answer (400, or a redirect to the
/// error page), as nginx gives it, rather than a failed handshake.
#[derive(Debug)]
pub(crate) struct AnyClientCertificate {
    subjects: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCertificate {
    pub(crate) fn new(trust: &ClientTrust, algorithms: WebPkiSupportedAlgorithms) -> Arc<Self> {
        Arc::new(Self { subjects: trust.subjects.clone(), algorithms })
    }
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A request for a host that requests client certificates arrived on a connection whose
/// handshake named another host (or none), with other rules: its certificate was judged by
/// those, if asked for at all. nginx answers 421, so that the client opens a connection for
/// this host.
#[derive(Debug)]
pub(crate) struct Misdirected;

/// The client certificate that counts for a request to `host` on this connection: the one the
/// handshake judged under these rules (or equal ones); none when the handshake named the host
/// but asked for no certificate (the host's rules came later).
pub(crate) fn for_request<'c>(
    verify: &ClientVerify,
    host: Option<&str>,
    connection: &'c ConnectionInfo,
) -> Result<Option<&'c ClientCert>, Misdirected> {
    let Some(session) = &connection.tls else { return Ok(None) };
    if verify.mode == VerifyClient::Off {
        return Ok(None);
    }
    // A verdict counts only under the rules it was judged by (the same ones, or equal ones
    // from a newer table): under others (another host's, or this host's changed CA) the client
    // must connect again to be judged (421).
    match &session.client_cert {
        Some((rules, cert)) => match &**rules {
            ClientAuth::Verify(used) if std::ptr::eq(used, verify) || used == verify => Ok(Some(cert)),
            _ => Err(Misdirected),
        },
        None => {
            let host = host.and_then(ostium_model::normalize_host);
            let same_name = matches!(
                (session.server_name.as_deref(), &host),
                (Some(name), Some(host)) if name == host.as_str()
            );
            if same_name { Ok(None) } else { Err(Misdirected) }
        }
    }
}

/// Whether the host's rules ask the handshake for a certificate.
pub(crate) fn requested(client_auth: &ClientAuth) -> Option<&ClientVerify> {
    match client_auth {
        ClientAuth::Verify(verify) if verify.mode != VerifyClient::Off => Some(verify),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_der(params: rcgen::DistinguishedName) -> Vec<u8> {
        let mut cert = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cert.distinguished_name = params;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = cert.self_signed(&key).unwrap();
        webpki::EndEntityCert::try_from(cert.der()).unwrap().subject().to_vec()
    }

    /// nginx's `$ssl_client_s_dn` (OpenSSL's RFC 2253 form): last attribute first.
    #[test]
    fn names_are_written_as_openssl_writes_them_for_nginx() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::CommonName, "#alice ");
        assert_eq!(distinguished_name(&name_der(dn)).unwrap(), r"CN=\#alice\ ,O=Example\, Inc.,C=DE");
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "Jürgen");
        assert_eq!(distinguished_name(&name_der(dn)).unwrap(), r"CN=J\C3\BCrgen");
        assert_eq!(distinguished_name(&[]).unwrap(), "");
        assert_eq!(distinguished_name(&[0x31, 0x05, 0x30]), None);
    }

    #[test]
    fn unknown_attributes_are_a_dotted_oid_and_their_der_in_hex() {
        // SET { SEQUENCE { OID 1.2.3.4, INTEGER 5 } }
        let der = [0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x02, 0x01, 0x05];
        assert_eq!(distinguished_name(&der).unwrap(), "1.2.3.4=#020105");
    }

    /// ingress-nginx's e2e test expects `ssl-client-cert=-----BEGIN%20CERTIFICATE-----%0A`.
    #[test]
    fn the_certificate_is_url_escaped_pem() {
        let escaped = escaped_pem(&CertificateDer::from(vec![0xfb; 60]));
        let escaped = escaped.to_str().unwrap();
        assert!(escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{escaped}");
        assert!(escaped.ends_with("%0A-----END%20CERTIFICATE-----%0A"), "{escaped}");
        assert!(escaped.contains("%2B%2F"), "+ and / are escaped: {escaped}");
    }
}
