//! The request pipeline: check framing, route on the normalised path, rewrite headers, forward
//! to an endpoint (retrying a refused connection once on another), stream the answer back.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use ostium_model::{
    Endpoint, HttpsRedirect, NamespacedName, Protocol, Rewrite, Target, forwarded_path, normalize_path,
};

use crate::auth::{self, Verdict};

use crate::body::{AccessEntry, BodyClock, ClientBodyError, ProxyBody, RequestBody};
use crate::framing::Fault;
use crate::headers::{self, Forwarded};
use crate::tunnel::tunnel;
use crate::upstream::{self, UpstreamBody};
use crate::{ConnectionInfo, Proxy, ProxyError};

pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    ProxyBody::full(bytes)
}

/// What the access log says about a request besides the request itself.
#[derive(Debug, Default)]
struct Trace {
    ingress: Option<Arc<NamespacedName>>,
    service: Option<Arc<NamespacedName>>,
    upstream: Option<SocketAddr>,
    upstream_duration: Option<Duration>,
    request_id: Option<HeaderValue>,
    /// Request body bytes read so far, counted only for the access log.
    bytes_in: Option<Arc<AtomicU64>>,
    /// Why the request was refused or failed, for the access log.
    error: Option<ProxyError>,
}

impl Proxy {
    /// Serves one request; never fails (errors become responses).
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
        let response = match self.forward(request, connection, &mut trace).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request refused or failed");
                trace.error = Some(error);
                let mut response = error.into_response();
                if error.closes_connection() && version < Version::HTTP_2 {
                    // What follows on the connection cannot be trusted to be a request.
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        self.inner.metrics.request(
            trace.ingress.clone(),
            trace.service.take(),
            response.status().as_u16(),
            started.elapsed(),
            trace.upstream_duration,
        );
        let Some((method, uri, host)) = logged else { return response };
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
            error: trace.error,
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
        mut request: Request<Incoming>,
        connection: &ConnectionInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        check_request(&request, connection)?;
        let host = request_host(&request)?;
        let host_str = match &host {
            Some(h) => Some(h.to_str().map_err(|_| ProxyError::BadRequest("Host is not ASCII"))?),
            None => None,
        };
        let raw_path = request.uri().path();
        let path = normalize_path(raw_path).map_err(|_| ProxyError::BadRequest("path"))?;
        let sent_path = forwarded_path(raw_path).map_err(|_| ProxyError::BadRequest("path"))?;

        // Route on the current table; keep only what forwarding needs.
        let (target, protocol, policy, host_has_certificate) = {
            let table = self.inner.tables.load();
            let matched = table.route(host_str, &path).ok_or(ProxyError::NoRoute)?;
            trace.ingress = matched.route.ingress.clone();
            let backend = table.backend(matched.route.backend);
            trace.service = Some(backend.service.clone());
            let has_certificate = host_str
                .and_then(ostium_model::normalize_host)
                .is_some_and(|h| table.tls().has_certificate(&h));
            (backend.target.clone(), backend.protocol, matched.route.policy.clone(), has_certificate)
        };

        // A route whose Ingress asks for a restriction that cannot be applied serves nobody.
        if policy.denied.is_some() {
            return Err(ProxyError::RouteDenied);
        }
        // Redirects and authentication, in ingress-nginx's order.
        if let Some(target) = &policy.host_redirect {
            // from-to-www-redirect: another server block in ingress-nginx, so nothing else applies.
            let scheme = if connection.is_tls { "https" } else { "http" };
            let uri = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let uri = uri.strip_suffix('/').unwrap_or(uri);
            return redirect(308, &format!("{scheme}://{}{uri}", target.to_str().unwrap_or("")));
        }
        if let Some(root) = &policy.app_root
            && path == "/"
        {
            let scheme = if connection.is_tls { "https" } else { "http" };
            let location = format!("{scheme}://{}{}", host_str.unwrap_or(""), root.to_str().unwrap_or("/"));
            return redirect(302, &location);
        }
        if let Some(fixed) = &policy.redirect {
            return Ok(redirect_response(fixed.status, fixed.location.clone()));
        }
        let to_https = match policy.https_redirect {
            HttpsRedirect::Always => true,
            HttpsRedirect::WhenHostHasCertificate => host_has_certificate,
            HttpsRedirect::Never => false,
        };
        if to_https && !connection.is_tls && !path.starts_with(ACME_CHALLENGE) {
            let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let target = target.strip_suffix('/').unwrap_or(target); // as ingress-nginx does
            return redirect(308, &format!("https://{}{target}", host_without_port(host_str.unwrap_or(""))));
        }
        if let Some(auth) = &policy.auth {
            match auth::check(auth, request.headers()).await {
                Verdict::Allow => {}
                Verdict::Challenge => return Ok(unauthorized(&auth.challenge)),
                Verdict::Deny => return Err(ProxyError::AuthMisconfigured),
            }
        }
        let max_body_size = policy.max_body_size;
        let hsts = connection.is_tls && host_has_certificate;

        // The backend gets the path the router judged (escapes as sent), or its rewrite.
        let query = request.uri().query();
        let rewritten = match (&policy.rewrite, &sent_path) {
            (Some(rewrite), _) => Some(rewrite_path(rewrite, &path, query)?),
            (None, Cow::Owned(sent)) => Some(with_query(sent, query)?),
            (None, Cow::Borrowed(_)) => None,
        };
        let forwarded_prefix = policy.rewrite.as_ref().and_then(|r| r.forwarded_prefix.clone());
        let limit = match max_body_size {
            Some(limit) if content_length(&request).is_some_and(|len| len > limit) => {
                return Err(ProxyError::BodyTooLarge);
            }
            Some(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let (scheme, version) = upstream::scheme(protocol);

        let upgrade = match request.version() {
            Version::HTTP_11 => headers::requested_upgrade(request.headers(), &policy.upgrades),
            _ => None,
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let port = forwarded_port(host_str, connection.is_tls);
        let client_version = request.version();
        let forwarded = Forwarded {
            client_ip: &connection.client_ip,
            host: host.clone(),
            port,
            is_tls: connection.is_tls,
        };

        let (mut parts, body) = request.into_parts();
        headers::rewrite_request(&mut parts.headers, forwarded, upgrade);
        if policy.auth.is_some() {
            // The credentials were for us (ingress-nginx: `proxy_set_header Authorization "";`).
            parts.headers.remove(AUTHORIZATION);
        }
        if let Some(prefix) = forwarded_prefix {
            parts.headers.insert("x-forwarded-prefix", prefix);
        }
        if let Some(host) = host {
            // The host routed on, whatever the client put in `Host` (RFC 9112 §3.2.2).
            parts.headers.insert(HOST, host);
        }
        if client_version == Version::HTTP_2 && version != Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        trace.request_id = parts.headers.get("x-request-id").cloned();
        parts.version = version;
        let path_and_query = match rewritten {
            Some(pq) => pq,
            None => parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let body_is_empty = body.is_end_stream();
        let clock = Arc::new(BodyClock::new(!body_is_empty));
        let body: UpstreamBody = if body_is_empty {
            Either::Right(Empty::new())
        } else {
            let timeout = self.inner.config.connections.client_body_timeout;
            let body = RequestBody::new(body, trace.bytes_in.clone(), clock.clone(), timeout);
            Either::Left(Limited::new(body, limit))
        };

        let response = match target {
            Target::Unavailable => return Err(ProxyError::BackendUnavailable),
            Target::ExternalName { host, port } => {
                let authority = Authority::try_from(format!("{host}:{port}"))
                    .map_err(|_| ProxyError::BackendUnavailable)?;
                parts.uri = upstream_uri(scheme, authority, path_and_query)?;
                self.send(protocol, None, Request::from_parts(parts, body), &clock, trace).await?
            }
            Target::Endpoints(set) => {
                let endpoints = set.load();
                let now = self.inner.upstream.now_ms();
                let first = upstream::pick(&endpoints, now, None).ok_or(ProxyError::NoEndpoints)?;
                // A refused connection is retried once on another endpoint when the request has
                // no body to replay.
                let retry = (body_is_empty && endpoints.len() > 1)
                    .then(|| (parts.method.clone(), parts.headers.clone(), path_and_query.clone()));
                parts.uri = upstream_uri(scheme.clone(), first.authority.clone(), path_and_query)?;
                let request = Request::from_parts(parts, body);
                match self.send(protocol, Some(&first), request, &clock, trace).await {
                    Err(ProxyError::ConnectFailed) if retry.is_some() => {
                        self.inner.metrics.retry();
                        let Some(second) = upstream::pick(&endpoints, now, Some(first.addr)) else {
                            return Err(ProxyError::ConnectFailed);
                        };
                        let (method, headers, path_and_query) = retry.expect("checked just above");
                        let mut request = Request::new(Either::Right(Empty::new()));
                        *request.method_mut() = method;
                        *request.headers_mut() = headers;
                        *request.version_mut() = version;
                        *request.uri_mut() = upstream_uri(scheme, second.authority.clone(), path_and_query)?;
                        self.send(protocol, Some(&second), request, &clock, trace).await?
                    }
                    other => other?,
                }
            }
        };
        self.respond(response, client_upgrade, hsts)
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
        trace: &mut Trace,
    ) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let _in_flight = endpoint.map(|e| InFlight::start(e));
        trace.upstream = endpoint.map(|e| e.addr);
        let upstream = self.inner.upstream.request(protocol, request);
        let config = &self.inner.config;
        let result = tokio::select! {
            result = upstream => Ok(result),
            () = clock.upstream_stalled(config.send_timeout, config.read_timeout) => Err(ProxyError::UpstreamTimeout),
        };
        trace.upstream_duration = Some(started.elapsed());
        let upstream = &self.inner.upstream;
        match result? {
            Ok(response) => {
                endpoint.inspect(|e| e.record_success());
                Ok(response)
            }
            Err(error) if caused_by(&error, |_: &ClientBodyError| true) => {
                let client = caused_by(&error, |e: &ClientBodyError| matches!(e, ClientBodyError::TimedOut));
                Err(if client {
                    ProxyError::ClientBodyTimeout
                } else {
                    ProxyError::BadRequest("request body")
                })
            }
            Err(error) if caused_by(&error, |_: &http_body_util::LengthLimitError| true) => {
                Err(ProxyError::BodyTooLarge)
            }
            Err(error) if error.is_connect() => {
                self.inner.metrics.connect_error();
                if let Some(e) = endpoint
                    && e.record_failure(upstream.now_ms(), upstream.eject_for_ms())
                {
                    tracing::warn!(endpoint = %e.addr, "endpoint refuses connections; skipping it for a while");
                }
                if caused_by(&error, |e: &std::io::Error| e.kind() == std::io::ErrorKind::TimedOut) {
                    return Err(ProxyError::UpstreamTimeout);
                }
                Err(ProxyError::ConnectFailed)
            }
            Err(error) => {
                tracing::debug!(%error, "upstream request failed");
                Err(ProxyError::UpstreamReset)
            }
        }
    }

    fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        hsts: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            // The backend may only switch protocols when the client asked to.
            let client_upgrade = client_upgrade.ok_or(ProxyError::UpstreamReset)?;
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = self.inner.config.read_timeout;
            tokio::spawn(async move {
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
        let read_timeout = self.inner.config.read_timeout;
        Ok(response.map(|body| ProxyBody::upstream(body, read_timeout)))
    }
}

/// Refusals that need no route: framing the guard found ambiguous, methods nginx refuses,
/// over-long targets, ambiguous credentials.
fn check_request(request: &Request<Incoming>, connection: &ConnectionInfo) -> Result<(), ProxyError> {
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
    Ok(())
}

/// nginx's `large_client_header_buffers 4 8k`: a longer request line gets 414.
const MAX_REQUEST_TARGET: usize = 8 * 1024;

/// Let's Encrypt HTTP-01 challenges stay on plain HTTP (`no-tls-redirect-locations`).
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge";

fn redirect(status: u16, location: &str) -> Result<Response<ProxyBody>, ProxyError> {
    let location = HeaderValue::from_str(location).map_err(|_| ProxyError::BadRequest("Host"))?;
    Ok(redirect_response(status, location))
}

fn redirect_response(status: u16, location: HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    response.headers_mut().insert(http::header::LOCATION, location);
    response
}

fn unauthorized(challenge: &HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(b"401 Authorization Required\n")));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge.clone());
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// `host[:port]` without the port (IPv6 literals keep their brackets).
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
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

/// The port the client addressed: the one in `Host`, else the scheme's default (the ports a
/// client uses in front of the usual Service in front of ostium).
fn forwarded_port(host: Option<&str>, is_tls: bool) -> HeaderValue {
    let explicit = host.and_then(|h| {
        let after_brackets = h.rsplit(']').next().unwrap_or(h);
        let port = after_brackets.rsplit_once(':')?.1;
        (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
    });
    match explicit {
        Some(port) => HeaderValue::from_str(port).unwrap_or(HeaderValue::from_static("80")),
        None if is_tls => HeaderValue::from_static("443"),
        None => HeaderValue::from_static("80"),
    }
}

fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
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

/// A path for the request line, with the query appended unchanged.
fn with_query(path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    PathAndQuery::try_from(path_and_query).map_err(|_| ProxyError::BadRequest("path"))
}

/// Appends `text` to `out`, percent-encoding every byte outside `keep` (and outside letters and
/// digits).
fn push_encoded(out: &mut String, text: &str, keep: &[u8]) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// What a path segment may hold unencoded (RFC 3986 `pchar`), and `/`.
const PATH_SAFE: &[u8] = b"-._~!$'()*+,;=:@/";
/// What a capture may put into the query unencoded: no `&`, `=`, `+` or `#`, which would change
/// the arguments.
const QUERY_SAFE: &[u8] = b"-._~!$'()*,;:@/?";

/// The path and query of a rewritten request, as nginx's `rewrite … break` leaves them. The
/// target's `${n}` references are filled with the captures of the route's pattern on the
/// normalised path, percent-encoded, so a `%3F` or `%23` the client sent stays part of the path
/// and never starts a query or fragment. The request's query is appended, after the target's own
/// arguments if it has any, and dropped when the target ends with `?`.
fn rewrite_path(rewrite: &Rewrite, path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let captures = rewrite.pattern.regex().captures(path);
    let expand = |template: &str, safe: &[u8], out: &mut String| {
        let mut rest = template;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let Some(end) = rest[at..].find('}') else { break };
            let group = rest[at + 2..at + end].parse::<usize>().ok();
            let text = captures.as_ref().zip(group).and_then(|(c, g)| c.get(g)).map_or("", |m| m.as_str());
            push_encoded(out, text, safe);
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
    };
    let (path_template, arguments) = match rewrite.target.split_once('?') {
        Some((path, arguments)) => (path, Some(arguments)),
        None => (&*rewrite.target, None),
    };
    let mut out = String::with_capacity(rewrite.target.len() + path.len() + query.map_or(0, str::len) + 2);
    expand(path_template, PATH_SAFE, &mut out);
    match (arguments, query) {
        (Some(""), _) | (None, None) => {}
        (None, Some(query)) => {
            out.push('?');
            out.push_str(query);
        }
        (Some(arguments), query) => {
            out.push('?');
            expand(arguments, QUERY_SAFE, &mut out);
            if let Some(query) = query {
                out.push('&');
                out.push_str(query);
            }
        }
    }
    PathAndQuery::try_from(out).map_err(|_| ProxyError::BadRequest("path"))
}

/// Whether an error's source chain holds an `E` for which `test` holds.
fn caused_by<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
    test: impl Fn(&E) -> bool,
) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<E>().is_some_and(&test) {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(pattern: &str, target: &str) -> Rewrite {
        Rewrite {
            pattern: ostium_model::PathRegex::new(pattern).unwrap(),
            target: target.into(),
            forwarded_prefix: None,
        }
    }

    #[test]
    fn rewrites_keep_the_query_as_nginx_does() {
        let r = |target| rewrite("/old", target);
        assert_eq!(rewrite_path(&r("/new"), "/old", Some("a=1")).unwrap().as_str(), "/new?a=1");
        assert_eq!(rewrite_path(&r("/new?x=2"), "/old", Some("a=1")).unwrap().as_str(), "/new?x=2&a=1");
        assert_eq!(rewrite_path(&r("/new?"), "/old", Some("a=1")).unwrap().as_str(), "/new");
        assert_eq!(rewrite_path(&r("/new"), "/old", None).unwrap().as_str(), "/new");
    }

    #[test]
    fn rewrite_captures_are_encoded_so_they_cannot_start_a_query_or_fragment() {
        let r = rewrite("/api/(.*)", "/v2/${1}?fixed=1");
        // `/api/x%3Fadmin=1%23` arrives decoded as `/api/x?admin=1#`.
        let pq = rewrite_path(&r, "/api/x?admin=1#", Some("q=2")).unwrap();
        assert_eq!(pq.as_str(), "/v2/x%3Fadmin=1%23?fixed=1&q=2");
        let r = rewrite("/api/(.*)", "/v2?name=${1}");
        let pq = rewrite_path(&r, "/api/a&admin=true", None).unwrap();
        assert_eq!(pq.as_str(), "/v2?name=a%26admin%3Dtrue");
        let r = rewrite("/(.*)", "/${1}");
        assert_eq!(rewrite_path(&r, "/café b", None).unwrap().as_str(), "/caf%C3%A9%20b");
    }

    #[test]
    fn forwarded_port_comes_from_host_or_scheme() {
        assert_eq!(forwarded_port(Some("a.com:8080"), false), "8080");
        assert_eq!(forwarded_port(Some("a.com"), false), "80");
        assert_eq!(forwarded_port(Some("a.com"), true), "443");
        assert_eq!(forwarded_port(Some("[::1]:9443"), true), "9443");
        assert_eq!(forwarded_port(Some("[::1]"), true), "443");
        assert_eq!(forwarded_port(None, false), "80");
    }
}
