//! Who may pass: the client's address (`allowlist-source-range`, `denylist-source-range`: 403)
//! and basic authentication (401), combined as `satisfy` says. With `satisfy: any`, an allowed
//! address needs no credentials and any other address may still authenticate; with `all` (the
//! default), both must pass, the address first.

use std::ops::ControlFlow;

use http::HeaderMap;
use ostium_model::{Credentials, Policy, Satisfy};

use super::basic_auth;
use crate::outcome::Outcome;
use crate::{ConnectionInfo, ProxyError};

pub(super) async fn check(
    policy: &Policy,
    headers: &HeaderMap,
    connection: &ConnectionInfo,
) -> ControlFlow<Outcome> {
    // Authentication that cannot be evaluated denies the route whatever `satisfy` says, as
    // ingress-nginx denies a location whose auth annotations do not parse: with `any`, an
    // allowed address would otherwise be let in on a configuration that is known to be broken.
    if policy.auth.as_ref().is_some_and(|auth| auth.credentials == Credentials::Deny) {
        return ControlFlow::Break(Outcome::Refuse(ProxyError::AuthMisconfigured));
    }
    // The TCP peer: forwarded-for headers are never trusted.
    let address_passes = policy.source_access.as_ref().map(|access| access.permits(connection.remote.ip()));
    match (policy.satisfy, address_passes) {
        (Satisfy::Any, Some(true)) => return ControlFlow::Continue(()),
        (Satisfy::Any, Some(false)) if policy.auth.is_some() => {}
        (_, Some(false)) => return ControlFlow::Break(Outcome::Refuse(ProxyError::Forbidden)),
        (_, Some(true) | None) => {}
    }
    basic_auth::check(policy.auth.as_ref(), headers).await
}
