//! Redirects, and their precedence: which one a request gets instead of being forwarded.
//!
//! In ingress-nginx's order: the other name of a `from-to-www-redirect` host (a server block of
//! its own, so nothing else applies), `app-root` for `/`, a fixed `permanent-redirect` or
//! `temporal-redirect`, then the HTTPS redirect (`ssl-redirect`, `force-ssl-redirect`). The
//! route's [`Shaping`](crate::Shaping) decides their style where nginx's settings do:
//! `preserve-trailing-slash` and `use-port-in-redirects` for the HTTPS redirect (ingress-nginx's
//! Lua), `use-port-in-redirects` and `relative-redirects` for a `permanent-redirect` to a path
//! (nginx's `port_in_redirect` and `absolute_redirect`).

use http::HeaderValue;

use crate::shaping::split_port;
use crate::{HttpsRedirect, HttpsSettings, Policy, Route, RouteAction};

/// `from-to-www-redirect`'s other name: every request is redirected (308) to the host, its path
/// and query kept. The `Location` prefix of each scheme is built once, with the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRedirect(Box<Targets>);

/// Behind one pointer, so that the route action that holds them stays small.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Targets {
    host: Box<str>,
    http: Box<str>,
    https: Box<str>,
}

/// What [`Route::redirect`] needs to know of a request.
#[derive(Clone, Copy, Debug)]
pub struct RedirectContext<'a> {
    pub is_tls: bool,
    /// The host as the client sent it (`Host` or `:authority`), port included.
    pub host: &'a str,
    /// The normalised path the route was chosen by.
    pub path: &'a str,
    /// The request target as the client sent it: path and query.
    pub target: &'a str,
    /// The host is a TLS host of some Ingress (see [`TlsTable::has_certificate`](crate::TlsTable::has_certificate)).
    pub host_has_certificate: bool,
    /// The redirect's status and the paths that never get it (`--configmap`).
    pub https: &'a HttpsSettings,
}

/// A redirect to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirection {
    pub status: u16,
    pub location: Location,
}

/// A redirect's `Location`: the value a fixed redirect was given at translation, or one built
/// for the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Fixed(HeaderValue),
    Built(String),
}

impl HostRedirect {
    /// A redirect to `host` (a valid host name).
    pub fn new(host: &str) -> Self {
        Self(Box::new(Targets {
            host: host.into(),
            http: format!("http://{host}").into(),
            https: format!("https://{host}").into(),
        }))
    }

    pub fn host(&self) -> &str {
        &self.0.host
    }
}

impl Route {
    /// The redirect a request gets instead of being forwarded, if any (see [`redirection`]).
    pub fn redirect(&self, request: &RedirectContext<'_>) -> Option<Redirection> {
        redirection(&self.action, &self.policy, request)
    }
}

/// The redirect a request for a route (its action and policy) gets instead of being forwarded,
/// if any, by the precedence of the module documentation.
pub fn redirection(
    action: &RouteAction,
    policy: &Policy,
    request: &RedirectContext<'_>,
) -> Option<Redirection> {
    // ingress-nginx drops a final `/` of the target in its redirects.
    let target = request.target.strip_suffix('/').unwrap_or(request.target);
    let scheme = if request.is_tls { "https" } else { "http" };
    let shaping = &policy.shaping;
    if let RouteAction::Redirect(to) = action {
        let prefix = if request.is_tls { &to.0.https } else { &to.0.http };
        return Some(Redirection { status: 308, location: Location::Built(format!("{prefix}{target}")) });
    }
    if let Some(root) = &policy.app_root
        && request.path == "/"
    {
        let location = format!("{scheme}://{}{}", request.host, root.to_str().unwrap_or("/"));
        return Some(Redirection { status: 302, location: Location::Built(location) });
    }
    if let Some(fixed) = &policy.redirect {
        // A path is made absolute, as nginx's `return` does unless `absolute_redirect off`.
        let location = match fixed.location.as_bytes().first() {
            Some(b'/') => shaping.redirect_origin(request.is_tls, request.host),
            _ => None,
        };
        let location = match location {
            Some(origin) => Location::Built(origin + fixed.location.to_str().unwrap_or("/")),
            None => Location::Fixed(fixed.location.clone()),
        };
        return Some(Redirection { status: fixed.status, location });
    }
    let to_https = match policy.https_redirect {
        HttpsRedirect::Always => true,
        HttpsRedirect::WhenHostHasCertificate => request.host_has_certificate,
        HttpsRedirect::Never => false,
    };
    if to_https && !request.is_tls && !request.https.is_exempt(request.path) {
        let target = if shaping.preserve_trailing_slash { request.target } else { target };
        let (host, port) = (split_port(request.host).0, shaping.https_redirect_port());
        let location = format!("https://{host}{port}{target}");
        return Some(Redirection {
            status: request.https.redirect_code,
            location: Location::Built(location),
        });
    }
    None
}

