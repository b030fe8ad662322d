//! The first phase: what can be judged of a request before routing. Framing the guard found
//! ambiguous, methods nginx refuses, over-long targets, ambiguous credentials, and the host: the
//! one routed on is the one forwarded.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Method, Request, Uri, Version};
use hyper::body::Incoming;
use ostium_model::{forwarded_path, normalize_path};

use crate::framing::Fault;
use crate::{ConnectionInfo, ProxyError};

/// nginx's `large_client_header_buffers 4 8k`: a longer request line gets 414.
const MAX_REQUEST_TARGET: usize = 8 * 1024;

/// A request head that passed the checks: its target as sent (a cheap copy), the host it is
/// for, and its path in the two forms the pipeline needs.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) uri: Uri,
    /// The authority routed on and forwarded; ASCII.
    pub(crate) host: Option<HeaderValue>,
    pub(crate) version: Version,
}

impl RequestHead {
    pub(crate) fn check(
        request: &Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Result<Self, ProxyError> {
        match connection.framing_fault() {
            // Both Content-Length and Transfer-Encoding: no backend may read this request
            // differently from us (request smuggling), so it is refused and the connection closed.
            Some(Fault::AmbiguousLength) => {
                return Err(ProxyError::BadRequest("both Content-Length and Transfer-Encoding"));
            }
            Some(Fault::UnsupportedTransferEncoding) => return Err(ProxyError::UnsupportedTransferEncoding),
            None => {}
        }
        if request.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        if request.method() == Method::TRACE {
            return Err(ProxyError::MethodNotAllowed);
        }
        let target_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target_len > MAX_REQUEST_TARGET {
            return Err(ProxyError::UriTooLong);
        }
        if request.headers().get_all(AUTHORIZATION).iter().nth(1).is_some() {
            return Err(ProxyError::BadRequest("more than one Authorization header"));
        }
        let host = request_host(request)?;
        if host.as_ref().is_some_and(|h| h.to_str().is_err()) {
            return Err(ProxyError::BadRequest("Host is not ASCII"));
        }
        Ok(Self { uri: request.uri().clone(), host, version: request.version() })
    }

    /// The host routed on, as sent (port included).
    pub(crate) fn host(&self) -> Option<&str> {
        self.host.as_ref().and_then(|h| h.to_str().ok())
    }

    /// The path the router judges: decoded and normalised.
    pub(crate) fn routed_path(&self) -> Result<Cow<'_, str>, ProxyError> {
        normalize_path(self.uri.path()).map_err(|_| ProxyError::BadRequest("path"))
    }

    /// The path sent upstream: the routed one, with reserved escapes as the client wrote them.
    pub(crate) fn forwarded_path(&self) -> Result<Cow<'_, str>, ProxyError> {
        forwarded_path(self.uri.path()).map_err(|_| ProxyError::BadRequest("path"))
    }

    /// The request target as sent: path and query.
    pub(crate) fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
}

/// The host a request is for: the URI's authority (HTTP/2 `:authority`, or the HTTP/1 absolute
/// form, which overrides `Host`), else the one `Host` header. Two `Host` headers, none on
/// HTTP/1.1, user information in the authority, and an HTTP/2 `host` header that disagrees with
/// `:authority` (RFC 9113 §8.3.1) are malformed.
fn request_host(request: &Request<Incoming>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = request.uri().authority() {
        if authority.as_str().contains('@') {
            return Err(ProxyError::BadRequest("user information in the authority"));
        }
        if request.version() == Version::HTTP_2
            && header.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()))
        {
            return Err(ProxyError::BadRequest("host disagrees with :authority"));
        }
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("authority"));
    }
    match header {
        Some(host) => Ok(Some(host.clone())),
        None if request.version() == Version::HTTP_11 => Err(ProxyError::BadRequest("HTTP/1.1 without Host")),
        None => Ok(None),
    }
}
