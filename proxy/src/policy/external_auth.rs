//! External authentication (`auth-url`), as ingress-nginx's `auth_request` location in
//! nginx.tmpl: a subrequest without body (`proxy_pass_request_body off`, `Content-Length ""`),
//! carrying the client's headers and `X-Original-URL`, `X-Original-Method`, `X-Sent-From`,
//! `X-Real-IP`, `X-Forwarded-For`, `X-Auth-Request-Redirect`, the auth URL's host as `Host` and
//! the `auth-proxy-set-headers` entries.
//! A 2xx answer lets the request through (its `auth-response-headers` go upstream), 401 and 403
//! are answered to the client (401 as a redirect to `auth-signin` when set), and any other
//! status, or no answer in time, is a 500. The auth service's `Set-Cookie` goes to the client
//! (see [`AuthEffects`]).
//!
//! Client-sent `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are removed before the
//! subrequest, as they are before forwarding: an auth service that trusts them must not be told
//! what the client made up.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Limited};
use ostium_model::{
    AuthCache, CachedAnswer, ExternalAuth, HeaderSettings, Location, Protocol, Redirection, Template,
    TemplatePart, Variable,
};

use crate::client::Client;
use crate::outcome::Outcome;
use crate::pool::Destination;
use crate::request::RequestHead;
use crate::upstream_body::UpstreamBody;
use crate::{ConnectionInfo, Proxy, headers};

/// The most of an auth answer's body read (and dropped) so its connection can be reused.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// Statuses nginx's `add_header` (without `always`) adds headers to.
const ADD_HEADER_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// What the auth service's answer leaves for the rest of the request.
#[derive(Debug, Default)]
pub(crate) struct AuthEffects {
    /// `auth-response-headers` and their values, set on the upstream request (no value: absent
    /// from the answer, so removed from the request, as nginx's `proxy_set_header` with an empty
    /// value does).
    upstream_headers: Vec<(HeaderName, Vec<HeaderValue>)>,
    /// The answer's `Set-Cookie` values, for the client.
    cookies: Vec<HeaderValue>,
    /// The `X-Request-ID` the auth service was sent, which the backend gets too.
    request_id: Option<HeaderValue>,
    /// `auth-always-set-cookie`.
    always: bool,
}

/// The auth service's verdict.
#[derive(Debug)]
pub(super) enum Verdict {
    Allowed,
    /// 401, or the sign-in redirect.
    Unauthorized(Outcome),
    Forbidden,
    /// Any other status, or no answer: 500.
    Failed,
}

/// The request the policies judge (and the auth subrequest is made from).
pub(crate) struct Original<'a> {
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) head: &'a RequestHead,
    pub(crate) connection: &'a ConnectionInfo,
    /// The ConfigMap's header settings.
    pub(crate) settings: &'a HeaderSettings,
    /// The request's client (see `client`).
    pub(crate) client: &'a Client,
}

/// Asks the auth service (or the cache) about a request.
pub(super) async fn check(
    auth: &ExternalAuth,
    original: &Original<'_>,
    proxy: &Proxy,
    effects: &mut AuthEffects,
) -> Verdict {
    effects.always = auth.always_set_cookie;
    let cache_key = auth.cache.as_ref().map(|cache| {
        let mut key = host_without_port(original.head.host()).to_ascii_lowercase();
        key.push('\n');
        render(&cache.key, original, &mut key);
        (cache, key)
    });
    let cached = cache_key.as_ref().and_then(|(cache, key)| cache.get(key, Instant::now()));
    let (status, answer) = match cached {
        Some(cached) => (cached.status, cached.headers),
        None => {
            let request_id = headers::request_id(original.headers, original.settings);
            effects.request_id = request_id.clone();
            let Some((status, answer)) = ask(auth, original, proxy, request_id).await else {
                return Verdict::Failed;
            };
            if let Some((cache, key)) = cache_key {
                remember(cache, key, status, &answer, auth);
            }
            (status, answer)
        }
    };
    // nginx's `auth_request_set` runs whatever the status.
    effects.cookies = answer.get_all(header::SET_COOKIE).iter().cloned().collect();
    match status {
        200..=299 => {
            effects.upstream_headers = auth
                .response_headers
                .iter()
                .map(|name| (name.clone(), answer.get_all(name).iter().cloned().collect()))
                .collect();
            Verdict::Allowed
        }
        401 => match &auth.signin {
            Some(signin) => {
                let mut location = String::new();
                render(signin, original, &mut location);
                let location = Location::Built(location);
                Verdict::Unauthorized(Outcome::Redirect(Redirection { status: 302, location }))
            }
            None => {
                Verdict::Unauthorized(Outcome::Unauthorized(answer.get(header::WWW_AUTHENTICATE).cloned()))
            }
        },
        403 => Verdict::Forbidden,
        _ => {
            tracing::debug!(status, "the auth service answered neither 2xx, 401 nor 403");
            Verdict::Failed
        }
    }
}

