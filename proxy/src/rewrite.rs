//! The fourth phase: the request as the backend gets it. Headers as ingress-nginx sends them
//! (see `headers`), the host routed on, credentials the proxy consumed removed, the path the
//! router judged (reserved escapes as sent) or its `rewrite-target`, and the body under the
//! route's size limit and the client's clock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Version};
use http_body_util::Limited;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use ostium_model::Rewrite;

use crate::body::{BodyClock, RequestBody};
use crate::headers::{self, Forwarded};
use crate::request::RequestHead;
use crate::route::Routed;
use crate::upstream_body::OutgoingBody;
use crate::{ConnectionInfo, ProxyError};

/// A request ready to go upstream, but for the endpoint's scheme and authority.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) parts: Parts,
    pub(crate) path_and_query: PathAndQuery,
    pub(crate) body: OutgoingBody,
    /// The client's side of a protocol upgrade it asked for.
    pub(crate) client_upgrade: Option<OnUpgrade>,
}

/// The upstream request for `request`, spoken in `version`.
pub(crate) fn upstream_request(
    mut request: Request<Incoming>,
    head: &RequestHead,
    routed: &Routed<'_>,
    connection: &ConnectionInfo,
    version: Version,
    body: (Duration, Option<Arc<AtomicU64>>),
) -> Result<Outgoing, ProxyError> {
    let limit = body_limit(&request, routed.policy.max_body_size)?;
    let path_and_query = upstream_target(head, routed)?;
    let upgrade = match request.version() {
        Version::HTTP_11 => headers::requested_upgrade(request.headers(), &routed.policy.upgrades),
        _ => None,
    };
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, incoming) = request.into_parts();
    let forwarded = Forwarded {
        client_ip: &connection.client_ip,
        host: head.host.clone(),
        port: forwarded_port(head.host(), connection.is_tls),
        is_tls: connection.is_tls,
    };
    headers::rewrite_request(&mut parts.headers, forwarded, upgrade);
    if let Some(prefix) = routed.policy.rewrite.as_ref().and_then(|r| r.forwarded_prefix.clone()) {
        parts.headers.insert("x-forwarded-prefix", prefix);
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

/// The route's body limit; a declared length over it is refused before anything is sent.
fn body_limit(request: &Request<Incoming>, max_body_size: Option<u64>) -> Result<usize, ProxyError> {
    let declared = || request.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok();
    match max_body_size {
        Some(limit) if declared().is_some_and(|length| length > limit) => Err(ProxyError::BodyTooLarge),
        Some(limit) => Ok(usize::try_from(limit).unwrap_or(usize::MAX)),
        None => Ok(usize::MAX),
    }
}

/// The path and query sent upstream: the rewrite of the routed path, or the forwarded path.
fn upstream_target(head: &RequestHead, routed: &Routed<'_>) -> Result<PathAndQuery, ProxyError> {
    let query = head.uri.query();
    if let Some(rewrite) = &routed.policy.rewrite {
        return rewrite_path(rewrite, &routed.path, query);
    }
    let path = head.forwarded_path()?;
    if path == head.uri.path() {
        return Ok(head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    PathAndQuery::try_from(path_and_query).map_err(|_| ProxyError::BadRequest("path"))
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
