//! The request pipeline, phase by phase: check the request head (`request`), route it on the
//! current table (`route`), apply the route's request policies (`policy`), rewrite it for the
//! backend (`rewrite`), send it to an endpoint (retrying a refused connection once on another)
//! under nginx's clocks, and stream the answer back. Answers of our own come from `outcome`;
//! a route's default backend and error pages (`error_page`) stand in for either.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ostium_model::{Endpoint, NamespacedName, Protocol, Target};

use crate::body::{AccessEntry, BodyClock, ClientBodyError, ProxyBody};
use crate::error_page::{Details, ErrorPageRequest};
use crate::outcome::Outcome;
use crate::policy::Admission;
use crate::request::RequestHead;
use crate::rewrite::{Outgoing, upstream_request};
use crate::route::{Defaults, Routed};
use crate::tunnel::tunnel;
use crate::upstream::{self, UpstreamBody};
use crate::{ConnectionInfo, Proxy, ProxyError, headers, policy, response};

/// What the access log says about a request besides the request itself.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) ingress: Option<Arc<NamespacedName>>,
    pub(crate) service: Option<Arc<NamespacedName>>,
    upstream: Option<SocketAddr>,
    upstream_duration: Option<Duration>,
    request_id: Option<HeaderValue>,
    /// Request body bytes read so far, counted only for the access log.
    bytes_in: Option<Arc<AtomicU64>>,
    /// Headers the route adds to whatever answers the request (CORS).
    response_headers: Option<HeaderMap>,
    /// The route turned the access log off (`enable-access-log: "false"`).
    unlogged: bool,
}

