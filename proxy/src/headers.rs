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
//! them. Headers nginx ignores are dropped: by default (`ignore-invalid-headers` on,
//! `enable-underscores-in-headers` off) every name with anything but letters, digits and `-`.
//! Whatever those settings say, an underscore spelling of a header the proxy sets
//! (`X_Forwarded_For`, `X_Real_IP` …) never reaches a backend, which might fold `_` into `-`.
//! `Upgrade` survives only for the protocols the route allows (WebSocket by default):
//! a backend that would accept `Upgrade: h2c` must not receive a raw, unrouted tunnel. Then the
//! ConfigMap's `proxy-add-original-uri-header` and `proxy-set-headers` (see [`set_configured`]).
//!
//! Sent to the client: no hop-by-hop headers, and neither the endpoint's `Server` nor its
//! `Date` (nginx's `proxy_hide_header` defaults; hyper writes our own `Date`); then the
//! ConfigMap's `hide-headers`, `server-tokens` and `add-headers` (see [`set_on_answer`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ostium_model::{HeaderSettings, SetValue, UpgradeProtocol};

use crate::policy::{Original, render};

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
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// `server-tokens`: the proxy and its version.
const SERVER_TOKENS: HeaderValue = HeaderValue::from_static(concat!("ostium/", env!("CARGO_PKG_VERSION")));

