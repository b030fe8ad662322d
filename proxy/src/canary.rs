//! The canary decision of a route, made per request while routing (ingress-nginx decides it in
//! its balancer, `route_to_alternative_balancer` in rootfs/etc/nginx/lua/balancer.lua).

use http::HeaderMap;
use ostium_model::{BackendId, Policy, Table};

/// The backend a request is forwarded to: the route's own, or its canary's when the canary's
/// rules choose it. As in ingress-nginx, whose balancer exists only for a backend with
/// endpoints, the canary is considered only while it has endpoints and the route's own backend
/// (or the `default-backend` standing in for it) has some too.
pub(crate) fn chosen_backend(
    table: &Table,
    policy: &Policy,
    main: BackendId,
    headers: &HeaderMap,
) -> BackendId {
    let Some(canary) = &policy.canary else { return main };
    let has_endpoints = |id: BackendId| table.backend(id).target.has_endpoints();
    let main_served = has_endpoints(main) || policy.default_backend.is_some_and(has_endpoints);
    if main_served && has_endpoints(canary.backend) && canary.chooses(headers, |total| fastrand::u64(..total))
    {
        canary.backend
    } else {
        main
    }
}
