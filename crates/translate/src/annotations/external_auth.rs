//! External authentication: `auth-url`, `auth-method`, `auth-signin`,
//! `auth-signin-redirect-param`, `auth-response-headers`, `auth-proxy-set-headers`,
//! `auth-request-redirect`, `auth-cache-key`, `auth-cache-duration`, `auth-always-set-cookie`, `auth-keepalive*`, and
//! `enable-global-auth` (read where the ConfigMap's `global-auth-*` are applied, in `parse`).
//!
//! Follows ingress-nginx's internal/ingress/annotations/authreq/main.go. Where ingress-nginx
//! drops the whole external auth on an invalid value (so the route is served without it), the
//! route is denied (503) instead: an invalid value never opens a route.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ostium_model::{AuthCache, Denial, ExternalAuth, NamespacedName, Template, TemplatePart, Variable};

use super::{Parser, is_basic_char};
use crate::{Diagnostic, Objects, Reason};

/// The keys this module reads.
pub(crate) const KEYS: &[&str] = &[
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-proxy-set-headers",
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-always-set-cookie",
    "auth-keepalive",
    "auth-keepalive-share-vars",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "enable-global-auth",
];

/// ingress-nginx's `DefaultCacheDuration`.
const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

impl Parser<'_> {
    /// `auth-url` and the keys that refine it. An invalid URL, method, header list, redirect,
    /// cache duration or cookie flag denies the route (503); an invalid sign-in URL or redirect
    /// parameter is reported and left out, as ingress-nginx does.
    pub(super) fn external_auth(
        &mut self,
        objects: &Objects,
        denied: &mut Option<Denial>,
    ) -> Option<ExternalAuth> {
        let _ = self.flag("enable-global-auth");
        let Some(url) = self.value("auth-url") else {
            let set: Vec<&str> =
                KEYS.iter().copied().filter(|k| k.starts_with("auth-") && self.value(k).is_some()).collect();
            for key in set {
                let message = format!("annotation {}/{key} has no effect without auth-url", self.prefix);
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
            }
            return None;
        };
        let url = match auth_url(url) {
            Ok(url) => url,
            Err(why) => return self.deny_auth("auth-url", &why, denied),
        };
        let method = match self.value("auth-method") {
            None => None,
            Some(method) => match AUTH_METHODS.contains(&method) {
                true => method.parse::<Method>().ok(),
                false => return self.deny_auth("auth-method", "not an HTTP method nginx knows", denied),
            },
        };
        let response_headers = match self.value("auth-response-headers").map(header_list) {
            None => Vec::new(),
            Some(Some(headers)) => headers,
            Some(None) => {
                return self.deny_auth("auth-response-headers", "not a list of header names", denied);
            }
        };
        let proxy_set_headers = match self.value("auth-proxy-set-headers") {
            None | Some("") => Vec::new(),
            Some(reference) => match self.proxy_set_headers(reference, objects) {
                Ok(headers) => headers,
                Err(why) => return self.deny_auth("auth-proxy-set-headers", &why, denied),
            },
        };
        let request_redirect = match self.value("auth-request-redirect") {
            None | Some("") => None,
            Some(value) => match HeaderValue::from_str(value) {
                Ok(header) if is_url_text(value, false) => Some(header),
                _ => return self.deny_auth("auth-request-redirect", "not a URL", denied),
            },
        };
        // Go's `strconv.ParseBool`, as `flag`, but an invalid value denies.
        let always_set_cookie = match self.value("auth-always-set-cookie") {
            None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
            Some(_) => return self.deny_auth("auth-always-set-cookie", "not true or false", denied),
        };
        let cache = match self.auth_cache() {
            Ok(cache) => cache,
            Err((key, why)) => return self.deny_auth(key, &why, denied),
        };
        self.keepalive();
        let signin = self.signin();
        Some(ExternalAuth {
            url,
            method,
            signin,
            response_headers: response_headers.into(),
            proxy_set_headers: proxy_set_headers.into(),
            request_redirect,
            always_set_cookie,
            cache,
        })
    }

    /// Reports a value that denies the route, and denies it.
    fn deny_auth(&mut self, name: &str, why: &str, denied: &mut Option<Denial>) -> Option<ExternalAuth> {
        let annotation = format!("{}/{name}", self.prefix);
        let message =
            format!("annotation {annotation}: {why}; every request to these paths is refused (503)");
        self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::InvalidAnnotation, message));
        denied.get_or_insert(Denial::InvalidAnnotation { annotation: annotation.into() });
        None
    }

    /// `auth-signin` with its redirect parameter appended as ingress-nginx's `buildAuthSignURL`
    /// does: `?rd=` (or `&rd=` after a query) followed by
    /// `$pass_access_scheme://$http_host$escaped_request_uri`, unless the URL already sets it.
    fn signin(&mut self) -> Option<Template> {
        let signin = self.value("auth-signin").filter(|s| !s.is_empty())?;
        let param = match self.value("auth-signin-redirect-param") {
            None | Some("") => "rd",
            Some(param) if is_url_text(param, false) && !param.contains(['?', '&', '=']) => param,
            Some(_) => {
                self.warn_default("auth-signin-redirect-param", "rd");
                "rd"
            }
        };
        let Ok(mut parts) = auth_url_parts(signin) else {
            self.invalid("auth-signin", "an http or https URL, with nginx variables or not");
            return None;
        };
        let query = signin.split_once('?').map(|(_, query)| query);
        let has_param = query.is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair.split_once('=').is_some_and(|(k, v)| k == param && !v.is_empty()))
        });
        if !has_param {
            let separator = if query.is_some_and(|q| !q.is_empty()) { '&' } else { '?' };
            parts.push(TemplatePart::Text(format!("{separator}{param}=").into()));
            parts.push(TemplatePart::Variable(Variable::Scheme));
            parts.push(TemplatePart::Text("://".into()));
            parts.push(TemplatePart::Variable(Variable::HttpHost));
            parts.push(TemplatePart::Variable(Variable::EscapedRequestUri));
        }
        Some(Template::new(merge_text(parts)))
    }

    /// `auth-proxy-set-headers`: the data of the ConfigMap it names, as headers for the auth
    /// service. ingress-nginx denies the location when the ConfigMap cannot be read or a name is
    /// not letters, digits, `-` and `_` (`headerRegexp`); here an unusable value denies too.
    fn proxy_set_headers(
        &mut self,
        reference: &str,
        objects: &Objects,
    ) -> Result<Vec<(HeaderName, Template)>, String> {
        let namespace = self.object.namespace.as_deref().unwrap_or_default();
        let key = auth_headers_config_map(namespace, reference, self.cross_namespace)
            .map_err(|why| format!("`{reference}` {why}"))?;
        let Some(config_map) = objects.config_maps.get(&key) else {
            return Err(format!("ConfigMap {key} does not exist"));
        };
        let mut headers = Vec::new();
        for (name, value) in config_map.data.iter().flatten() {
            headers.push(proxy_set_header(name, value).map_err(|why| format!("ConfigMap {key}: {why}"))?);
        }
        Ok(headers)
    }

    /// `auth-cache-key` and `auth-cache-duration`. A key with characters ingress-nginx refuses
    /// is reported and caching left off, as ingress-nginx does; a key using a variable ostium
    /// cannot fill, or an invalid duration, is an error.
    fn auth_cache(&mut self) -> Result<Option<AuthCache>, (&'static str, String)> {
        let durations = self.value("auth-cache-duration").unwrap_or("");
        let validity = cache_validity(durations)
            .ok_or(("auth-cache-duration", format!("`{durations}` is not like `200 202 401 5m`")))?;
        let Some(key) = self.value("auth-cache-key").filter(|k| !k.is_empty()) else { return Ok(None) };
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b)) {
            self.invalid("auth-cache-key", "nginx variables and letters, digits, - and _");
            return Ok(None);
        }
        let key = template(key).map_err(|why| ("auth-cache-key", why))?;
        Ok(Some(AuthCache::new(key, validity)))
    }

    /// `auth-keepalive*`: checked as ingress-nginx checks them; connections to the auth service
    /// are kept alive by the proxy's shared client whatever they say.
    fn keepalive(&mut self) {
        for name in ["auth-keepalive", "auth-keepalive-requests", "auth-keepalive-timeout"] {
            let Some(value) = self.value(name) else { continue };
            if value.trim().parse::<i64>().is_err() {
                self.warn_default(name, if name == "auth-keepalive" { "0" } else { "the default" });
            }
        }
        let _ = self.flag("auth-keepalive-share-vars");
    }
}

