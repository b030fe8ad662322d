//! Redirects: the model decides which one applies (see `ostium_model::redirection`); this asks
//! it with what the request says.

use std::ops::ControlFlow;

use ostium_model::RedirectContext;

use crate::ConnectionInfo;
use crate::client::Client;
use crate::outcome::Outcome;
use crate::request::RequestHead;
use crate::route::Routed;

pub(super) fn check(
    head: &RequestHead,
    routed: &Routed<'_>,
    (connection, client): (&ConnectionInfo, &Client),
) -> ControlFlow<Outcome> {
    let request = RedirectContext {
        // Behind a trusted proxy that ended TLS, its `X-Forwarded-Proto` (lua_ingress.lua's
        // `$pass_access_scheme`), so that HTTPS requests are not redirected to HTTPS again.
        is_tls: client.used_tls(connection.is_tls),
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
