//! External authentication (`auth-url` and its family), as ingress-nginx's `auth_request`: before
//! a request is forwarded, a subrequest without body goes to an auth service; a 2xx answer lets
//! the request through, 401 and 403 are returned to the client (a 401 becomes a redirect to the
//! sign-in page when there is one), and anything else, or no answer, is a 500.
//!
//! URLs and the cache key may use a few nginx variables. They are parsed once, at translation,
//! into a [`Template`] of text and [`Variable`]s, filled per request from the request alone;
//! nothing else of the value is ever interpreted.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The most answers a route's auth cache holds; when full, expired answers are dropped, then
/// the whole cache if none had expired (a full cache is a burst of distinct keys).
pub const AUTH_CACHE_ENTRIES: usize = 10_000;

/// A route's external authentication.
#[derive(Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    /// `auth-url`: an `http` or `https` URL, possibly with variables (`https://$host/auth`).
    pub url: Template,
    /// `auth-method`: the subrequest's method; `None` sends `GET`, as nginx's subrequests.
    pub method: Option<Method>,
    /// `auth-signin`, with `auth-signin-redirect-param` (`rd`) appended as ingress-nginx's
    /// `buildAuthSignURL` does: where a 401 from the auth service redirects (302) to.
    pub signin: Option<Template>,
    /// `auth-response-headers`: copied from the auth service's 2xx answer to the upstream request
    /// (a header the answer lacks is removed from the upstream request).
    pub response_headers: Box<[HeaderName]>,
    /// `auth-proxy-set-headers`: the entries of a ConfigMap, set on the subrequest after the
    /// headers it always carries, as nginx.tmpl's `proxy_set_header` lines (a value that comes
    /// out empty removes the header). Values are text with the variables [`Template`] knows.
    pub proxy_set_headers: Box<[(HeaderName, Template)]>,
    /// `auth-request-redirect`: `X-Auth-Request-Redirect` sent to the auth service; `None`
    /// sends the request's target.
    pub request_redirect: Option<HeaderValue>,
    /// `auth-always-set-cookie`: the auth service's `Set-Cookie` goes with every answer to the
    /// client, not only with 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308.
    pub always_set_cookie: bool,
    /// `auth-cache-key` with `auth-cache-duration`: answers of the auth service remembered.
    pub cache: Option<AuthCache>,
}

/// Text with nginx variables, filled per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Box<[TemplatePart]>,
}

/// A piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    Text(Box<str>),
    Variable(Variable),
}

