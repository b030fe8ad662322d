//! The canary decision of a route, made per request while routing (ingress-nginx decides it in
//! its balancer, `route_to_alternative_balancer` in rootfs/etc/nginx/lua/balancer.lua).

use std::sync::Arc;

use http::HeaderMap;
use ostium_model::{Affinity, BackendRef, CanaryAffinity, LoadBalance, Policy, UpstreamHash};

/// How an endpoint of the backend a request goes to is picked.
#[derive(Debug)]
pub(crate) struct Balancing<'p> {
    pub(crate) load_balance: LoadBalance,
    pub(crate) affinity: Option<&'p Arc<Affinity>>,
    pub(crate) upstream_hash: Option<&'p UpstreamHash>,
    /// On a route with a canary, the key of the chosen backend that session cookies carry
    /// (`<key>|<backend key>`), so the next request stays with that backend.
    pub(crate) session_backend: Option<&'p Arc<str>>,
}

/// The route's own balancing, or for its canary the canary Ingress's `load-balance` and
/// `upstream-hash-by` with the route's session affinity, or with `affinity-canary-behavior:
/// legacy` the canary Ingress's own (as ingress-nginx builds the canary's upstream).
pub(crate) fn balancing(policy: &Policy, to_canary: bool) -> Balancing<'_> {
    let own = Balancing {
        load_balance: policy.load_balance,
        affinity: policy.affinity.as_ref(),
        upstream_hash: policy.upstream_hash.as_deref(),
        session_backend: None,
    };
    let Some(canary) = &policy.canary else { return own };
    let sessions = canary.sessions.as_ref();
    if !to_canary {
        return Balancing { session_backend: sessions.map(|s| &s.main_key), ..own };
    }
    let affinity = match canary.affinity {
        CanaryAffinity::Sticky => own.affinity,
        CanaryAffinity::Legacy => canary.own_affinity.as_ref(),
    };
    Balancing {
        load_balance: canary.load_balance,
        affinity,
        upstream_hash: canary.upstream_hash.as_deref(),
        session_backend: affinity.and(sessions).map(|s| &s.canary_key),
    }
}

/// The backend a request is forwarded to: the route's own, or its canary's when the canary's
/// rules choose it. As in ingress-nginx, whose balancer exists only for a backend with
/// endpoints, the canary is considered only while it has endpoints and the route's own backend
/// (or the `default-backend` standing in for it) has some too.
pub(crate) fn chosen_backend<'a>(
    policy: &'a Policy,
    main: &'a BackendRef,
    headers: &HeaderMap,
) -> &'a BackendRef {
    let Some(canary) = &policy.canary else { return main };
    let has_endpoints = |backend: &BackendRef| backend.target.has_endpoints();
    let main_served = has_endpoints(main) || policy.default_backend.as_ref().is_some_and(has_endpoints);
    if main_served
        && has_endpoints(&canary.backend)
        && canary.chooses(headers, |total| fastrand::u64(..total))
    {
        &canary.backend
    } else {
        main
    }
}
