//! Who may pass: the client's address (`allowlist-source-range`, `denylist-source-range`: 403),
//! basic authentication (401) and external authentication (`auth-url`), in the order of nginx's
//! access phase (access, auth_basic, auth_request), combined as `satisfy` says. With `all` (the
//! default) each must pass, and the first that does not answers. With `any` the first that passes
//! lets the request in; a 401 or 403 is remembered (a 401 first) and answered when none passes,
//! and a failure of the auth service (500) is answered at once, as nginx's
//! `ngx_http_core_access_phase` does.

use std::ops::ControlFlow;

use http::HeaderMap;
use ostium_model::{AddressVerdict, Credentials, Policy, Satisfy};

use super::basic_auth;
use super::external_auth::{self, AuthEffects, Original, Verdict};
use crate::client::Client;
use crate::outcome::Outcome;
use crate::{Proxy, ProxyError};

pub(super) async fn check(
    policy: &Policy,
    original: &Original<'_>,
    proxy: &Proxy,
    effects: &mut AuthEffects,
) -> ControlFlow<Outcome> {
    // Authentication that cannot be evaluated denies the route whatever `satisfy` says, as
    // ingress-nginx denies a location whose auth annotations do not parse: with `any`, an
    // allowed address would otherwise be let in on a configuration that is known to be broken.
    if policy.auth.as_ref().is_some_and(|auth| auth.credentials == Credentials::Deny) {
        return ControlFlow::Break(Outcome::Refuse(ProxyError::AuthMisconfigured));
    }
    let address = address_verdict(policy, original.client);
    let headers: &HeaderMap = original.headers;
    if policy.satisfy == Satisfy::All {
        if address == Some(AddressVerdict::Denied) {
            return ControlFlow::Break(Outcome::Refuse(ProxyError::Forbidden));
        }
        basic_auth::check(policy.auth.as_ref(), headers).await?;
        let Some(auth) = &policy.external_auth else { return ControlFlow::Continue(()) };
        // Boxed, as below: the subrequest's future would otherwise add to every request's.
        return match Box::pin(external_auth::check(auth, original, proxy, effects)).await {
            Verdict::Allowed => ControlFlow::Continue(()),
            Verdict::Unauthorized(outcome) => ControlFlow::Break(outcome),
            Verdict::Forbidden => ControlFlow::Break(Outcome::Refuse(ProxyError::Forbidden)),
            Verdict::Failed => ControlFlow::Break(Outcome::Refuse(ProxyError::AuthServiceFailed)),
        };
    }
    // `satisfy any`: nothing to check lets the request in; an address only a denylist exists
    // for (and does not name) is no pass, so credentials are still asked for.
    let mut refusal: Option<Outcome> = None;
    match address {
        Some(AddressVerdict::Allowed) => return ControlFlow::Continue(()),
        Some(AddressVerdict::Denied) => refusal = Some(Outcome::Refuse(ProxyError::Forbidden)),
        Some(AddressVerdict::NoRule) | None => {}
    }
    if policy.auth.is_some() {
        match basic_auth::check(policy.auth.as_ref(), headers).await {
            ControlFlow::Continue(()) => return ControlFlow::Continue(()),
            ControlFlow::Break(challenge) => refusal = Some(challenge),
        }
    }
    if let Some(auth) = &policy.external_auth {
        let unauthorized = |refusal: &Option<Outcome>| {
            matches!(refusal, Some(Outcome::Challenge(_) | Outcome::Unauthorized(_) | Outcome::Redirect(_)))
        };
        match Box::pin(external_auth::check(auth, original, proxy, effects)).await {
            Verdict::Allowed => return ControlFlow::Continue(()),
            Verdict::Unauthorized(outcome) if !unauthorized(&refusal) => refusal = Some(outcome),
            Verdict::Unauthorized(_) => {}
            Verdict::Forbidden => {
                refusal.get_or_insert(Outcome::Refuse(ProxyError::Forbidden));
            }
            Verdict::Failed => return ControlFlow::Break(Outcome::Refuse(ProxyError::AuthServiceFailed)),
        }
    }
    match refusal {
        Some(refusal) => ControlFlow::Break(refusal),
        None => ControlFlow::Continue(()),
    }
}

/// What the route's ranges say of the client's address (the TCP peer unless a trusted proxy
/// names another, see `client`); `None` without ranges.
fn address_verdict(policy: &Policy, client: &Client) -> Option<AddressVerdict> {
    policy.source_access.as_ref().map(|access| access.judge(client.address.ip()))
}
