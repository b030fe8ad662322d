//! Header rewriting, as ingress-nginx does it by default.
//!
//! Sent upstream: `X-Forwarded-For` and `X-Real-IP` set to the client address (the peer unless a
//! trusted proxy names another, see `client`; client-sent values are replaced, and appended to
//! only from a trusted proxy with `compute-full-forwarded-for`), `X-Forwarded-Host` (the `Host`
//! as sent), `X-Forwarded-Port`, `X-Forwarded-Proto`/`X-Forwarded-Scheme`/`X-Scheme` (a trusted
//! proxy's with `use-forwarded-headers`), `X-Request-ID` (the
//! client's, else generated), `X-Original-Forwarded-For` (what the client sent as
//! `X-Forwarded-For`, under a name that says so), and no `Proxy` header (httpoxy).
//!
//! Order matters: hop-by-hop headers (and every header the client lists in `Connection`) are
//! removed first and our headers are set last, so `Connection: X-Forwarded-For` cannot strip
//! them. Headers with `_` in their name are dropped, as nginx does by default
//! (`underscores_in_headers off`), so `X_Forwarded_For` never reaches a backend that folds `_`
//! into `-`. `Upgrade` survives only for the protocols the route allows (WebSocket by default):
//! a backend that would accept `Upgrade: h2c` must not receive a raw, unrouted tunnel.
//!
//! Sent to the client: no hop-by-hop headers, and neither the endpoint's `Server` nor its
//! `Date` (nginx's `proxy_hide_header` defaults; hyper writes our own `Date`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ostium_model::UpgradeProtocol;

/// What the forwarded headers say about the client connection.
#[derive(Debug)]
pub(crate) struct Forwarded<'a> {
    /// The client address (`X-Real-IP`).
    pub(crate) client_ip: &'a HeaderValue,
    /// `X-Forwarded-For`: the client address, or with `compute-full-forwarded-for` the list a
    /// trusted proxy sent with the proxy appended.
    pub(crate) forwarded_for: &'a HeaderValue,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) port: HeaderValue,
    /// `X-Forwarded-Proto`, `X-Forwarded-Scheme` and `X-Scheme`.
    pub(crate) scheme: HeaderValue,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Client-sent headers that would claim something about the client or the proxy (the
/// `ssl-client-*` ones are set by the proxy on hosts with client certificate rules only; a
/// backend behind another host must not read a client's claim there).
const CLIENT_MAY_NOT_SET: [HeaderName; 14] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-scheme"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-forwarded-for"),
    HeaderName::from_static("proxy"),
    HeaderName::from_static("ssl-client-verify"),
    HeaderName::from_static("ssl-client-subject-dn"),
    HeaderName::from_static("ssl-client-issuer-dn"),
    HeaderName::from_static("ssl-client-cert"),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Rewrites request headers for the upstream. `upgrade` is the `Upgrade` value to keep for a
/// protocol upgrade (WebSocket), which is hop-by-hop but must reach the backend.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    forwarded: Forwarded<'_>,
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    remove_matching(headers, |name| name.contains('_'));
    let original_forwarded_for = headers.get(X_FORWARDED_FOR).cloned();
    for name in CLIENT_MAY_NOT_SET {
        headers.remove(name);
    }
    // Any other X-Forwarded-* a client sends (X-Forwarded-Prefix, -Server, -Ssl …) is not ours to
    // pass on either.
    remove_matching(headers, |name| name.starts_with("x-forwarded-"));
    let request_id = match headers.get(X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => None,
        _ => Some(generate_request_id()),
    };

    headers.insert(X_FORWARDED_FOR, forwarded.forwarded_for.clone());
    headers.insert(HeaderName::from_static("x-real-ip"), forwarded.client_ip.clone());
    if let Some(host) = forwarded.host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(HeaderName::from_static("x-forwarded-port"), forwarded.port);
    let scheme = forwarded.scheme;
    headers.insert(HeaderName::from_static("x-forwarded-proto"), scheme.clone());
    headers.insert(HeaderName::from_static("x-forwarded-scheme"), scheme.clone());
    headers.insert(HeaderName::from_static("x-scheme"), scheme);
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID, id);
    }
    if let Some(original) = original_forwarded_for {
        headers.insert(HeaderName::from_static("x-original-forwarded-for"), original);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Prepares the client's headers for an external auth subrequest: hop-by-hop headers and
/// whatever a client may not claim removed, `X-Forwarded-For` and `X-Real-IP` set to the client
/// (as for the backend), and the request's id.
pub(crate) fn for_auth_service(
    headers: &mut HeaderMap,
    (client_ip, forwarded_for): (&HeaderValue, &HeaderValue),
    request_id: HeaderValue,
) {
    remove_hop_by_hop(headers);
    remove_matching(headers, |name| name.contains('_'));
    for name in CLIENT_MAY_NOT_SET {
        headers.remove(name);
    }
    remove_matching(headers, |name| name.starts_with("x-forwarded-"));
    headers.insert(X_REQUEST_ID, request_id);
    headers.insert(X_FORWARDED_FOR, forwarded_for.clone());
    headers.insert(HeaderName::from_static("x-real-ip"), client_ip.clone());
}

/// The request's id: the client's `X-Request-ID` when valid, else a fresh one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => id.clone(),
        _ => generate_request_id(),
    }
}

