//! The fourth phase: the request as the backend gets it. Headers as ingress-nginx sends them
//! (see `headers`; the ConfigMap's `proxy-set-headers` last), the host routed on, credentials
//! the proxy consumed removed, the path the router judged (reserved escapes as sent) or its
//! `rewrite-target`, the route's `Connection` value and HTTP/1 version, and the body under the
//! route's size limit and the client's clock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Version};
use http_body_util::Limited;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use ostium_model::{ClientAuth, HeaderSettings, Policy, Rewrite};

use crate::body::{BodyClock, RequestBody};
use crate::client::Client;
use crate::headers::{self, Forwarded};
use crate::policy::Original;
use crate::request::RequestHead;
use crate::route::Routed;
use crate::upstream_body::OutgoingBody;
use crate::{ConnectionInfo, ProxyError, client_cert};

/// A request ready to go upstream, but for the endpoint's scheme and authority.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) parts: Parts,
    pub(crate) path_and_query: PathAndQuery,
    pub(crate) body: OutgoingBody,
    /// The client's side of a protocol upgrade it asked for.
    pub(crate) client_upgrade: Option<OnUpgrade>,
}

/// The upstream request for `request`, spoken in `version` (the backend protocol's; an HTTP/1.1
/// one becomes the route's `proxy-http-version`).
pub(crate) fn upstream_request(
    mut request: Request<Incoming>,
    head: &RequestHead,
    routed: &Routed<'_>,
    (connection, client): (&ConnectionInfo, &Client),
    version: Version,
    body: (Duration, Option<Arc<AtomicU64>>),
    settings: &HeaderSettings,
) -> Result<Outgoing, ProxyError> {
    let shaping = &routed.policy.shaping;
    let version = if version == Version::HTTP_11 { shaping.http_version } else { version };
    let limit = body_limit(&request, &routed.policy, version)?;
    let (path_and_query, forwarded_prefix) = upstream_target(head, routed)?;
    let upgrade = match request.version() {
        Version::HTTP_11 => headers::requested_upgrade(request.headers(), &routed.policy.upgrades),
        _ => None,
    };
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let original =
        Original { method: request.method(), headers: request.headers(), head, connection, settings, client };
    let filled = headers::fill_templates(settings, &original);
    // `connection-proxy-header` replaces the default, but not the `upgrade` a tunnel needs.
    let fixed_connection =
        shaping.connection.clone().filter(|_| upgrade.is_none() && version != Version::HTTP_2);
    let (mut parts, incoming) = request.into_parts();
    headers::rewrite_request(&mut parts.headers, forwarded(head, connection, client), upgrade, settings);
    if let Some(value) = fixed_connection {
        parts.headers.insert(CONNECTION, value);
    }
    if let Some(prefix) = forwarded_prefix {
        parts.headers.insert("x-forwarded-prefix", prefix);
    }
    if let Some(client_auth) = routed.client_auth.as_deref() {
        let cert = match client_auth {
            ClientAuth::Verify(verify) => {
                client_cert::for_request(verify, head.host(), connection).ok().flatten()
            }
            ClientAuth::Refused => None,
        };
        client_cert::upstream_headers(&mut parts.headers, client_auth, cert, connection.is_tls);
    }
    if routed.policy.auth.is_some() {
        // The credentials were for us (ingress-nginx: `proxy_set_header Authorization "";`).
        parts.headers.remove(AUTHORIZATION);
    }
    // The host routed on, whatever the client put in `Host` (RFC 9112 §3.2.2), unless the
    // route names another (`upstream-vhost`; `X-Forwarded-Host` still says the routed one).
    if let Some(host) = routed.policy.upstream_host.clone().or_else(|| head.host.clone()) {
        parts.headers.insert(HOST, host);
    }
    if head.version == Version::HTTP_2 && version != Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
    headers::set_configured(&mut parts.headers, settings, head.target(), filled);
    parts.version = version;

    // Only a request with a body needs a clock of its own, shared with the body.
    let body = match incoming.is_end_stream() {
        true => OutgoingBody::None,
        false => {
            let clock = Arc::new(BodyClock::new(true));
            let body = RequestBody::new(incoming, body.1, clock.clone(), body.0);
            OutgoingBody::Streamed { body: Some(Limited::new(body, limit)), clock, returned: None }
        }
    };
    Ok(Outgoing { parts, path_and_query, body, client_upgrade })
}

/// The route's body limit; a declared length over it is refused before anything is sent. An
/// HTTP/1.0 endpoint cannot take a streamed body of unknown length (it has no chunked coding);
/// a buffered one is sent with its length.
fn body_limit(request: &Request<Incoming>, policy: &Policy, version: Version) -> Result<usize, ProxyError> {
    let declared = || request.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok();
    let streamed = !policy.request_buffering;
    if version == Version::HTTP_10 && streamed && !request.body().is_end_stream() && declared().is_none() {
        return Err(ProxyError::LengthRequired);
    }
    match policy.max_body_size {
        Some(limit) if declared().is_some_and(|length| length > limit) => Err(ProxyError::BodyTooLarge),
        Some(limit) => Ok(usize::try_from(limit).unwrap_or(usize::MAX)),
        None => Ok(usize::MAX),
    }
}