/// The ConfigMap an `auth-proxy-set-headers` value names: `name` or `namespace/name`, in the
/// Ingress's own namespace (ingress-nginx refuses other namespaces unless
/// `allow-cross-namespace-resources`), in the characters its validator allows.
pub(crate) fn auth_headers_config_map(
    namespace: &str,
    reference: &str,
    cross_namespace: bool,
) -> Result<NamespacedName, &'static str> {
    if !reference.bytes().all(is_basic_char) {
        return Err("has characters other than letters, digits and -._~/:");
    }
    match reference.split('/').collect::<Vec<_>>()[..] {
        [name] if !name.is_empty() => Ok(NamespacedName::new(namespace, name)),
        [ns, name] if (ns == namespace || cross_namespace) && !ns.is_empty() && !name.is_empty() => {
            Ok(NamespacedName::new(ns, name))
        }
        [ns, name] if !ns.is_empty() && !name.is_empty() => {
            Err("is in another namespace (allow-cross-namespace-resources is off)")
        }
        _ => Err("is not name or namespace/name"),
    }
}

/// Headers the subrequest's framing and connection depend on: never set from a ConfigMap.
const FRAMING_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "expect",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One ConfigMap entry as a header: a name of letters, digits, `-` and `_`, and a value of text
/// and the variables ostium fills (nginx.tmpl puts it in a double-quoted `proxy_set_header`
/// argument, where nginx expands variables); control characters are refused.
fn proxy_set_header(name: &str, value: &str) -> Result<(HeaderName, Template), String> {
    let valid_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let header = HeaderName::from_bytes(name.as_bytes()).ok().filter(|_| valid_name);
    let header =
        header.ok_or_else(|| format!("`{name}` is not a header name of letters, digits, - and _"))?;
    if FRAMING_HEADERS.contains(&header.as_str()) {
        return Err(format!("`{name}` frames the request and cannot be set"));
    }
    let template = header_template(value).map_err(|why| format!("header {name}: {why}"))?;
    Ok((header, template))
}

