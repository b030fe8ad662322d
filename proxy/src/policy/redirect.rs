//! Redirects: the model decides which one applies (see `ostium_model::redirection`); this asks
//! it with what the request says.

use std::ops::ControlFlow;

use ostium_model::RedirectContext;

use crate::ConnectionInfo;
use crate::outcome::Outcome;
use crate::request::RequestHead;
use crate::route::Routed;

pub(super) fn check(
    head: &RequestHead,
    routed: &Routed<'_>,
    connection: &ConnectionInfo,
) -> ControlFlow<Outcome> {
    let request = RedirectContext {
        is_tls: connection.is_tls,
        host: head.host().unwrap_or(""),
        path: &routed.path,
        target: head.target(),
        host_has_certificate: routed.host_has_certificate,
        https: &routed.global.https,
    };
    match ostium_model::redirection(&routed.action, &routed.policy, &request) {
        Some(redirection) => ControlFlow::Break(Outcome::Redirect(redirection)),
        None => ControlFlow::Continue(()),
    }
}
