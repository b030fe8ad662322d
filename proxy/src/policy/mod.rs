//! Request policies: what a route does to a request before it is forwarded, in ingress-nginx's
//! order. Each policy is a function of the request, the route's policy and the connection that
//! lets the request go on or stops it with an [`Outcome`]; adding one is a module here and a
//! line in [`check`].

mod access;
mod basic_auth;
mod client_cert;
mod cors;
mod deny;
mod rate_limit;
mod redirect;

use std::ops::ControlFlow;

use http::{HeaderMap, Method};

use crate::ConnectionInfo;
use crate::outcome::Outcome;
use crate::request::RequestHead;
use crate::route::Routed;

pub(crate) use cors::response_headers as cors_headers;
pub(crate) use rate_limit::{Admission, Throttle};

/// Runs the request policies in order: the host's client certificate rules, a route denied by
/// its Ingress, a CORS preflight,
/// redirects (nginx's rewrite phase), rate limits (its preaccess phase), access by address and
/// credentials (its access phase). `Break` carries the answer that replaces forwarding;
/// `Continue` what the rate limits keep until the response is sent.
pub(crate) async fn check(
    method: &Method,
    headers: &HeaderMap,
    cors: Option<&HeaderMap>,
    head: &RequestHead,
    routed: &Routed<'_>,
    connection: &ConnectionInfo,
) -> ControlFlow<Outcome, Admission> {
    client_cert::check(routed.client_auth.as_deref(), head, connection)?;
    deny::check(&routed.policy)?;
    cors::check(method, cors)?;
    redirect::check(head, routed, connection)?;
    let admission = rate_limit::check(&routed.policy, connection)?;
    access::check(&routed.policy, headers, connection).await?;
    ControlFlow::Continue(admission)
}
