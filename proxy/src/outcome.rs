//! Answers of the proxy's own: what a request policy says instead of forwarding, and every
//! refusal or failure. [`Outcome::into_response`] is the one place they become responses.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode, Version};
use ostium_model::Redirection;

use crate::{ProxyBody, ProxyError};

/// A request answered by the proxy itself.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A redirect (`Location`, no body).
    Redirect(Redirection),
    /// 401 with the route's `WWW-Authenticate` challenge.
    Challenge(HeaderValue),
    /// 401 from an auth service, with its `WWW-Authenticate` if it sent one.
    Unauthorized(Option<HeaderValue>),
    /// Refused or failed: the error's status and static body.
    Refuse(ProxyError),
    /// A CORS preflight: 204 (the route's `Access-Control-*` headers are added to every answer).
    Preflight,
}

impl From<ProxyError> for Outcome {
    fn from(error: ProxyError) -> Self {
        Self::Refuse(error)
    }
}

impl Outcome {
    /// The error behind the answer, for the access log.
    pub(crate) fn error(&self) -> Option<ProxyError> {
        match self {
            Self::Refuse(error) => Some(*error),
            Self::Redirect(_) | Self::Challenge(_) | Self::Unauthorized(_) | Self::Preflight => None,
        }
    }

    /// The response for a request of `version`.
    pub(crate) fn into_response(self, version: Version) -> Response<ProxyBody> {
        let (status, body, header) = match self {
            Self::Redirect(redirection) => match (redirection.status, redirection.location_header()) {
                (status, Some(location)) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
                    (status, "", Some((LOCATION, location)))
                }
                // The host the client sent cannot be written back: the request was malformed.
                (_, None) => return Self::Refuse(ProxyError::BadRequest("Host")).into_response(version),
            },
            Self::Challenge(challenge) => (
                StatusCode::UNAUTHORIZED,
                "401 Authorization Required\n",
                Some((WWW_AUTHENTICATE, challenge)),
            ),
            Self::Unauthorized(challenge) => (
                StatusCode::UNAUTHORIZED,
                "401 Authorization Required\n",
                challenge.map(|challenge| (WWW_AUTHENTICATE, challenge)),
            ),
            Self::Preflight => {
                let mut response = Response::new(ProxyBody::full(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                // ingress-nginx's template writes exactly this value.
                let content_type = HeaderValue::from_static("text/plain charset=UTF-8");
                response.headers_mut().insert(CONTENT_TYPE, content_type);
                return response;
            }
            Self::Refuse(error) => {
                // What follows on an HTTP/1 connection cannot be trusted to be a request.
                let close = error.closes_connection() && version < Version::HTTP_2;
                (error.status(), error.body(), close.then(|| (CONNECTION, HeaderValue::from_static("close"))))
            }
        };
        let mut response = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        if !body.is_empty() {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        if let Some((name, value)) = header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
