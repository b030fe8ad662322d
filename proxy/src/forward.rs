//! The request pipeline, phase by phase: check the request head (`request`), route it on the
//! current table (`route`), apply the route's request policies (`policy`), rewrite it for the
//! backend (`rewrite`), read its body first when the route buffers it (`buffer`), send it to
//! endpoints under nginx's clocks and retry rules (`retry`), and stream the answer back. Answers
//! of our own come from `outcome`; a route's default backend and error pages (`error_page`)
//! stand in for either.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use http::header::CONTENT_LENGTH;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ostium_model::{GlobalSettings, LoadBalance, NamespacedName, NextUpstream, Protocol};

use crate::access_log::{Line, UpstreamNames};
use crate::affinity::Stickiness;
use crate::body::{AccessEntry, ProxyBody};
use crate::buffer::BufferedBody;
use crate::canary;
use crate::client::Client;
use crate::compress::Negotiation;
use crate::error_page::{Details, ErrorPageRequest};
use crate::mirror::MirrorCopy;
use crate::outcome::Outcome;
use crate::policy::{Admission, AuthEffects, Original};
use crate::pool::PooledBody;
use crate::request::RequestHead;
use crate::rewrite::{Outgoing, upstream_request};
use crate::route::{Defaults, Routed};
use crate::telemetry::{Finished, Span};
use crate::tunnel::tunnel;
use crate::upstream;
use crate::upstream_body::OutgoingBody;
use crate::{ConnectionInfo, Proxy, ProxyError, headers, policy, response};

/// What the access log says about a request besides the request itself.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) ingress: Option<Arc<NamespacedName>>,
    pub(crate) service: Option<Arc<NamespacedName>>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) upstream_duration: Option<Duration>,
    request_id: Option<HeaderValue>,
    /// Request body bytes read so far, counted only for the access log.
    bytes_in: Option<Arc<AtomicU64>>,
    /// Headers the route adds to whatever answers the request (CORS).
    response_headers: Option<HeaderMap>,
    /// The route turned the access log off (`enable-access-log: "false"`).
    unlogged: bool,
    /// What an auth service's answer adds to the client's answer (`Set-Cookie`).
    auth_effects: Option<AuthEffects>,
    /// The request's span, when its route is traced.
    span: Option<Span>,
    /// What the client accepts, when the table compresses responses.
    pub(crate) compression: Option<Negotiation>,
    /// The settings of the whole proxy, from the table the request started with.
    pub(crate) global: Arc<GlobalSettings>,
    /// The route's `custom-headers`, for whatever answers the request.
    custom_headers: Option<Arc<[(HeaderName, HeaderValue)]>>,
    /// No route took the request (or only `--default-backend-service`'s).
    pub(crate) default_backend: bool,
    /// When the last request to an endpoint was sent, and the status of its answer.
    pub(crate) upstream_started: Option<Instant>,
    pub(crate) upstream_status: Option<u16>,
    /// The access log line names the route's Service: `upstream_names` is filled in by routing.
    pub(crate) wants_upstream_names: bool,
    pub(crate) upstream_names: Option<Box<UpstreamNames>>,
    /// The request's client when its forwarded headers name another than the connection's
    /// (boxed: most requests have none, and the trace stays small).
    pub(crate) client: Option<Box<Client>>,
}

impl Trace {
    /// The trace of a request that has just started (not `Default`: that would build default
    /// global settings, parsing their lists, for every request).
    fn new(global: Arc<GlobalSettings>) -> Self {
        Self {
            ingress: None,
            service: None,
            upstream: None,
            upstream_duration: None,
            request_id: None,
            bytes_in: None,
            response_headers: None,
            unlogged: false,
            auth_effects: None,
            span: None,
            compression: None,
            global,
            custom_headers: None,
            default_backend: false,
            upstream_started: None,
            upstream_status: None,
            wants_upstream_names: false,
            upstream_names: None,
            client: None,
        }
    }

