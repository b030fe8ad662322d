//! Request policies: what a route does to a request before it is forwarded, in ingress-nginx's
//! order. Each policy is a function of the request, the route's policy and the connection that
//! lets the request go on or stops it with an [`Outcome`]; adding one is a module here and a
//! line in [`check`].

mod access;
mod basic_auth;
mod deny;
mod redirect;

use std::ops::ControlFlow;

use http::HeaderMap;

use crate::ConnectionInfo;
use crate::outcome::Outcome;
use crate::request::RequestHead;
use crate::route::Routed;

/// Runs the request policies in order: a route denied by its Ingress, redirects, access by
/// address and credentials. `Break` carries the answer that replaces forwarding.
pub(crate) async fn check(
    headers: &HeaderMap,
    head: &RequestHead,
    routed: &Routed<'_>,
    connection: &ConnectionInfo,
) -> ControlFlow<Outcome> {
    deny::check(&routed.policy)?;
    redirect::check(head, routed, connection)?;
    access::check(&routed.policy, headers, connection).await?;
    ControlFlow::Continue(())
}