/// Removes hop-by-hop headers from a response (a `101` keeps its `Upgrade` and `Connection`),
/// and the endpoint's `Server` and `Date`.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, is_upgrade: bool) {
    headers.remove(header::SERVER);
    headers.remove(header::DATE);
    if is_upgrade {
        headers.remove("keep-alive");
        headers.remove(header::TRANSFER_ENCODING);
        return;
    }
    remove_hop_by_hop(headers);
}

/// The `Upgrade` value to pass on when the request asks for one (`Connection: upgrade` and
/// `Upgrade`) that `allowed` holds; other tokens are dropped.
pub(crate) fn requested_upgrade(headers: &HeaderMap, allowed: &[UpgradeProtocol]) -> Option<HeaderValue> {
    if !connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let protocol = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| UpgradeProtocol::from_token(token.trim()))
        .find(|protocol| allowed.contains(protocol))?;
    Some(HeaderValue::from_static(match protocol {
        UpgradeProtocol::WebSocket => "websocket",
    }))
}

/// HTTP/2 clients may split `Cookie` into one field per cookie; an HTTP/1 upstream needs them
/// joined with `; ` into one (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    // Joining valid header values with `; ` gives a valid header value.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> =
            connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every header whose name matches, allocating only when one does.
fn remove_matching(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) {
    if headers.keys().any(|name| matches(name.as_str())) {
        let names: Vec<HeaderName> = headers.keys().filter(|name| matches(name.as_str())).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A client's request id is passed on when it is short and printable.
fn is_valid_request_id(id: &HeaderValue) -> bool {
    !id.is_empty() && id.len() <= 200 && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// 32 hex digits, as nginx's `$request_id`.
fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = HEX[(random >> (i * 4) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(ip: &HeaderValue) -> Forwarded<'_> {
        Forwarded {
            client_ip: ip,
            forwarded_for: ip,
            host: Some(HeaderValue::from_static("app.example.com")),
            port: HeaderValue::from_static("80"),
            scheme: HeaderValue::from_static("http"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn client_forwarded_headers_are_replaced_not_trusted() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example.com"),
            ("proxy", "http://evil:3128"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-ssl", "on"),
        ]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-scheme"], "http");
        assert_eq!(h["x-scheme"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-port"], "80");
        assert_eq!(h["x-original-forwarded-for"], "1.2.3.4");
        assert!(h.get("forwarded").is_none() && h.get("proxy").is_none());
        assert!(h.get("x-forwarded-prefix").is_none() && h.get("x-forwarded-ssl").is_none());
        assert_eq!(h["x-request-id"].len(), 32);
    }

    #[test]
    fn connection_cannot_strip_our_forwarded_headers() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h =
            headers(&[("connection", "close, X-Forwarded-For, X-Real-IP, x-request-id"), ("x-custom", "1")]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert!(h.get("x-request-id").is_some());
        assert!(h.get("connection").is_none());
        assert_eq!(h["x-custom"], "1");
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
        ]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none() && h.get("te").is_none());
    }

    #[test]
    fn underscore_spellings_never_reach_the_backend() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[
            ("x_forwarded_for", "1.2.3.4"),
            ("X_Real_IP", "1.2.3.4"),
            ("x_forwarded_proto", "https"),
        ]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn a_valid_client_request_id_is_kept_and_a_bad_one_replaced() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[("x-request-id", "abc-123")]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert_eq!(h["x-request-id"], "abc-123");
        let mut h = headers(&[("x-request-id", "has space")]);
        rewrite_request(&mut h, forwarded(&ip), None);
        assert_ne!(h["x-request-id"], "has space");
    }

    #[test]
    fn only_allowed_upgrades_survive() {
        let allowed = [UpgradeProtocol::WebSocket];
        let h = headers(&[("connection", "Upgrade"), ("upgrade", "h2c")]);
        assert_eq!(requested_upgrade(&h, &allowed), None);
        let h = headers(&[("connection", "Upgrade"), ("upgrade", "h2c, WebSocket")]);
        assert_eq!(requested_upgrade(&h, &allowed).unwrap(), "websocket");
        let h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested_upgrade(&h, &[]), None);
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
    }

    #[test]
    fn endpoint_server_and_date_are_not_passed_on() {
        let mut h =
            headers(&[("server", "Apache/2.4.1"), ("date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("x-app", "1")]);
        rewrite_response(&mut h, false);
        assert!(h.get("server").is_none() && h.get("date").is_none());
        assert_eq!(h["x-app"], "1");
    }

    #[test]
    fn upgrade_survives_for_websockets() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let upgrade = requested_upgrade(&h, &[UpgradeProtocol::WebSocket]);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        rewrite_request(&mut h, forwarded(&ip), upgrade);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