impl AuthEffects {
    /// Sets `auth-response-headers` on the upstream request, replacing what the client sent, and
    /// the request id the auth service saw.
    pub(crate) fn apply_upstream(&mut self, headers: &mut HeaderMap) {
        if let Some(id) = self.request_id.take() {
            headers.insert("x-request-id", id);
        }
        for (name, values) in self.upstream_headers.drain(..) {
            headers.remove(&name);
            for value in values {
                headers.append(&name, value);
            }
        }
    }

    /// Adds the auth service's cookies to the client's answer: with the statuses nginx's
    /// `add_header` covers, or with every one under `auth-always-set-cookie`.
    pub(crate) fn apply_response(self, status: StatusCode, headers: &mut HeaderMap) {
        if !self.always && !ADD_HEADER_STATUSES.contains(&status.as_u16()) {
            return;
        }
        for cookie in self.cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
}

/// The subrequest: the auth service's status and headers, `None` when it cannot be asked or
/// does not answer in time (nginx's `proxy_connect_timeout` and `proxy_read_timeout` in the auth
/// location are the defaults, the proxy's own).
async fn ask(
    auth: &ExternalAuth,
    original: &Original<'_>,
    proxy: &Proxy,
    request_id: Option<HeaderValue>,
) -> Option<(u16, HeaderMap)> {
    let mut url = String::new();
    render(&auth.url, original, &mut url);
    let Some((uri, protocol, host)) = auth_uri(&url) else {
        tracing::debug!("the auth URL is not a valid http or https URL for this request");
        return None;
    };
    let authority = uri.authority()?.clone();
    let mut request = Request::new(UpstreamBody::Empty);
    // HTTP/1.1 sends the path alone.
    *request.uri_mut() = uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
    *request.version_mut() = Version::HTTP_11;
    *request.method_mut() = auth.method.clone().unwrap_or(Method::GET);
    *request.headers_mut() = subrequest_headers(auth, original, host, request_id);
    // The connector gives up after the connect timeout; the answer's head and body each get
    // the read timeout.
    let read_timeout = proxy.config().read_timeout;
    let target = Destination::Name(&authority);
    let response = proxy.upstream().request(protocol, None, None, target, request);
    let response = match tokio::time::timeout(read_timeout, response).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::debug!(%error, "the auth service could not be asked");
            return None;
        }
        Err(_) => {
            tracing::debug!("the auth service did not answer in time");
            return None;
        }
    };
    let (parts, body) = response.into_parts();
    // Read (and drop) a small body so the connection goes back to the pool.
    let _ = tokio::time::timeout(read_timeout, Limited::new(body, MAX_DRAINED_BODY).collect()).await;
    Some((parts.status.as_u16(), parts.headers))
}

/// The headers of the subrequest, as the auth location of nginx.tmpl sets them.
fn subrequest_headers(
    auth: &ExternalAuth,
    original: &Original<'_>,
    host: HeaderValue,
    request_id: Option<HeaderValue>,
) -> HeaderMap {
    let mut headers = original.headers.clone();
    let client = original.client;
    headers::for_auth_service(
        &mut headers,
        (&client.ip, client.forwarded_for()),
        request_id,
        original.settings,
    );
    // `proxy_pass_request_body off`: no body, and nothing that announces one.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    headers.insert(header::HOST, host);
    let scheme = if original.connection.is_tls { "https" } else { "http" };
    let target = original.head.target();
    let mut url = String::with_capacity(scheme.len() + 3 + target.len() + 64);
    let _ = write!(url, "{scheme}://{}{target}", original.head.host().unwrap_or(""));
    if let Ok(url) = HeaderValue::try_from(url) {
        headers.insert("x-original-url", url);
    }
    if let Ok(method) = HeaderValue::from_str(original.method.as_str()) {
        headers.insert("x-original-method", method);
    }
    headers.insert("x-sent-from", HeaderValue::from_static("nginx-ingress-controller"));
    let redirect = auth.request_redirect.clone().or_else(|| HeaderValue::from_str(target).ok());
    if let Some(redirect) = redirect {
        headers.insert("x-auth-request-redirect", redirect);
    }
    if auth.method.is_some() {
        // nginx.tmpl adds these two with `auth-method` only.
        if let Ok(target) = HeaderValue::from_str(target) {
            headers.insert("x-original-uri", target);
        }
        // `$pass_access_scheme`: a trusted proxy's `X-Forwarded-Proto`, else `$scheme`.
        headers.insert("x-scheme", client.scheme(original.connection.is_tls));
    }
    // `auth-proxy-set-headers` last, as nginx.tmpl's lines; an empty value sends no header.
    for (name, value) in auth.proxy_set_headers.iter() {
        let mut text = String::new();
        render(value, original, &mut text);
        match HeaderValue::try_from(text) {
            Ok(value) if !value.is_empty() => {
                headers.insert(name.clone(), value);
            }
            _ => {
                headers.remove(name);
            }
        }
    }
    headers
}