    /// The request's client: the one its forwarded headers name, else the connection's.
    pub(crate) fn client<'a>(&'a self, connection: &'a ConnectionInfo) -> &'a Client {
        self.client.as_deref().unwrap_or(&connection.client)
    }
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
        let head_only = request.method() == Method::HEAD;
        let global = self.inner.tables.load().global().clone();
        let mut trace = Trace::new(global);
        let logged = self.access_log_start(&request, &mut trace);
        trace.bytes_in = logged.is_some().then(Arc::default);
        let (mut response, error) = match self.forward(request, connection, &mut trace).await {
            Ok(mut response) => {
                headers::hide(response.headers_mut(), &trace.global.headers);
                (response, None)
            }
            Err(outcome) => {
                let error = outcome.error();
                if let Some(error) = error {
                    tracing::debug!(%error, "request refused or failed");
                }
                (outcome.into_response(version), error)
            }
        };
        // The ConfigMap's first, then the route's (nginx runs `http`-level `more_set_headers`
        // before a location's); each replaces the endpoint's.
        headers::set_on_answer(response.headers_mut(), &trace.global.headers);
        if let Some(headers) = trace.response_headers.take() {
            for (name, value) in headers.iter() {
                response.headers_mut().insert(name, value.clone());
            }
        }
        for (name, value) in trace.custom_headers.take().iter().flat_map(|headers| headers.iter()) {
            response.headers_mut().insert(name, value.clone());
        }
        if let Some(effects) = trace.auth_effects.take() {
            effects.apply_response(response.status(), response.headers_mut());
        }
        if let Some(negotiation) = trace.compression.take().filter(|_| !head_only) {
            response = negotiation.apply(response);
        }
        if trace.span.is_some() {
            let finished = Finished {
                status: response.status().as_u16(),
                ingress: trace.ingress.as_ref(),
                service: trace.service.as_ref(),
                upstream: trace.upstream,
                client: trace.client(connection).address,
            };
            self.inner.tracer.finish(trace.span.take(), started, finished);
        }
        self.inner.metrics.request(
            trace.ingress.clone(),
            trace.service.take(),
            response.status().as_u16(),
            started.elapsed(),
            trace.upstream_duration,
        );
        // `enable-access-log-for-default-backend` for requests no route takes.
        let Some(logged) =
            logged.filter(|logged| !trace.unlogged && (logged.default_backend || !trace.default_backend))
        else {
            return response;
        };
        let line = logged.line.map(|request| {
            let output = self.inner.config.access_log_output.clone();
            Box::new(Line::new(request, logged.version, &response, connection, &mut trace, output))
        });
        let entry = AccessEntry {
            started,
            client: trace.client(connection).address,
            method: logged.method,
            uri: logged.uri,
            host: logged.host,
            status: response.status().as_u16(),
            bytes_in: trace.bytes_in,
            upstream: trace.upstream,
            upstream_duration: trace.upstream_duration,
            ingress: trace.ingress,
            request_id: trace.request_id,
            error,
            line,
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
        // Always the event, even with a `log-format-upstream`: there is no request to fill it.
        if self.inner.config.access_log && !self.inner.tables.load().global().access_log.disabled {
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
        policy::block::check(&trace.global.headers, request.headers())?;
        let routed = self.route(&head, request.headers(), connection, trace)?;
        // One call of `pass` (its future is most of this one's size): with the details a
        // default backend gets, and what an error page request needs, when the route has them.
        let details = routed.defaults.as_deref().map(|defaults| {
            Details::new(defaults, trace.ingress.clone(), trace.service.clone(), request.headers())
        });
        let pages = routed.policy.error_pages.as_ref().filter(|_| details.is_some());
        let page = pages.map(|_| ErrorPageRequest::capture(request.method(), request.headers()));
        let result = self.pass(request, &head, &routed, connection, details.as_ref(), trace).await;
        let (Some(defaults), Some(details), Some(pages), Some(page)) =
            (routed.defaults.as_deref(), &details, pages, page)
        else {
            return result;
        };
        let code = match &result {
            Ok(response) if pages.intercept_upstream => response.status().as_u16(),
            // A request whose framing cannot be trusted keeps its answer, which closes the
            // connection (nginx turns keep-alive off for these whatever `error_page` says).
            Err(Outcome::Refuse(error)) if !error.closes_connection() => error.status().as_u16(),
            _ => return result,
        };
        if !pages.covers(code) {
            return result;
        }
        drop(result);
        let request = page.for_code(
            code,
            details,
            trace.request_id.clone(),
            &head,
            (connection, trace.client(connection)),
            &trace.global.headers,
        )?;
        // Boxed: a rare path, whose upstream exchange would otherwise add to every request's
        // future.
        Ok(Box::pin(self.error_page(request, defaults, &routed, connection, trace)).await?)
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
        parts.version = upstream::scheme(protocol).1;
        let outgoing = Outgoing { parts, path_and_query, body: OutgoingBody::None, client_upgrade: None };
        let clocks = self.clocks(routed);
        let next_upstream = NextUpstream::default();
        let tries = (&next_upstream, LoadBalance::default());
        let (response, _) =
            self.to_backend(outgoing, target, (protocol, None), clocks, tries, None, trace).await?;
        let hsts = routed.hsts(connection);
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
        trace.custom_headers = routed.policy.shaping.custom_headers.clone();
        trace.span = Span::start(
            routed.policy.tracing.as_ref(),
            request.method(),
            request.uri(),
            head.host(),
            request.headers(),
        );
        trace.unlogged = !routed.policy.access_log;
        let settings = &trace.global.headers;
        // `trace.client` alone is borrowed: the other fields of `trace` are written below.
        let client = trace.client.as_deref().unwrap_or(&connection.client);
        let original = Original {
            method: request.method(),
            headers: request.headers(),
            head,
            connection,
            settings,
            client,
        };
        let mut effects = AuthEffects::default();
        let checked =
            policy::check(&original, trace.response_headers.as_ref(), routed, self, &mut effects).await;
        trace.auth_effects = Some(effects);
        let admission = match checked {
            ControlFlow::Continue(admission) => admission,
            ControlFlow::Break(outcome) => return Err(outcome),
        };
        let Some((target, protocol)) = routed.backend.clone() else {
            return Err(ProxyError::BackendUnavailable.into()); // a redirect route redirects above
        };
        // `default-backend`: while the route's Service has no endpoints.
        let instead = routed.defaults.as_ref().and_then(|d| d.instead_of(&target));
        // Sessions and hash keys tie requests to the route's own endpoints only.
        let balancing = canary::balancing(&routed.policy, routed.to_canary);
        let mut stickiness = instead.is_none().then(|| Stickiness::new(&balancing, &original)).flatten();
        let (target, protocol) = instead.clone().unwrap_or((target, protocol));
        let (_, version) = upstream::scheme(protocol);
        let mirror = routed.policy.mirror.as_ref().map(|mirror| MirrorCopy::capture(mirror, &request));
        let body = (connection.body_timeout, trace.bytes_in.clone());
        let mut outgoing =
            upstream_request(request, head, routed, (connection, client), version, body, settings)?;
        if let Some(effects) = &mut trace.auth_effects {
            effects.apply_upstream(&mut outgoing.parts.headers);
        }
        if let Some(span) = &trace.span {
            span.propagate(&mut outgoing.parts.headers);
        }
        if let (Some(_), Some(details)) = (&instead, details) {
            details.tell(&mut outgoing.parts.headers, 503);
        }
        trace.request_id = outgoing.parts.headers.get("x-request-id").cloned();
        // nginx streams gRPC request bodies whatever `proxy_request_buffering` says, and reads
        // the whole body first when a mirror takes it.
        let buffering =
            routed.policy.request_buffering && !matches!(protocol, Protocol::Grpc | Protocol::Grpcs);
        if buffering || mirror.as_ref().is_some_and(MirrorCopy::wants_body) {
            self.buffer_body(&mut outgoing, routed.policy.client_body_buffer_size).await?;
        }
        if let Some(copy) = mirror {
            self.mirror(copy, &outgoing.body);
        }
        let clocks = self.clocks(routed);
        let tries = (&routed.policy.next_upstream, balancing.load_balance);
        let tls = routed.policy.backend_tls.as_ref();
        let (mut response, client_upgrade) = self
            .to_backend(outgoing, target, (protocol, tls), clocks, tries, stickiness.as_mut(), trace)
            .await?;
        trace.upstream_status = Some(response.status().as_u16());
        response::shape(response.headers_mut(), &routed.policy.shaping, connection.is_tls, head.host());
        if let Some(cookie) = stickiness.as_ref().and_then(Stickiness::set_cookie) {
            response.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
        let hsts = routed.hsts(connection);
        Ok(self.respond(response, client_upgrade, hsts, clocks.read, admission)?)
    }

    /// The route's clocks toward the endpoint, else the proxy's.
    fn clocks(&self, routed: &Routed<'_>) -> Clocks {
        let (config, route) = (&self.inner.config, routed.policy.upstream_timeouts);
        Clocks {
            connect: route.connect,
            send: route.send.unwrap_or(config.send_timeout),
            read: route.read.unwrap_or(config.read_timeout),
        }
    }

    /// Reads the request body in full before an endpoint is chosen (`proxy-request-buffering`),
    /// so the endpoint gets it at once, with its length, and a retry can send it again.
    async fn buffer_body(&self, outgoing: &mut Outgoing, memory: u64) -> Result<(), ProxyError> {
        let OutgoingBody::Streamed { body: Some(body), .. } = std::mem::take(&mut outgoing.body) else {
            return Ok(()); // no body
        };
        let memory = usize::try_from(memory).unwrap_or(usize::MAX);
        let buffered = BufferedBody::read(body, memory, &self.inner.body_files).await?;
        outgoing.parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(buffered.len()));
        outgoing.body = OutgoingBody::Buffered(buffered);
        Ok(())
    }

    /// The last phase: the endpoint's response for the client, under the request's rate limits.
    /// A `101` starts the tunnel, which keeps the request's place under `limit-connections`.
    fn respond(
        &self,
        mut response: Response<PooledBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        hsts: Option<&HeaderValue>,
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
        if let Some(hsts) = hsts {
            response.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        Ok(response.map(|body| admission.limit(ProxyBody::upstream(body, read_timeout))))
    }
}

/// nginx's clocks toward the endpoint for one request: the route's, else the proxy's defaults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clocks {
    /// The route's connect timeout; `None`: the proxy's.
    pub(crate) connect: Option<Duration>,
    pub(crate) send: Duration,
    pub(crate) read: Duration,
}