/// Rewrites request headers for the upstream. `upgrade` is the `Upgrade` value to keep for a
/// protocol upgrade (WebSocket), which is hop-by-hop but must reach the backend.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    forwarded: Forwarded<'_>,
    upgrade: Option<HeaderValue>,
    settings: &HeaderSettings,
) {
    let original_forwarded_for = headers.get(X_FORWARDED_FOR).cloned();
    strip(headers, |name| is_client_claim(name) || is_ignored(name, settings));
    let request_id = match headers.get(X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => None,
        _ => Some(settings.generate_request_id.then(generate_request_id)),
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
    match request_id {
        None => {}
        Some(Some(id)) => {
            headers.insert(X_REQUEST_ID, id);
        }
        Some(None) => {
            headers.remove(X_REQUEST_ID);
        }
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
/// (as for the backend), and the request's id (none: no header).
pub(crate) fn for_auth_service(
    headers: &mut HeaderMap,
    (client_ip, forwarded_for): (&HeaderValue, &HeaderValue),
    request_id: Option<HeaderValue>,
    settings: &HeaderSettings,
) {
    strip(headers, |name| is_client_claim(name) || is_ignored(name, settings));
    match request_id {
        Some(id) => headers.insert(X_REQUEST_ID, id),
        None => headers.remove(X_REQUEST_ID),
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for.clone());
    headers.insert(HeaderName::from_static("x-real-ip"), client_ip.clone());
}

/// The request's id: the client's `X-Request-ID` when valid, else a fresh one
/// (`generate-request-id`), else none.
pub(crate) fn request_id(headers: &HeaderMap, settings: &HeaderSettings) -> Option<HeaderValue> {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => Some(id.clone()),
        _ => settings.generate_request_id.then(generate_request_id),
    }
}

/// The ConfigMap's headers toward the backend, after the proxy's own as nginx.tmpl orders its
/// `proxy_set_header` lines: `X-Original-URI` (the request target as sent) when
/// `proxy-add-original-uri-header` asks, then each `proxy-set-headers` entry, which replaces
/// what the client or the proxy put under its name (a value that is or comes out empty removes
/// it). `filled` holds the values of the entries with variables, in order (see
/// [`fill_templates`]).
pub(crate) fn set_configured(
    headers: &mut HeaderMap,
    settings: &HeaderSettings,
    request_uri: &str,
    filled: Vec<HeaderValue>,
) {
    if settings.original_uri_header
        && let Ok(uri) = HeaderValue::from_str(request_uri)
    {
        headers.insert(X_ORIGINAL_URI, uri);
    }
    let mut filled = filled.into_iter();
    for (name, value) in &settings.proxy_set_headers {
        match value {
            SetValue::Text(value) => set_or_remove(headers, name, value),
            SetValue::Template(_) => {
                set_or_remove(headers, name, &filled.next().unwrap_or(HeaderValue::from_static("")))
            }
        }
    }
}

/// The values of the `proxy-set-headers` entries with variables, filled from the request as the
/// client sent it (nginx's variables read the client's request); none without such entries.
/// A value that comes out as no valid header value is empty.
pub(crate) fn fill_templates(settings: &HeaderSettings, original: &Original<'_>) -> Vec<HeaderValue> {
    let templates = settings.proxy_set_headers.iter().filter_map(|(_, value)| match value {
        SetValue::Template(template) => Some(template),
        SetValue::Text(_) => None,
    });
    templates
        .map(|template| {
            let mut text = String::new();
            render(template, original, &mut text);
            HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
        })
        .collect()
}

/// Headers of every answer, endpoint's or the proxy's own: `Server` under `server-tokens`, then
/// `add-headers` (nginx's `more_set_headers`, which replaces; an empty value removes). Without
/// `server-tokens` an `add-headers` `Server` is dropped too (ingress-nginx clears it after).
pub(crate) fn set_on_answer(headers: &mut HeaderMap, settings: &HeaderSettings) {
    if settings.server_tokens {
        headers.insert(header::SERVER, SERVER_TOKENS);
    }
    for (name, value) in &settings.add_headers {
        if *name != header::SERVER || settings.server_tokens {
            set_or_remove(headers, name, value);
        }
    }
}

/// `hide-headers`: the endpoint's headers of these names are not passed on.
pub(crate) fn hide(headers: &mut HeaderMap, settings: &HeaderSettings) {
    for name in &settings.hide_headers {
        headers.remove(name);
    }
}

fn set_or_remove(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match value.is_empty() {
        true => headers.remove(name),
        false => headers.insert(name.clone(), value.clone()),
    };
}

/// Removes hop-by-hop headers from a response (a `101` keeps its `Upgrade` and `Connection`),
/// and the endpoint's `Server` and `Date`.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, is_upgrade: bool) {
    if is_upgrade {
        headers.remove(header::SERVER);
        headers.remove(header::DATE);
        headers.remove("keep-alive");
        headers.remove(header::TRANSFER_ENCODING);
        return;
    }
    strip(headers, |name| name == header::SERVER || name == header::DATE);
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

/// Removes the hop-by-hop headers (those of [`HOP_BY_HOP`] and those `Connection` lists) and
/// those `doomed` names, in one pass over the names present: no lookup for each name that might
/// be there, and an allocation only when one is removed.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let has_connection = headers.contains_key(header::CONNECTION);
    let listed = |name: &HeaderName| {
        has_connection && connection_tokens(headers).any(|token| token.eq_ignore_ascii_case(name.as_str()))
    };
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || doomed(name) || listed(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// A header the client may not send the backend: one the proxy sets, or any other
/// X-Forwarded-* (X-Forwarded-Prefix, -Server, -Ssl …).
fn is_client_claim(name: &HeaderName) -> bool {
    CLIENT_MAY_NOT_SET.contains(name) || name.as_str().starts_with("x-forwarded-")
}

/// A client header nginx ignores, or an underscore spelling of a header the proxy sets
/// (whatever the settings allow).
fn is_ignored(name: &HeaderName, settings: &HeaderSettings) -> bool {
    settings.ignores_request_header(name.as_str()) || spells_a_proxy_header(name.as_str())
}

/// Whether a name with `_` reads, with `-` for `_`, as a header the proxy sets or removes.
fn spells_a_proxy_header(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let dashed = name.replace('_', "-");
    dashed.starts_with("x-forwarded-")
        || dashed == X_REQUEST_ID.as_str()
        || dashed == X_ORIGINAL_URI.as_str()
        || CLIENT_MAY_NOT_SET.iter().any(|proxy| proxy.as_str() == dashed)
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
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
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
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
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
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
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
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
        assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn allowed_underscores_never_spell_a_header_of_the_proxy() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let settings = HeaderSettings { underscores_in_headers: true, ..HeaderSettings::default() };
        let mut h = headers(&[
            ("x_forwarded_host", "evil"),
            ("x_real_ip", "1.2.3.4"),
            ("x_request_id", "forged"),
            ("ssl_client_verify", "SUCCESS"),
            ("x_tenant", "acme"),
        ]);
        rewrite_request(&mut h, forwarded(&ip), None, &settings);
        let underscored: Vec<&str> = h.keys().map(HeaderName::as_str).filter(|k| k.contains('_')).collect();
        assert_eq!(underscored, ["x_tenant"]);
    }

    #[test]
    fn without_generation_a_request_id_is_only_passed_on() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let settings = HeaderSettings { generate_request_id: false, ..HeaderSettings::default() };
        let mut h = headers(&[("x-request-id", "has space")]);
        rewrite_request(&mut h, forwarded(&ip), None, &settings);
        assert!(h.get("x-request-id").is_none());
        let h = headers(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&h, &settings).unwrap(), "abc");
        assert_eq!(request_id(&HeaderMap::new(), &settings), None);
        assert_eq!(request_id(&HeaderMap::new(), &HeaderSettings::default()).unwrap().len(), 32);
    }

    #[test]
    fn a_valid_client_request_id_is_kept_and_a_bad_one_replaced() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut h = headers(&[("x-request-id", "abc-123")]);
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
        assert_eq!(h["x-request-id"], "abc-123");
        let mut h = headers(&[("x-request-id", "has space")]);
        rewrite_request(&mut h, forwarded(&ip), None, &HeaderSettings::default());
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
        rewrite_request(&mut h, forwarded(&ip), upgrade, &HeaderSettings::default());
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