/// The path and query sent upstream (the rewrite of the routed path, or the forwarded path), and
/// a rewrite's `X-Forwarded-Prefix`.
fn upstream_target(
    head: &RequestHead,
    routed: &Routed<'_>,
) -> Result<(PathAndQuery, Option<HeaderValue>), ProxyError> {
    let query = head.uri.query();
    if let Some(rewrite) = &routed.policy.rewrite {
        let (rewritten, forwarded_prefix) = rewrite_path(rewrite, &routed.path, query)?;
        if routed.policy.shaping.rewrite_log {
            tracing::debug!(
                target: "ostium::rewrite",
                host = head.host().unwrap_or(""),
                route = rewrite.pattern.pattern(),
                from = %head.target(),
                to = %rewritten,
                "rewritten"
            );
        }
        return Ok((rewritten, forwarded_prefix));
    }
    let path = head.forwarded_path()?;
    if path == head.uri.path() {
        let as_sent = head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        return Ok((as_sent, None));
    }
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    let path_and_query =
        PathAndQuery::try_from(path_and_query).map_err(|_| ProxyError::BadRequest("path"))?;
    Ok((path_and_query, None))
}

/// What the `X-Forwarded-*` headers say of a request from `client`: what a trusted proxy in
/// front said of the client's scheme, port and host, else what the request says.
pub(crate) fn forwarded<'c>(
    head: &RequestHead,
    connection: &ConnectionInfo,
    client: &'c Client,
) -> Forwarded<'c> {
    Forwarded {
        client_ip: &client.ip,
        forwarded_for: client.forwarded_for(),
        host: client.host.clone().or_else(|| head.host.clone()),
        port: client.port.clone().unwrap_or_else(|| forwarded_port(head.host(), connection.is_tls)),
        scheme: client.scheme(connection.is_tls),
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
/// arguments if it has any, and dropped when the target ends with `?`. The `X-Forwarded-Prefix`
/// is filled with the same captures (nginx's `proxy_set_header` after the `rewrite`).
fn rewrite_path(
    rewrite: &Rewrite,
    path: &str,
    query: Option<&str>,
) -> Result<(PathAndQuery, Option<HeaderValue>), ProxyError> {
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
    let forwarded_prefix = rewrite.forwarded_prefix.as_deref().map(|template| {
        let mut prefix = String::with_capacity(template.len());
        expand(template, PATH_SAFE, &mut prefix);
        HeaderValue::try_from(prefix)
    });
    let forwarded_prefix = forwarded_prefix.transpose().map_err(|_| ProxyError::BadRequest("path"))?;
    let path_and_query = PathAndQuery::try_from(out).map_err(|_| ProxyError::BadRequest("path"))?;
    Ok((path_and_query, forwarded_prefix))
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
        assert_eq!(rewrite_path(&r("/new"), "/old", Some("a=1")).unwrap().0.as_str(), "/new?a=1");
        assert_eq!(rewrite_path(&r("/new?x=2"), "/old", Some("a=1")).unwrap().0.as_str(), "/new?x=2&a=1");
        assert_eq!(rewrite_path(&r("/new?"), "/old", Some("a=1")).unwrap().0.as_str(), "/new");
        assert_eq!(rewrite_path(&r("/new"), "/old", None).unwrap().0.as_str(), "/new");
    }

    #[test]
    fn rewrite_captures_are_encoded_so_they_cannot_start_a_query_or_fragment() {
        let r = rewrite("/api/(.*)", "/v2/${1}?fixed=1");
        // `/api/x%3Fadmin=1%23` arrives decoded as `/api/x?admin=1#`.
        let (pq, _) = rewrite_path(&r, "/api/x?admin=1#", Some("q=2")).unwrap();
        assert_eq!(pq.as_str(), "/v2/x%3Fadmin=1%23?fixed=1&q=2");
        let r = rewrite("/api/(.*)", "/v2?name=${1}");
        let (pq, _) = rewrite_path(&r, "/api/a&admin=true", None).unwrap();
        assert_eq!(pq.as_str(), "/v2?name=a%26admin%3Dtrue");
        let r = rewrite("/(.*)", "/${1}");
        assert_eq!(rewrite_path(&r, "/café b", None).unwrap().0.as_str(), "/caf%C3%A9%20b");
    }

    #[test]
    fn the_forwarded_prefix_takes_the_same_captures() {
        let r =
            Rewrite { forwarded_prefix: Some("/${1}/api".into()), ..rewrite("/(\\w+)/api/(.*)", "/${2}") };
        let (path, prefix) = rewrite_path(&r, "/shop/api/items", None).unwrap();
        assert_eq!((path.as_str(), prefix.unwrap().to_str().unwrap()), ("/items", "/shop/api"));
        let r = Rewrite { forwarded_prefix: Some("/fixed".into()), ..rewrite("/old", "/new") };
        assert_eq!(rewrite_path(&r, "/old", None).unwrap().1.unwrap(), "/fixed");
        assert_eq!(rewrite_path(&rewrite("/old", "/new"), "/old", None).unwrap().1, None);
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