/// `auth-method` values ingress-nginx accepts.
const AUTH_METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];

/// An `auth-url` as a template.
fn auth_url(url: &str) -> Result<Template, String> {
    auth_url_parts(url).map(|parts| Template::new(merge_text(parts)))
}

/// An http(s) URL, possibly with nginx variables, in the characters ingress-nginx allows
/// (`URLWithNginxVariableRegex`) and with a host (`StringToURL`: not empty, no `..`).
fn auth_url_parts(url: &str) -> Result<Vec<TemplatePart>, String> {
    if !is_url_text(url, true) {
        return Err(format!("`{url}` has characters other than letters, digits and -._~/:,?&=$"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("`{url}` is neither http nor https"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains("..") {
        return Err(format!("`{url}` has no valid host"));
    }
    let mut parts = vec![TemplatePart::Text(format!("{}://", scheme.to_ascii_lowercase()).into())];
    parts.extend(template(rest)?.parts().iter().cloned());
    Ok(parts)
}

/// Whether text has only the characters of ingress-nginx's URL validators: letters, digits,
/// `-._~/:,?&=`, and `$` where variables are allowed. (ingress-nginx removes spaces before it
/// checks; a URL with a space is refused here.)
fn is_url_text(text: &str, variables: bool) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&=".contains(&b) || (variables && b == b'$'))
}

/// Text with `$name` or `${name}` variables. A variable ostium cannot fill is an error.
pub(super) fn template(text: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            parts.push(TemplatePart::Text(rest[..at].into()));
        }
        let after = &rest[at + 1..];
        let (name, next) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or_else(|| format!("`{text}` has an unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end =
                    after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        parts.push(TemplatePart::Variable(variable(name).ok_or_else(|| {
            format!("`${name}` is not one of the nginx variables ostium fills (see docs/annotations.md)")
        })?));
        rest = next;
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.into()));
    }
    Ok(Template::new(parts))
}

/// The variables ostium fills from a request.
fn variable(name: &str) -> Option<Variable> {
    let valid_suffix = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    Some(match name {
        "host" => Variable::Host,
        "http_host" | "best_http_host" => Variable::HttpHost,
        "scheme" | "pass_access_scheme" => Variable::Scheme,
        "request_uri" => Variable::RequestUri,
        "escaped_request_uri" => Variable::EscapedRequestUri,
        "request_method" => Variable::RequestMethod,
        "remote_addr" => Variable::RemoteAddr,
        "remote_user" => Variable::RemoteUser,
        "msec" => Variable::Msec,
        _ => {
            if let Some(header) = name.strip_prefix("http_").filter(|h| valid_suffix(h)) {
                let header = header.to_ascii_lowercase().replace('_', "-");
                return HeaderName::from_bytes(header.as_bytes()).ok().map(Variable::Header);
            }
            if let Some(cookie) = name.strip_prefix("cookie_").filter(|c| valid_suffix(c)) {
                return Some(Variable::Cookie(cookie.into()));
            }
            let argument = name.strip_prefix("arg_").filter(|a| valid_suffix(a))?;
            Variable::Argument(argument.into())
        }
    })
}

/// Text with the nginx variables ostium fills, for a header value: adjacent text joined, and
/// text that is not a valid header value (control characters) refused.
pub(crate) fn header_template(text: &str) -> Result<Template, String> {
    let template = Template::new(merge_text(template(text)?.parts().to_vec()));
    let text_is_valid = template.parts().iter().all(|part| match part {
        TemplatePart::Text(text) => HeaderValue::from_str(text).is_ok(),
        TemplatePart::Variable(_) => true,
    });
    match text_is_valid {
        true => Ok(template),
        false => Err("the value has control characters".to_owned()),
    }
}

/// Adjacent text parts joined, so a template without variables is one text.
fn merge_text(parts: Vec<TemplatePart>) -> Vec<TemplatePart> {
    let mut merged: Vec<TemplatePart> = Vec::with_capacity(parts.len());
    for part in parts {
        match (merged.last_mut(), part) {
            (Some(TemplatePart::Text(before)), TemplatePart::Text(text)) => {
                *before = format!("{before}{text}").into();
            }
            (_, part) => merged.push(part),
        }
    }
    merged
}

/// `auth-response-headers`: comma-separated names of letters, digits, `-` and `_`
/// (ingress-nginx's `headerRegexp`); `None` if one is not.
fn header_list(list: &str) -> Option<Vec<HeaderName>> {
    let mut headers = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        headers.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
    }
    Some(headers)
}

