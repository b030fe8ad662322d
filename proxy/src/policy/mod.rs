//! Request policies: what a route does to a request before it is forwarded, in ingress-nginx's
//! order. Each policy is a function of the request, the route's policy and the connection that
//! lets the request go on or stops it with an [`Outcome`]; adding one is a module here and a
//! line in [`check`].

mod access;
mod basic_auth;
pub(crate) mod block;
mod client_cert;
mod cors;
mod deny;
mod external_auth;
mod rate_limit;
mod redirect;

use std::ops::ControlFlow;

use http::HeaderMap;

use crate::Proxy;
use crate::outcome::Outcome;
use crate::route::Routed;

pub(crate) use cors::response_headers as cors_headers;
pub(crate) use external_auth::{AuthEffects, Original, cookie, render};
pub(crate) use rate_limit::{Admission, Throttle};

/// Runs the request policies in order: the host's client certificate rules, a route denied by
/// its Ingress, a CORS preflight, redirects (nginx's rewrite phase), rate limits (its preaccess
/// phase), access by address, credentials and auth service (its access phase). `Break` carries
/// the answer that replaces forwarding; `Continue` what the rate limits keep until the response
/// is sent. What an auth service's answer asks of the rest of the request is left in `effects`.
pub(crate) async fn check(
    original: &Original<'_>,
    cors: Option<&HeaderMap>,
    routed: &Routed<'_>,
    proxy: &Proxy,
    effects: &mut AuthEffects,
) -> ControlFlow<Outcome, Admission> {
    let (head, connection) = (original.head, original.connection);
    client_cert::check(routed.client_auth.as_deref(), head, connection)?;
    deny::check(&routed.policy)?;
    cors::check(original.method, cors)?;
    redirect::check(head, routed, (connection, original.client))?;
    let admission = rate_limit::check(&routed.policy, original.client)?;
    access::check(&routed.policy, original, proxy, effects).await?;
    ControlFlow::Continue(admission)
}
