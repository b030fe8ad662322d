//! CORS: the `Access-Control-*` headers every answer to an allowed origin carries
//! ([`response_headers`], computed once per request with the route), and the preflight
//! (`OPTIONS` from an allowed origin) answered here with 204 before authentication (browsers
//! send no credentials with it), as ingress-nginx's template does.

use std::ops::ControlFlow;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
};
use http::{HeaderMap, HeaderValue, Method};
use ostium_model::Policy;

use crate::outcome::Outcome;

/// `cors` is what [`response_headers`] gave for the request: `Some` for an allowed origin.
pub(super) fn check(method: &Method, cors: Option<&HeaderMap>) -> ControlFlow<Outcome> {
    match cors {
        Some(_) if method == Method::OPTIONS => ControlFlow::Break(Outcome::Preflight),
        _ => ControlFlow::Continue(()),
    }
}

/// The `Access-Control-*` headers a response to this request carries, when the route has CORS
/// and the request's `Origin` is allowed.
pub(crate) fn response_headers(policy: &Policy, request: &HeaderMap) -> Option<HeaderMap> {
    let cors = policy.cors.as_ref()?;
    let origin = cors.allowed_origin(request.get(ORIGIN))?;
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, cors.allow_methods.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, cors.allow_headers.clone());
    if let Some(expose) = &cors.expose_headers {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
    headers.insert(ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
    Some(headers)
}