impl Proxy {
    /// Serves one request; never fails (refusals and errors become responses).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let version = request.version();
        let logged =
            self.inner.config.access_log.then(|| {
                (request.method().clone(), request.uri().clone(), request.headers().get(HOST).cloned())
            });
        let mut trace = Trace { bytes_in: logged.is_some().then(Arc::default), ..Trace::default() };
        let (mut response, error) = match self.forward(request, connection, &mut trace).await {
            Ok(response) => (response, None),
            Err(outcome) => {
                let error = outcome.error();
                if let Some(error) = error {
                    tracing::debug!(%error, "request refused or failed");
                }
                (outcome.into_response(version), error)
            }
        };
        if let Some(headers) = trace.response_headers.take() {
            // They replace the endpoint's, as nginx's `more_set_headers` does.
            for (name, value) in headers.iter() {
                response.headers_mut().insert(name, value.clone());
            }
        }
        self.inner.metrics.request(
            trace.ingress.clone(),
            trace.service.take(),
            response.status().as_u16(),
            started.elapsed(),
            trace.upstream_duration,
        );
        let Some((method, uri, host)) = logged.filter(|_| !trace.unlogged) else { return response };
        let entry = AccessEntry {
            started,
            client: connection.remote,
            method,
            uri,
            host,
            status: response.status().as_u16(),
            bytes_in: trace.bytes_in,
            upstream: trace.upstream,
            upstream_duration: trace.upstream_duration,
            ingress: trace.ingress,
            request_id: trace.request_id,
            error,
        };
        response.map(|body| body.logged(entry))
    }

    /// Counts and logs a request hyper refused before it reached [`Proxy::handle`] (a malformed
    /// or oversized HTTP/1 head, answered 400 or 431 by hyper itself).
    pub(crate) fn refused_by_protocol(&self, error: &hyper::Error, remote: SocketAddr) {
        let status = match () {
            () if error.is_parse_too_large() => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            () if error.is_parse() && !error.is_parse_version_h2() => StatusCode::BAD_REQUEST,
            () => return,
        };
        self.inner.metrics.request(None, None, status.as_u16(), Duration::ZERO, None);
        if self.inner.config.access_log {
            tracing::info!(
                target: "ostium::access",
                client = %remote,
                status = status.as_u16(),
                error = %error,
                "request head refused"
            );
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, Outcome> {
        let head = RequestHead::check(&request, connection)?;
        let routed = self.route(&head, trace)?;
        let Some(defaults) = routed.defaults.as_deref() else {
            return self.pass(request, &head, &routed, connection, None, trace).await;
        };
        let details = Details::new(defaults, trace.ingress.clone(), trace.service.clone(), request.headers());
        let Some(pages) = &routed.policy.error_pages else {
            return self.pass(request, &head, &routed, connection, Some(&details), trace).await;
        };
        let page = ErrorPageRequest::capture(request.method(), request.headers(), &head, connection)?;
        let result = self.pass(request, &head, &routed, connection, Some(&details), trace).await;
        let code = match &result {
            Ok(response) if pages.intercept_upstream => response.status().as_u16(),
            Err(Outcome::Refuse(error)) => error.status().as_u16(),
            _ => return result,
        };
        if !pages.covers(code) {
            return result;
        }
        drop(result);
        Ok(self
            .error_page(
                page.for_code(code, &details, trace.request_id.clone()),
                defaults,
                &routed,
                connection,
                trace,
            )
            .await?)
    }

    /// The default backend's answer for an error page request (`custom-http-errors`), passed
    /// on as it is; the built-in 404 when there is no default backend (as ingress-nginx's own).
    async fn error_page(
        &self,
        (method, headers, path_and_query): (http::Method, HeaderMap, PathAndQuery),
        defaults: &Defaults,
        routed: &Routed<'_>,
        connection: &ConnectionInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some((target, protocol)) = defaults.error_backend() else { return Err(ProxyError::NoRoute) };
        let mut parts = Request::new(()).into_parts().0;
        (parts.method, parts.headers) = (method, headers);
        let (scheme, version) = upstream::scheme(protocol);
        parts.version = version;
        let body = Either::Right(Empty::new());
        let outgoing = Outgoing { parts, path_and_query, body, clock: None, client_upgrade: None };
        let clocks = self.clocks(routed);
        let (response, _) = self.to_backend(outgoing, target, protocol, scheme, clocks, trace).await?;
        let hsts = connection.is_tls && routed.host_has_certificate;
        self.respond(response, None, hsts, clocks.read, Admission::default())
    }

    /// The phases after routing: request policies, the rewrite, the endpoint, and its answer.
    /// `details` tells a default backend standing in for the route's Service why it does.
    async fn pass(
        &self,
        request: Request<Incoming>,
        head: &RequestHead,
        routed: &Routed<'_>,
        connection: &ConnectionInfo,
        details: Option<&Details>,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, Outcome> {
        trace.response_headers = policy::cors_headers(&routed.policy, request.headers());
        trace.unlogged = !routed.policy.access_log;
        let (method, headers, cors) = (request.method(), request.headers(), trace.response_headers.as_ref());
        let admission = match policy::check(method, headers, cors, head, routed, connection).await {
            ControlFlow::Continue(admission) => admission,
            ControlFlow::Break(outcome) => return Err(outcome),
        };
        let Some((target, protocol)) = routed.backend.clone() else {
            return Err(ProxyError::BackendUnavailable.into()); // a redirect route redirects above
        };
        // `default-backend`: while the route's Service has no endpoints.
        let instead = routed.defaults.as_ref().and_then(|d| d.instead_of(&target));
        let (target, protocol) = instead.clone().unwrap_or((target, protocol));
        let (scheme, version) = upstream::scheme(protocol);
        let body = (self.inner.config.connections.client_body_timeout, trace.bytes_in.clone());
        let mut outgoing = upstream_request(request, head, routed, connection, version, body)?;
        if let (Some(_), Some(details)) = (&instead, details) {
            details.tell(&mut outgoing.parts.headers, 503);
        }
        trace.request_id = outgoing.parts.headers.get("x-request-id").cloned();
        let clocks = self.clocks(routed);
        let (mut response, client_upgrade) =
            self.to_backend(outgoing, target, protocol, scheme, clocks, trace).await?;
        response::shape(response.headers_mut(), &routed.policy.shaping, connection.is_tls, head.host());
        let hsts = connection.is_tls && routed.host_has_certificate;
        Ok(self.respond(response, client_upgrade, hsts, clocks.read, admission)?)
    }

    /// The route's clocks toward the endpoint, else the proxy's.
    fn clocks(&self, routed: &Routed<'_>) -> Clocks {
        let (config, route) = (&self.inner.config, routed.policy.upstream_timeouts);
        Clocks {
            send: route.send.unwrap_or(config.send_timeout),
            read: route.read.unwrap_or(config.read_timeout),
        }
    }

    /// Sends a request to its backend's endpoints: one picked by the balancer, and once more to
    /// another when the connection was refused and there is no body to replay.
    async fn to_backend(
        &self,
        outgoing: Outgoing,
        target: Target,
        protocol: Protocol,
        scheme: Scheme,
        clocks: Clocks,
        trace: &mut Trace,
    ) -> Result<(Response<Incoming>, Option<hyper::upgrade::OnUpgrade>), ProxyError> {
        let Outgoing { mut parts, path_and_query, body, clock, client_upgrade } = outgoing;
        let body_is_empty = clock.is_none();
        let no_body = BodyClock::new(false);
        let clock = clock.as_deref().unwrap_or(&no_body);
        let endpoints = match target {
            Target::Unavailable => return Err(ProxyError::BackendUnavailable),
            Target::ExternalName(authority) => {
                parts.uri = upstream_uri(scheme, authority, path_and_query)?;
                let request = Request::from_parts(parts, body);
                let response = self.send(protocol, None, request, clock, clocks, trace).await?;
                return Ok((response, client_upgrade));
            }
            Target::Endpoints(set) | Target::ClusterIp(set) => set.load(),
        };
        let now = self.inner.upstream.now_ms();
        let first = upstream::pick(&endpoints, now, None).ok_or(ProxyError::NoEndpoints)?;
        let retry = (body_is_empty && endpoints.len() > 1)
            .then(|| (parts.method.clone(), parts.headers.clone(), parts.version, path_and_query.clone()));
        parts.uri = upstream_uri(scheme.clone(), first.authority.clone(), path_and_query)?;
        let request = Request::from_parts(parts, body);
        let response = match self.send(protocol, Some(&first), request, clock, clocks, trace).await {
            Err(ProxyError::ConnectFailed) if retry.is_some() => {
                self.inner.metrics.retry();
                let second =
                    upstream::pick(&endpoints, now, Some(first.addr)).ok_or(ProxyError::ConnectFailed)?;
                let (method, headers, version, path_and_query) = retry.expect("checked just above");
                let mut request = Request::new(Either::Right(Empty::new()));
                *request.method_mut() = method;
                *request.headers_mut() = headers;
                *request.version_mut() = version;
                *request.uri_mut() = upstream_uri(scheme, second.authority.clone(), path_and_query)?;
                self.send(protocol, Some(&second), request, clock, clocks, trace).await?
            }
            other => other?,
        };
        Ok((response, client_upgrade))
    }

    /// Sends a request upstream under nginx's clocks: `proxy_send_timeout` while the endpoint
    /// is not taking the body, `proxy_read_timeout` from the end of the request to the response
    /// head (the client's own pauses are timed by the request body itself).
    async fn send(
        &self,
        protocol: Protocol,
        endpoint: Option<&Arc<Endpoint>>,
        request: Request<UpstreamBody>,
        clock: &BodyClock,
        clocks: Clocks,
        trace: &mut Trace,
    ) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let _in_flight = endpoint.map(|e| InFlight::start(e));
        trace.upstream = endpoint.map(|e| e.addr);
        let upstream = self.inner.upstream.request(protocol, request);
        let result = tokio::select! {
            result = upstream => Ok(result),
            () = clock.upstream_stalled(clocks.send, clocks.read) => Err(ProxyError::UpstreamTimeout),
        };
        trace.upstream_duration = Some(started.elapsed());
        let error = match result? {
            Ok(response) => {
                endpoint.inspect(|e| e.record_success());
                return Ok(response);
            }
            Err(error) => error,
        };
        if let Some(client) = find_cause::<ClientBodyError>(&error) {
            return Err(match client {
                ClientBodyError::TimedOut => ProxyError::ClientBodyTimeout,
                ClientBodyError::Malformed(_) => ProxyError::BadRequest("request body"),
            });
        }
        if find_cause::<http_body_util::LengthLimitError>(&error).is_some() {
            return Err(ProxyError::BodyTooLarge);
        }
        if !error.is_connect() {
            tracing::debug!(%error, "upstream request failed");
            return Err(ProxyError::UpstreamReset);
        }
        self.inner.metrics.connect_error();
        let upstream = &self.inner.upstream;
        if let Some(e) = endpoint
            && e.record_failure(upstream.now_ms(), upstream.eject_for_ms())
        {
            tracing::warn!(endpoint = %e.addr, "endpoint refuses connections; skipping it for a while");
        }
        match find_cause::<std::io::Error>(&error) {
            Some(io) if io.kind() == std::io::ErrorKind::TimedOut => Err(ProxyError::UpstreamTimeout),
            _ => Err(ProxyError::ConnectFailed),
        }
    }

    /// The last phase: the endpoint's response for the client, under the request's rate limits.
    /// A `101` starts the tunnel, which keeps the request's place under `limit-connections`.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        hsts: bool,
        read_timeout: Duration,
        mut admission: Admission,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            // The backend may only switch protocols when the client asked to.
            let client_upgrade = client_upgrade.ok_or(ProxyError::UpstreamReset)?;
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = read_timeout;
            let admission = std::mem::take(&mut admission);
            tokio::spawn(async move {
                let _admission = admission;
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(both) => both,
                    Err(error) => {
                        tracing::debug!(%error, "upgrade failed");
                        return;
                    }
                };
                if let Err(error) = tunnel(TokioIo::new(client), TokioIo::new(upstream), idle).await {
                    tracing::debug!(%error, "upgraded connection ended");
                }
            });
        }
        headers::rewrite_response(response.headers_mut(), switching);
        // HTTP/1.1 to the client, whatever the endpoint spoke (hyper writes this version).
        *response.version_mut() = Version::HTTP_11;
        if hsts {
            // ingress-nginx's defaults: hsts, hsts-max-age 31536000, hsts-include-subdomains.
            response.headers_mut().insert(
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
        Ok(response.map(|body| admission.limit(ProxyBody::upstream(body, read_timeout))))
    }
}

/// nginx's clocks toward the endpoint for one request: the route's, else the proxy's defaults.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    send: Duration,
    read: Duration,
}

/// Counts a request against an endpoint until dropped (also when the request is cancelled).
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn start(endpoint: &'a Endpoint) -> Self {
        endpoint.start_request();
        Self(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finish_request();
    }
}

fn upstream_uri(
    scheme: Scheme,
    authority: Authority,
    path_and_query: PathAndQuery,
) -> Result<Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("URI"))
}

/// The first `E` in an error's source chain.
fn find_cause<'a, E: std::error::Error + 'static>(
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
