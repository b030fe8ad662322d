//! The request pipeline: check framing, route on the normalised path, rewrite headers, forward
//! to an endpoint (retrying a refused connection once on another), stream the answer back.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use ostium_model::{Endpoint, HttpsRedirect, NamespacedName, Protocol, Target, normalize_path};

use crate::auth::{self, Verdict};

use crate::body::{AccessEntry, CountedRequest, ProxyBody};
use crate::headers::{self, Forwarded};
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
}

impl Proxy {
    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let logged =
            self.inner.config.access_log.then(|| {
                (request.method().clone(), request.uri().clone(), request.headers().get(HOST).cloned())
            });
        let mut trace = Trace { bytes_in: logged.is_some().then(Arc::default), ..Trace::default() };
        let response = match self.forward(request, connection, &mut trace).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                error.into_response()
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
        };
        response.map(|body| body.logged(entry))
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        connection: &ConnectionInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        // Both Content-Length and Transfer-Encoding: no backend may read this request differently
        // from us (request smuggling), so it is refused; hyper closes the connection after.
        if connection.has_ambiguous_framing() {
            return Err(ProxyError::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        let host = request_host(&request)?;
        let host_str = match &host {
            Some(h) => Some(h.to_str().map_err(|_| ProxyError::BadRequest("Host is not ASCII"))?),
            None => None,
        };
        let path = normalize_path(request.uri().path()).map_err(|_| ProxyError::BadRequest("path"))?;

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

        // The backend gets the path the router judged, or the rewrite of it.
        let query = request.uri().query();
        let rewritten = match (&policy.rewrite, &path) {
            (Some(rewrite), _) => {
                let mut target = String::new();
                match rewrite.pattern.regex().captures(&path) {
                    Some(captures) => captures.expand(&rewrite.target, &mut target),
                    None => target.push_str(&rewrite.target),
                }
                Some(rewrite_path(&target, query)?)
            }
            (None, Cow::Owned(normal)) => Some(encode_path(normal, query)?),
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
            Version::HTTP_11 => headers::requested_upgrade(request.headers()),
            _ => None,
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let port = forwarded_port(host_str, connection.is_tls);
        let forwarded = Forwarded {
            client_ip: &connection.client_ip,
            host: host.clone(),
            port,
            is_tls: connection.is_tls,
        };

        let (mut parts, body) = request.into_parts();
        headers::rewrite_request(&mut parts.headers, forwarded, upgrade);
        if let Some(prefix) = forwarded_prefix {
            parts.headers.insert("x-forwarded-prefix", prefix);
        }
        if !parts.headers.contains_key(HOST)
            && let Some(host) = host
        {
            parts.headers.insert(HOST, host); // HTTP/2 clients send :authority instead
        }
        trace.request_id = parts.headers.get("x-request-id").cloned();
        parts.version = version;
        let path_and_query = match rewritten {
            Some(pq) => pq,
            None => parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let body_is_empty = body.is_end_stream();
        let body: UpstreamBody = if body_is_empty {
            Either::Right(Empty::new())
        } else {
            Either::Left(Limited::new(CountedRequest::new(body, trace.bytes_in.clone()), limit))
        };

        let response = match target {
            Target::Unavailable => return Err(ProxyError::BackendUnavailable),
            Target::ExternalName { host, port } => {
                let authority = Authority::try_from(format!("{host}:{port}"))
                    .map_err(|_| ProxyError::BackendUnavailable)?;
                parts.uri = upstream_uri(scheme, authority, path_and_query)?;
                self.send(protocol, None, Request::from_parts(parts, body), trace).await?
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
                match self.send(protocol, Some(&first), Request::from_parts(parts, body), trace).await {
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
                        self.send(protocol, Some(&second), request, trace).await?
                    }
                    other => other?,
                }
            }
        };
        self.respond(response, client_upgrade, hsts)
    }

    async fn send(
        &self,
        protocol: Protocol,
        endpoint: Option<&Arc<Endpoint>>,
        request: Request<UpstreamBody>,
        trace: &mut Trace,
    ) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let _in_flight = endpoint.map(|e| InFlight::start(e));
        trace.upstream = endpoint.map(|e| e.addr);
        let upstream = self.inner.upstream.request(protocol, request);
        let result = tokio::time::timeout(self.inner.config.upstream_timeout, upstream).await;
        trace.upstream_duration = Some(started.elapsed());
        let upstream = &self.inner.upstream;
        match result {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Ok(response)) => {
                endpoint.inspect(|e| e.record_success());
                Ok(response)
            }
            Ok(Err(error)) if error.is_connect() => {
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
            Ok(Err(error)) if caused_by(&error, |_: &http_body_util::LengthLimitError| true) => {
                Err(ProxyError::BodyTooLarge)
            }
            Ok(Err(error)) => {
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
            tokio::spawn(async move {
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(both) => both,
                    Err(error) => {
                        tracing::debug!(%error, "upgrade failed");
                        return;
                    }
                };
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(%error, "upgraded connection ended");
                }
            });
        }
        headers::rewrite_response(response.headers_mut(), switching);
        if hsts {
            // ingress-nginx's defaults: hsts, hsts-max-age 31536000, hsts-include-subdomains.
            response.headers_mut().insert(
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
        Ok(response.map(ProxyBody::upstream))
    }
}

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

/// The host a request is for: the URI's authority (HTTP/2 `:authority`, or HTTP/1 absolute
/// form, which overrides `Host`), else the one `Host` header. Two `Host` headers, or none on
/// HTTP/1.1, are malformed.
fn request_host(request: &Request<Incoming>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = request.uri().authority() {
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

/// Percent-encodes a normalised (decoded) path for the request line, keeping the characters a
/// path may hold as they are, and appends the query unchanged.
fn encode_path(path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 8);
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    PathAndQuery::try_from(out).map_err(|_| ProxyError::BadRequest("path"))
}

/// The path and query of a rewritten request, as nginx's `rewrite … break` leaves them: the
/// request's query is appended, after the target's own arguments if it has any, and dropped when
/// the target ends with `?`.
fn rewrite_path(target: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    match target.split_once('?') {
        None => encode_path(target, query),
        Some((path, "")) => encode_path(path, None),
        Some((path, arguments)) => match query {
            Some(query) => encode_path(path, Some(&format!("{arguments}&{query}"))),
            None => encode_path(path, Some(arguments)),
        },
    }
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

    #[test]
    fn normalised_paths_are_reencoded_for_the_request_line() {
        assert_eq!(encode_path("/a b/c%d", Some("x=1%20")).unwrap().as_str(), "/a%20b/c%25d?x=1%20");
        assert_eq!(encode_path("/café", None).unwrap().as_str(), "/caf%C3%A9");
        assert_eq!(encode_path("/a/?#", None).unwrap().as_str(), "/a/%3F%23");
    }

    #[test]
    fn rewrites_keep_the_query_as_nginx_does() {
        assert_eq!(rewrite_path("/new", Some("a=1")).unwrap().as_str(), "/new?a=1");
        assert_eq!(rewrite_path("/new?x=2", Some("a=1")).unwrap().as_str(), "/new?x=2&a=1");
        assert_eq!(rewrite_path("/new?", Some("a=1")).unwrap().as_str(), "/new");
        assert_eq!(rewrite_path("/new", None).unwrap().as_str(), "/new");
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