/// `auth-cache-duration` (default `200 202 401 5m`): comma-separated `proxy_cache_valid`
/// entries, each status codes followed by a time (ingress-nginx's `ValidCacheDuration`:
/// `^\d+(ms|s|m|h|d|w|M|y)$`, several adding up as nginx's `1h 30m`).
fn cache_validity(durations: &str) -> Option<Vec<(Box<[u16]>, Duration)>> {
    let entries: Vec<&str> = durations.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let entries = if entries.is_empty() { vec![DEFAULT_CACHE_DURATION] } else { entries };
    entries.into_iter().map(cache_valid).collect()
}

/// One `proxy_cache_valid` entry.
fn cache_valid(entry: &str) -> Option<(Box<[u16]>, Duration)> {
    let mut codes = Vec::new();
    let mut total: Option<Duration> = None;
    for element in entry.split(' ').filter(|e| !e.is_empty()) {
        if element.len() == 3 && element.bytes().all(|b| b.is_ascii_digit()) {
            if total.is_some() {
                return None; // a code after the time
            }
            codes.push(element.parse().ok()?);
            continue;
        }
        let time = nginx_time(element)?;
        total = Some(total.unwrap_or_default().checked_add(time)?);
    }
    Some((codes.into(), total?))
}

/// An nginx time (`30m`, `1h`, `500ms`; nginx's units: a month is 30 days, a year 365).
fn nginx_time(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_ingress_nginx_validation() {
        assert_eq!(auth_url("http://auth.svc/check").unwrap().as_text(), Some("http://auth.svc/check"));
        assert_eq!(auth_url("HTTPS://$host/oauth2/auth").unwrap().to_string(), "https://${host}/oauth2/auth");
        for bad in [
            "https://invalid..auth.url",
            "ftp://auth/",
            "auth.svc/check",
            "http:///path",
            "http://a b/",
            "http://user@auth/",
            "http://auth/#x",
            "http://$unknown/",
            "http://auth/\"x",
        ] {
            assert!(auth_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_know_a_safe_set_of_variables() {
        let t = template("$remote_user-${http_authorization}$cookie_session$host$request_uri").unwrap();
        assert_eq!(
            t.to_string(),
            "${remote_user}-${http_authorization}${cookie_session}${host}${request_uri}"
        );
        for bad in ["$document_root", "${host", "$", "$http_", "$ssl_client_cert"] {
            assert!(template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_durations_follow_proxy_cache_valid() {
        let default = cache_validity("").unwrap();
        let expected: Vec<(Box<[u16]>, Duration)> =
            vec![(vec![200, 202, 401].into(), Duration::from_secs(300))];
        assert_eq!(default, expected);
        let parsed = cache_validity("200 1h 30m, 401 10s").unwrap();
        assert_eq!(parsed[0], (vec![200].into(), Duration::from_secs(5400)));
        assert_eq!(parsed[1], (vec![401].into(), Duration::from_secs(10)));
        assert_eq!(cache_validity("5m").unwrap()[0].0.len(), 0);
        for bad in ["200", "5m 200", "200 5x", "abc", "200 -5m"] {
            assert!(cache_validity(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn proxy_set_headers_come_from_a_config_map_of_the_ingress_namespace() {
        let key = NamespacedName::new("shop", "auth-headers");
        assert_eq!(auth_headers_config_map("shop", "auth-headers", false), Ok(key.clone()));
        assert_eq!(auth_headers_config_map("shop", "shop/auth-headers", false), Ok(key));
        let other = NamespacedName::new("shared", "auth-headers");
        assert_eq!(auth_headers_config_map("shop", "shared/auth-headers", true), Ok(other));
        for bad in ["other/auth-headers", "a/b/c", "shop/", "/x", "x y", "x;y"] {
            assert!(auth_headers_config_map("shop", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_set_headers_are_names_and_literal_or_known_variables() {
        let (name, value) = proxy_set_header("X-Tenant_Id", "acme \"corp\"").unwrap();
        assert_eq!((name.as_str(), value.as_text()), ("x-tenant_id", Some("acme \"corp\"")));
        assert_eq!(proxy_set_header("X-User", "u-$remote_user").unwrap().1.to_string(), "u-${remote_user}");
        for (bad_name, bad_value) in [
            ("X User", "1"),
            ("X:User", "1"),
            ("", "1"),
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked"),
            ("X-A", "1\r\nX-B: 2"),
            ("X-A", "$document_root"),
            ("X-A", "$1"),
        ] {
            assert!(proxy_set_header(bad_name, bad_value).is_err(), "{bad_name}: {bad_value}");
        }
    }

    #[test]
    fn header_lists_are_names_only() {
        let names = header_list("X-Auth-Request-User, X-Auth-Request-Email,").unwrap();
        assert_eq!(names.len(), 2);
        assert!(header_list("X-User: 1").is_none());
    }
}