/// A rendered auth URL: its URI, the client protocol for its scheme, and its host (without
/// port) for `Host`. `None` for anything but an http or https URL with a host and no user.
fn auth_uri(url: &str) -> Option<(Uri, Protocol, HeaderValue)> {
    let uri: Uri = url.parse().ok()?;
    let protocol = match uri.scheme_str()? {
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let host = HeaderValue::from_str(authority.host()).ok()?;
    Some((uri, protocol, host))
}

/// Remembers a cacheable answer, as nginx's `proxy_cache` would: a status `auth-cache-duration`
/// names, and no `Set-Cookie` or `Cache-Control: no-cache`, `no-store` or `private`; a
/// `max-age` takes the place of the configured time.
fn remember(cache: &AuthCache, key: String, status: u16, answer: &HeaderMap, auth: &ExternalAuth) {
    let Some(mut valid_for) = cache.validity_of(status) else { return };
    if answer.contains_key(header::SET_COOKIE) {
        return;
    }
    for directive in answer
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        let directive = directive.to_ascii_lowercase();
        if ["no-cache", "no-store", "private"].contains(&directive.as_str()) {
            return;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=").and_then(|s| s.parse::<u64>().ok()) {
            valid_for = Duration::from_secs(seconds);
        }
    }
    if valid_for.is_zero() {
        return;
    }
    let mut kept = HeaderMap::new();
    for name in auth.response_headers.iter().chain([&header::WWW_AUTHENTICATE]) {
        for value in answer.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    let now = Instant::now();
    let answer = CachedAnswer { status, headers: kept, expires: now + valid_for };
    cache.insert(key.into(), answer, now);
}

/// Fills a template from the request, into a `String` or straight into a hash.
pub(crate) fn render(template: &Template, original: &Original<'_>, out: &mut impl fmt::Write) {
    for part in template.parts() {
        let variable = match part {
            TemplatePart::Text(text) => {
                let _ = out.write_str(text);
                continue;
            }
            TemplatePart::Variable(variable) => variable,
        };
        let head = original.head;
        match variable {
            Variable::Host => {
                let _ = out.write_str(&host_without_port(head.host()).to_ascii_lowercase());
            }
            Variable::HttpHost => {
                let _ = out.write_str(head.host().unwrap_or(""));
            }
            Variable::Scheme => {
                let _ = out.write_str(if original.connection.is_tls { "https" } else { "http" });
            }
            Variable::RequestUri => {
                let _ = out.write_str(head.target());
            }
            Variable::EscapedRequestUri => escape(head.target(), out),
            Variable::RequestMethod => {
                let _ = out.write_str(original.method.as_str());
            }
            Variable::RemoteAddr => {
                let _ = out.write_str(original.client.ip.to_str().unwrap_or(""));
            }
            Variable::RemoteUser => {
                let _ = out.write_str(&remote_user(original.headers).unwrap_or_default());
            }
            Variable::Header(name) => {
                let values = original.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
                for (i, value) in values.enumerate() {
                    if i > 0 {
                        let _ = out.write_str(", ");
                    }
                    let _ = out.write_str(value);
                }
            }
            Variable::Cookie(name) => {
                let _ = out.write_str(cookie(original.headers, name).unwrap_or(""));
            }
            Variable::Argument(name) => {
                let query = head.uri.query().unwrap_or("");
                let value = query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    key.eq_ignore_ascii_case(name).then_some(value)
                });
                let _ = out.write_str(value.unwrap_or(""));
            }
            Variable::Msec => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let _ = write!(out, "{}.{:03}", now.as_secs(), now.subsec_millis());
            }
        }
    }
}

/// `$host`: the host without its port (an IPv6 literal keeps its brackets).
fn host_without_port(host: Option<&str>) -> &str {
    let Some(host) = host else { return "" };
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// `set_escape_uri`: every byte but letters, digits and `-_.~` percent-encoded.
fn escape(text: &str, out: &mut impl fmt::Write) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            let _ = out.write_char(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// `$remote_user`: the user name of `Authorization: Basic`.
fn remote_user(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    String::from_utf8(user.to_vec()).ok()
}

/// `$cookie_<name>`: the first cookie of that name.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_request_uri_escapes_reserved_characters() {
        let mut out = String::new();
        escape("/?a=b&c=d", &mut out);
        assert_eq!(out, "%2F%3Fa%3Db%26c%3Dd");
    }

    #[test]
    fn host_loses_its_port() {
        assert_eq!(host_without_port(Some("a.example.com:8080")), "a.example.com");
        assert_eq!(host_without_port(Some("[::1]:8080")), "[::1]");
        assert_eq!(host_without_port(None), "");
    }

    #[test]
    fn auth_uris_are_http_or_https_with_a_host() {
        let (uri, protocol, host) = auth_uri("https://auth.example.com:8443/check?x=1").unwrap();
        assert_eq!(
            (uri.path(), protocol, host.to_str().unwrap()),
            ("/check", Protocol::Https, "auth.example.com")
        );
        for bad in ["ftp://a/", "http://user@a/", "/relative", "http://a b/"] {
            assert!(auth_uri(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cookies_and_users_are_read_from_the_request() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; session=abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6czNjcjN0"));
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(remote_user(&headers).as_deref(), Some("alice"));
    }
}
