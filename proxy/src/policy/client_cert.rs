//! `auth-tls-*`: what a host with client certificate rules lets through, before any rule of
//! the route (nginx checks them when the request is read, and in its `server` block). Over TLS,
//! a host that requests certificates must be the one the handshake named (else 421); no valid
//! certificate where one is required gets 400 (nginx's 496 and 495), or a redirect to
//! `auth-tls-error-page`; a subject that `auth-tls-match-cn` does not match gets 403. Plain HTTP
//! requests have no certificate to judge, as with nginx: only `auth-tls-match-cn` refuses them.

use std::ops::ControlFlow;

use ostium_model::{ClientAuth, Location, Redirection, VerifyClient};

use crate::client_cert::{self, ClientCert, Status};
use crate::outcome::Outcome;
use crate::request::RequestHead;
use crate::{ConnectionInfo, ProxyError};

pub(super) fn check(
    client_auth: Option<&ClientAuth>,
    head: &RequestHead,
    connection: &ConnectionInfo,
) -> ControlFlow<Outcome> {
    let Some(client_auth) = client_auth else { return ControlFlow::Continue(()) };
    let ClientAuth::Verify(verify) = client_auth else {
        return ControlFlow::Break(Outcome::Refuse(ProxyError::ClientAuthMisconfigured));
    };
    let Ok(cert) = client_cert::for_request(verify, head.host(), connection) else {
        return ControlFlow::Break(Outcome::Refuse(ProxyError::MisdirectedRequest));
    };
    let refuse = |error| match &verify.error_page {
        Some(page) => Outcome::Redirect(Redirection { status: 302, location: Location::Fixed(page.clone()) }),
        None => Outcome::Refuse(error),
    };
    if connection.is_tls {
        match (verify.mode, cert.map_or(Status::Absent, |cert| cert.status)) {
            (VerifyClient::On, Status::Absent) => {
                return ControlFlow::Break(refuse(ProxyError::NoClientCertificate));
            }
            (VerifyClient::OptionalNoCa, Status::Invalid { unknown_issuer: true }) => {}
            (_, Status::Invalid { .. }) => {
                return ControlFlow::Break(refuse(ProxyError::BadClientCertificate));
            }
            (_, Status::Absent | Status::Valid) => {}
        }
    }
    if let Some(pattern) = &verify.match_cn
        && !pattern.is_match(cert.map_or("", ClientCert::subject))
    {
        return ControlFlow::Break(Outcome::Refuse(ProxyError::ClientCertificateUnauthorized));
    }
    ControlFlow::Continue(())
}
