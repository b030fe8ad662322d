//! Everything that can go wrong with a request (it becomes a response in `outcome`).

use http::StatusCode;

/// Why a request was not forwarded, or failed on the way. Client mistakes are 4xx, upstream
/// failures 502/503/504, our own bugs 500.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the client address is not allowed on this route")]
    Forbidden,
    /// With the status to answer (`limit-req-status-code`).
    #[error("the client is over the route's request rate (limit-rps, limit-rpm)")]
    RateLimited(u16),
    /// With the status to answer (`limit-conn-status-code`).
    #[error("the client has as many requests in flight as the route allows (limit-connections)")]
    TooManyConnections(u16),
    #[error("request target longer than 8 KiB")]
    UriTooLong,
    #[error("transfer coding other than chunked")]
    UnsupportedTransferEncoding,
    #[error("the client paused longer than client_body_timeout while sending the body")]
    ClientBodyTimeout,
    #[error("the route denies every request (see the Ingress diagnostics)")]
    RouteDenied,
    #[error("request body larger than the route allows")]
    BodyTooLarge,
    #[error("request body of unknown length for an HTTP/1.0 endpoint")]
    LengthRequired,
    #[error("the route's authentication is misconfigured (see the Ingress diagnostics)")]
    AuthMisconfigured,
    #[error("the backend has no ready endpoints")]
    NoEndpoints,
    #[error("the backend is unavailable (see the Ingress diagnostics)")]
    BackendUnavailable,
    #[error("could not connect to the endpoint")]
    ConnectFailed,
    #[error("the endpoint closed or reset the connection")]
    UpstreamReset,
    #[error("the endpoint did not answer in time")]
    UpstreamTimeout,
    #[error("the endpoint sent an empty or malformed response head")]
    UpstreamInvalidResponse,
    #[error("the request body could not be kept in a temporary file")]
    BodyBufferFailed,
    #[error("the auth service did not answer, or answered neither 2xx, 401 nor 403")]
    AuthServiceFailed,
    #[error("the host requires a client certificate and none was sent")]
    NoClientCertificate,
    #[error("the client certificate is not valid for the host")]
    BadClientCertificate,
    #[error("the client certificate's subject does not match auth-tls-match-cn")]
    ClientCertificateUnauthorized,
    #[error("the host's client certificate rules are misconfigured (see the Ingress diagnostics)")]
    ClientAuthMisconfigured,
    #[error("the host requires client certificates and the TLS handshake named another host")]
    MisdirectedRequest,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::NoClientCertificate | Self::BadClientCertificate => {
                StatusCode::BAD_REQUEST
            }
            Self::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Self::ClientCertificateUnauthorized | Self::ClientAuthMisconfigured => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Self::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Self::NoEndpoints | Self::BackendUnavailable | Self::AuthMisconfigured | Self::RouteDenied => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited(code) | Self::TooManyConnections(code) => {
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::ConnectFailed | Self::UpstreamReset | Self::UpstreamInvalidResponse => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyBufferFailed | Self::AuthServiceFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether an HTTP/1 connection must close after this answer: the rest of what the client
    /// sent cannot be trusted to frame the next request.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::BadRequest(_)
                | Self::UriTooLong
                | Self::UnsupportedTransferEncoding
                | Self::ClientBodyTimeout
        )
    }

    /// The short static body sent with the status.
    pub fn body(self) -> &'static str {
        match self {
            Self::NoRoute => "404 Not Found\n",
            Self::BadRequest(_) => "400 Bad Request\n",
            Self::MethodNotAllowed => "405 Not Allowed\n",
            Self::Forbidden | Self::ClientAuthMisconfigured => "403 Forbidden\n",
            // nginx's texts for its 496 and 495, sent with 400.
            Self::NoClientCertificate => "400 No required SSL certificate was sent\n",
            Self::BadClientCertificate => "400 The SSL certificate error\n",
            // ingress-nginx's `return 403 "client certificate unauthorized";`.
            Self::ClientCertificateUnauthorized => "client certificate unauthorized",
            Self::MisdirectedRequest => "421 Misdirected Request\n",
            Self::UriTooLong => "414 Request-URI Too Large\n",
            Self::UnsupportedTransferEncoding => "501 Not Implemented\n",
            Self::ClientBodyTimeout => "408 Request Time-out\n",
            Self::BodyTooLarge => "413 Request Entity Too Large\n",
            Self::LengthRequired => "411 Length Required\n",
            Self::NoEndpoints | Self::BackendUnavailable | Self::AuthMisconfigured | Self::RouteDenied => {
                "503 Service Temporarily Unavailable\n"
            }
            Self::RateLimited(code) | Self::TooManyConnections(code) => limit_body(code),
            Self::ConnectFailed | Self::UpstreamReset | Self::UpstreamInvalidResponse => "502 Bad Gateway\n",
            Self::UpstreamTimeout => "504 Gateway Time-out\n",
            Self::BodyBufferFailed | Self::AuthServiceFailed => "500 Internal Server Error\n",
        }
    }
}

/// nginx's page text for the statuses a limit may be given (400 to 599); empty for the others.
fn limit_body(code: u16) -> &'static str {
    match code {
        400 => "400 Bad Request\n",
        403 => "403 Forbidden\n",
        404 => "404 Not Found\n",
        429 => "429 Too Many Requests\n",
        500 => "500 Internal Server Error\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Temporarily Unavailable\n",
        504 => "504 Gateway Time-out\n",
        _ => "",
    }
}

/// The first `E` in an error's source chain.
pub(crate) fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}
