//! `default-backend` and `custom-http-errors`, as ingress-nginx applies them (nginx.tmpl: the
//! `CUSTOM_ERRORS` locations and `custom-default-backend-` upstreams).
//!
//! A route whose Service has no endpoints sends its requests to its own default backend, which
//! is told why (`X-Code: 503` …). An answer with one of the route's error codes is replaced by
//! the default backend's answer to a request for `/` (query kept) carrying the error's details;
//! the route's own default backend serves it while it has endpoints, else
//! `--default-backend-service`, else the built-in 404. Endpoint answers are replaced unless
//! `disable-proxy-intercept-errors` is set; the proxy's own (502, 503, 504, 403 …) always are.

use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ostium_model::{HeaderSettings, NamespacedName, Protocol, Target};

use crate::client::Client;
use crate::headers;
use crate::request::RequestHead;
use crate::rewrite::forwarded;
use crate::route::Defaults;
use crate::{ConnectionInfo, ProxyError};

const X_CODE: HeaderName = HeaderName::from_static("x-code");
const X_FORMAT: HeaderName = HeaderName::from_static("x-format");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
const X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
const X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
const X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the default backend is told of the request it stands in for.
#[derive(Clone, Debug)]
pub(crate) struct Details {
    ingress: Option<Arc<NamespacedName>>,
    service: Option<Arc<NamespacedName>>,
    service_port: Option<HeaderValue>,
    accept: Option<HeaderValue>,
}

/// An error page to fetch if the answer calls for one: the client's request as the default
/// backend will get it, kept from before the request went upstream.
#[derive(Debug)]
pub(crate) struct ErrorPageRequest {
    method: Method,
    headers: HeaderMap,
}

impl Defaults {
    /// The route's own default backend, when the route's Service has no endpoints and the
    /// default backend has (ingress-nginx switches only to a default backend with endpoints).
    pub(crate) fn instead_of(&self, target: &Target) -> Option<(Target, Protocol)> {
        let own = self.own.as_ref().filter(|(own, _)| own.has_endpoints())?;
        (!target.has_endpoints()).then(|| own.clone())
    }

    /// Where error pages come from; `None` for the built-in 404.
    pub(crate) fn error_backend(&self) -> Option<(Target, Protocol)> {
        let own = self.own.as_ref().filter(|(own, _)| own.has_endpoints());
        own.or(self.global.as_ref()).cloned()
    }
}

impl Details {
    pub(crate) fn new(
        defaults: &Defaults,
        ingress: Option<Arc<NamespacedName>>,
        service: Option<Arc<NamespacedName>>,
        request_headers: &HeaderMap,
    ) -> Self {
        let service_port =
            defaults.service_port.as_ref().and_then(|p| HeaderValue::from_str(&p.to_string()).ok());
        Self { ingress, service, service_port, accept: request_headers.get(ACCEPT).cloned() }
    }

    /// Adds the headers that tell a default backend about the request, for `code`. nginx leaves
    /// out a header whose value is empty (no `Accept`, no Ingress).
    pub(crate) fn tell(&self, headers: &mut HeaderMap, code: u16) {
        headers.insert(X_CODE, HeaderValue::from(code));
        let text = |value: &str| HeaderValue::from_str(value).ok();
        let mut set = |name: HeaderName, value: Option<HeaderValue>| match value {
            Some(value) => {
                headers.insert(name, value);
            }
            None => {
                headers.remove(name);
            }
        };
        set(X_FORMAT, self.accept.clone());
        set(X_NAMESPACE, self.ingress.as_ref().and_then(|i| text(&i.namespace)));
        set(X_INGRESS_NAME, self.ingress.as_ref().and_then(|i| text(&i.name)));
        set(X_SERVICE_NAME, self.service.as_ref().and_then(|s| text(&s.name)));
        set(X_SERVICE_PORT, self.service_port.clone());
    }
}

impl ErrorPageRequest {
    /// Keeps what an error page request needs of the client's request, which goes upstream
    /// itself; the rest of the work waits until a page is wanted.
    pub(crate) fn capture(method: &Method, request_headers: &HeaderMap) -> Self {
        Self { method: method.clone(), headers: request_headers.clone() }
    }

    /// The request for the error page of `code`: method and headers of the client's request,
    /// without its body, for `/` with its arguments; `request_id` is the one the endpoint got,
    /// if the request went that far.
    pub(crate) fn for_code(
        self,
        code: u16,
        details: &Details,
        request_id: Option<HeaderValue>,
        head: &RequestHead,
        (connection, client): (&ConnectionInfo, &Client),
        settings: &HeaderSettings,
    ) -> Result<(Method, HeaderMap, PathAndQuery), ProxyError> {
        let mut headers = self.headers;
        headers::rewrite_request(&mut headers, forwarded(head, connection, client), None, settings);
        // Sent without the client's body.
        for name in [CONTENT_LENGTH, TRANSFER_ENCODING, EXPECT] {
            headers.remove(name);
        }
        // ingress-nginx: `Host $best_http_host` (`X-Forwarded-For $remote_addr` is what
        // `rewrite_request` sets).
        if let Some(host) = &head.host {
            headers.insert(HOST, host.clone());
        }
        details.tell(&mut headers, code);
        let original_uri =
            HeaderValue::from_str(head.target()).map_err(|_| ProxyError::BadRequest("request target"))?;
        headers.insert(X_ORIGINAL_URI, original_uri);
        if let Some(id) = request_id {
            headers.insert(X_REQUEST_ID, id);
        }
        // `rewrite (.*) / break;` keeps the arguments.
        let path_and_query = match head.uri.query() {
            Some(query) => PathAndQuery::try_from(format!("/?{query}")),
            None => Ok(PathAndQuery::from_static("/")),
        }
        .map_err(|_| ProxyError::BadRequest("query"))?;
        Ok((self.method, headers, path_and_query))
    }
}