/// A `Location` value for a redirection, when it is a valid header value.
impl Redirection {
    pub fn location_header(self) -> Option<HeaderValue> {
        match self.location {
            Location::Fixed(value) => Some(value),
            Location::Built(text) => HeaderValue::try_from(text).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Backend, PathRule, Redirect, Shaping};

    fn route(action: RouteAction, policy: Policy) -> Route {
        Route { rule: PathRule::prefix("/").unwrap(), ingress: None, action, policy: Arc::new(policy) }
    }

    fn built(location: &str) -> Location {
        Location::Built(location.to_owned())
    }

    fn request<'a>(is_tls: bool, path: &'a str, target: &'a str) -> RedirectContext<'a> {
        static HTTPS: std::sync::LazyLock<HttpsSettings> = std::sync::LazyLock::new(HttpsSettings::default);
        RedirectContext {
            is_tls,
            host: "shop.example.com:8080",
            path,
            target,
            host_has_certificate: true,
            https: &HTTPS,
        }
    }

    #[test]
    fn the_www_host_redirect_wins_over_everything() {
        let to = HostRedirect::new("www.shop.example.com");
        let r = route(RouteAction::Redirect(to), Policy::default());
        let got = r.redirect(&request(true, "/a/", "/a/?x=1/")).unwrap();
        assert_eq!(got, Redirection { status: 308, location: built("https://www.shop.example.com/a/?x=1") });
    }

    #[test]
    fn app_root_then_fixed_redirect_then_https() {
        let fixed =
            Redirect { status: 301, location: HeaderValue::from_static("https://elsewhere.example/") };
        let policy = Policy {
            app_root: Some(HeaderValue::from_static("/app")),
            redirect: Some(fixed),
            ..Policy::default()
        };
        let r = route(RouteAction::Forward(Backend::unavailable_for_tests("web")), policy.clone());
        assert_eq!(
            r.redirect(&request(false, "/", "/")).unwrap().location,
            built("http://shop.example.com:8080/app")
        );
        let fixed = HeaderValue::from_static("https://elsewhere.example/");
        assert_eq!(r.redirect(&request(false, "/x", "/x")).unwrap().location, Location::Fixed(fixed));
        let r = route(RouteAction::Forward(Backend::unavailable_for_tests("web")), Policy::default());
        let https = r.redirect(&request(false, "/x/", "/x/?q=1")).unwrap();
        assert_eq!(https, Redirection { status: 308, location: built("https://shop.example.com/x/?q=1") });
        assert_eq!(r.redirect(&request(true, "/x", "/x")), None, "already on TLS");
        let acme = request(false, "/.well-known/acme-challenge/t", "/.well-known/acme-challenge/t");
        assert_eq!(r.redirect(&acme), None);
    }

    /// ingress-nginx's lua_ingress.lua `rewrite()`: the final `/` is kept with
    /// `preserve_trailing_slash`, and `use_port_in_redirects` writes the HTTPS listen port.
    #[test]
    fn https_redirect_style_follows_the_route_shaping() {
        let shaped = |shaping: Shaping| {
            let r = route(
                RouteAction::Forward(Backend::unavailable_for_tests("web")),
                Policy { shaping, ..Policy::default() },
            );
            r.redirect(&request(false, "/x/", "/x/?q=1/")).unwrap().location
        };
        assert_eq!(shaped(Shaping::default()), built("https://shop.example.com/x/?q=1"));
        let preserve = Shaping { preserve_trailing_slash: true, ..Shaping::default() };
        assert_eq!(shaped(preserve), built("https://shop.example.com/x/?q=1/"));
        let port = Shaping { port_in_redirects: true, ..Shaping::default() };
        assert_eq!(shaped(port), built("https://shop.example.com:443/x/?q=1"));
    }

    /// nginx's `return 301 /path` is made absolute by its header filter (`absolute_redirect`,
    /// `port_in_redirect`); ingress-nginx's relativeredirects.go e2e test.
    #[test]
    fn a_permanent_redirect_to_a_path_is_made_absolute_unless_relative() {
        let to_path = |shaping: Shaping| {
            let fixed = Redirect { status: 301, location: HeaderValue::from_static("/new-location") };
            let policy = Policy { redirect: Some(fixed), shaping, ..Policy::default() };
            let r = route(RouteAction::Forward(Backend::unavailable_for_tests("web")), policy);
            r.redirect(&request(true, "/old", "/old")).unwrap().location
        };
        assert_eq!(to_path(Shaping::default()), built("https://shop.example.com/new-location"));
        let port = Shaping { port_in_redirects: true, ..Shaping::default() };
        assert_eq!(to_path(port), built("https://shop.example.com:8080/new-location"));
        let relative = Shaping { relative_redirects: true, ..Shaping::default() };
        assert_eq!(to_path(relative), Location::Fixed(HeaderValue::from_static("/new-location")));
    }
}