/// The nginx variables a template may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `$host`: the request's host, lower-cased, without port.
    Host,
    /// `$http_host`, `$best_http_host`: the `Host` as sent.
    HttpHost,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: the request target as sent.
    RequestUri,
    /// `$escaped_request_uri`: the request target, every byte but `A-Za-z0-9-_.~` escaped.
    EscapedRequestUri,
    /// `$request_method`.
    RequestMethod,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$remote_user`: the user name of `Authorization: Basic`.
    RemoteUser,
    /// `$http_<name>`: a request header (`_` stands for `-`).
    Header(HeaderName),
    /// `$cookie_<name>`: a cookie of the request.
    Cookie(Box<str>),
    /// `$arg_<name>`: an argument of the request's query.
    Argument(Box<str>),
    /// `$msec`: the time, in seconds since the epoch with milliseconds (`1700000000.123`).
    Msec,
}

/// `auth-cache-key` and `auth-cache-duration`: which answers are remembered, and how long.
pub struct AuthCache {
    /// The key of an answer, filled per request (the request's host is added to it, as
    /// ingress-nginx adds its server name).
    pub key: Template,
    /// `proxy_cache_valid` entries: the statuses (empty: 200, 301 and 302) and for how long.
    pub validity: Box<[(Box<[u16]>, Duration)]>,
    answers: Mutex<HashMap<Box<str>, CachedAnswer>>,
}

/// An answer of the auth service, as remembered.
#[derive(Clone, Debug)]
pub struct CachedAnswer {
    pub status: u16,
    /// The headers of the answer that matter later (`auth-response-headers`, `Set-Cookie`,
    /// `WWW-Authenticate`).
    pub headers: HeaderMap,
    pub expires: Instant,
}

// === impl Template ===

impl Template {
    pub fn new(parts: Vec<TemplatePart>) -> Self {
        Self { parts: parts.into() }
    }

    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// The text, when the template uses no variable.
    pub fn as_text(&self) -> Option<&str> {
        match &*self.parts {
            [] => Some(""),
            [TemplatePart::Text(text)] => Some(text),
            _ => None,
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in self.parts.iter() {
            match part {
                TemplatePart::Text(text) => f.write_str(text)?,
                TemplatePart::Variable(variable) => write!(f, "{variable}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("${host}"),
            Self::HttpHost => f.write_str("${http_host}"),
            Self::Scheme => f.write_str("${scheme}"),
            Self::RequestUri => f.write_str("${request_uri}"),
            Self::EscapedRequestUri => f.write_str("${escaped_request_uri}"),
            Self::RequestMethod => f.write_str("${request_method}"),
            Self::RemoteAddr => f.write_str("${remote_addr}"),
            Self::RemoteUser => f.write_str("${remote_user}"),
            Self::Header(name) => write!(f, "${{http_{}}}", name.as_str().replace('-', "_")),
            Self::Cookie(name) => write!(f, "${{cookie_{name}}}"),
            Self::Argument(name) => write!(f, "${{arg_{name}}}"),
            Self::Msec => f.write_str("${msec}"),
        }
    }
}

// === impl AuthCache ===

impl AuthCache {
    pub fn new(key: Template, validity: Vec<(Box<[u16]>, Duration)>) -> Self {
        Self { key, validity: validity.into(), answers: Mutex::default() }
    }

    /// How long an answer with `status` is remembered (the first entry naming it wins, as
    /// nginx's `proxy_cache_valid`), if at all.
    pub fn validity_of(&self, status: u16) -> Option<Duration> {
        self.validity.iter().find_map(|(codes, duration)| {
            let covered = match &**codes {
                [] => matches!(status, 200 | 301 | 302),
                codes => codes.contains(&status),
            };
            covered.then_some(*duration)
        })
    }

    /// The remembered answer for `key`, unless it expired.
    pub fn get(&self, key: &str, now: Instant) -> Option<CachedAnswer> {
        let answers = self.answers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        answers.get(key).filter(|answer| answer.expires > now).cloned()
    }

    /// Remembers an answer, within [`AUTH_CACHE_ENTRIES`].
    pub fn insert(&self, key: Box<str>, answer: CachedAnswer, now: Instant) {
        let mut answers = self.answers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if answers.len() >= AUTH_CACHE_ENTRIES && !answers.contains_key(&key) {
            answers.retain(|_, answer| answer.expires > now);
            if answers.len() >= AUTH_CACHE_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(key, answer);
    }
}

/// Two caches are equal when they remember alike; what they hold does not count.
impl PartialEq for AuthCache {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.validity == other.validity
    }
}

impl Eq for AuthCache {}

// Never print remembered answers: they hold the auth service's cookies.
impl fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCache").field("key", &self.key).field("validity", &self.validity).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(validity: Vec<(Box<[u16]>, Duration)>) -> AuthCache {
        AuthCache::new(Template::new(vec![TemplatePart::Variable(Variable::RemoteUser)]), validity)
    }

    #[test]
    fn the_first_validity_naming_a_status_wins_and_no_codes_mean_200_301_302() {
        let c = cache(vec![
            (vec![200, 202].into(), Duration::from_secs(60)),
            (vec![200, 401].into(), Duration::from_secs(5)),
            (Box::default(), Duration::from_secs(1)),
        ]);
        assert_eq!(c.validity_of(200), Some(Duration::from_secs(60)));
        assert_eq!(c.validity_of(401), Some(Duration::from_secs(5)));
        assert_eq!(c.validity_of(302), Some(Duration::from_secs(1)));
        assert_eq!(c.validity_of(403), None);
    }

    #[test]
    fn expired_answers_are_not_returned_and_the_cache_stays_bounded() {
        let c = cache(vec![]);
        let now = Instant::now();
        let answer = |expires| CachedAnswer { status: 200, headers: HeaderMap::new(), expires };
        c.insert("a".into(), answer(now + Duration::from_secs(1)), now);
        assert!(c.get("a", now).is_some());
        assert!(c.get("a", now + Duration::from_secs(2)).is_none());
        for i in 0..AUTH_CACHE_ENTRIES + 10 {
            c.insert(i.to_string().into(), answer(now + Duration::from_secs(1)), now);
        }
        assert!(c.answers.lock().unwrap().len() <= AUTH_CACHE_ENTRIES);
    }

    #[test]
    fn templates_show_their_variables() {
        let t = Template::new(vec![
            TemplatePart::Text("https://".into()),
            TemplatePart::Variable(Variable::Host),
            TemplatePart::Variable(Variable::Header(HeaderName::from_static("x-user-id"))),
        ]);
        assert_eq!(t.to_string(), "https://${host}${http_x_user_id}");
        assert_eq!(t.as_text(), None);
    }
}
