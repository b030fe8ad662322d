//! Canary releases (`canary: "true"` Ingresses): a second backend for a route, chosen per
//! request by header, cookie or weight, as ingress-nginx's Lua balancer does
//! (`route_to_alternative_balancer` in rootfs/etc/nginx/lua/balancer.lua).

use std::sync::Arc;

use http::header::{COOKIE, GetAll};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{Affinity, BackendRef, LoadBalance, NamespacedName, UpstreamHash};

/// ingress-nginx's smallest (and default) `canary-weight-total`.
pub const DEFAULT_WEIGHT_TOTAL: u64 = 100;

/// The canary of a route: where its requests may go instead, and by which rules.
#[derive(Clone, Debug)]
pub struct Canary {
    /// The canary Ingress's backend for this route's host and path.
    pub backend: BackendRef,
    /// The canary Ingress.
    pub ingress: Arc<NamespacedName>,
    /// `canary-by-header` and how its value is judged.
    pub header: Option<CanaryHeader>,
    /// `canary-by-cookie`: a cookie of this name (compared case-insensitively, as nginx's
    /// `$cookie_` variables) with the value `always` or `never` decides.
    pub cookie: Option<Box<str>>,
    /// `canary-weight` out of `weight_total`: the share of the remaining requests sent to the
    /// canary, at most `weight_total`.
    pub weight: u64,
    /// `canary-weight-total`; never below [`DEFAULT_WEIGHT_TOTAL`] (the balancer ignores a
    /// smaller total).
    pub weight_total: u64,
    /// `affinity-canary-behavior`.
    pub affinity: CanaryAffinity,
    /// The session affinity cookie of the route's own backend (its Ingress's `affinity:
    /// cookie`), which the canary keeps unless `legacy`.
    pub sessions: Option<CanarySessions>,
    /// The canary Ingress's own `load-balance`, which ingress-nginx builds the canary's upstream
    /// with.
    pub load_balance: LoadBalance,
    /// The canary Ingress's own `upstream-hash-by`, likewise (used when the route's session
    /// affinity does not apply to the canary).
    pub upstream_hash: Option<Arc<UpstreamHash>>,
    /// The canary Ingress's own `affinity: cookie`: its backend keeps it with `legacy` (with
    /// `sticky` it takes the route's instead, as ingress-nginx's `mergeAlternativeBackend`).
    pub own_affinity: Option<Arc<Affinity>>,
}

/// Session affinity by cookie, as ingress-nginx's sticky balancers recognise their sessions
/// (`is_affinitized` in rootfs/etc/nginx/lua/balancer/sticky.lua): the cookie's value is
/// `<endpoint>|<backend key>`, and a request whose cookie names a backend's key stays with that
/// backend. The key of a backend is the hex MD5 of the hex MD5 of its ingress-nginx upstream
/// name (`<namespace>-<service>-<port>`) followed by that name, so sessions begun under
/// ingress-nginx keep their backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanarySessions {
    /// `session-cookie-name` of the route's Ingress (default `INGRESSCOOKIE`).
    pub cookie: Box<str>,
    /// The key of the route's own backend.
    pub main_key: Arc<str>,
    /// The key of the canary's backend.
    pub canary_key: Arc<str>,
}

/// `canary-by-header`: the request header, and what its value must be.
#[derive(Clone, Debug)]
pub struct CanaryHeader {
    pub name: HeaderName,
    pub rule: HeaderRule,
}

/// How the value of the canary header is judged. A value that does not decide leaves the
/// request to the cookie, then the weight.
#[derive(Clone, Debug)]
pub enum HeaderRule {
    /// `always` sends to the canary, `never` to the main backend.
    AlwaysOrNever,
    /// `canary-by-header-value`: this exact value sends to the canary.
    Value(HeaderValue),
    /// `canary-by-header-pattern`: a value the pattern finds a match in (unanchored) sends to
    /// the canary.
    Pattern(regex::bytes::Regex),
    /// A `canary-by-header-pattern` that does not compile: any request with the header goes to
    /// the main backend, as the balancer does when matching fails with an error.
    BrokenPattern,
}

/// `affinity-canary-behavior`: whether a session kept by cookie affinity on the canary stays
/// there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CanaryAffinity {
    /// `sticky` (the default): the canary backend keeps the main backend's session affinity.
    #[default]
    Sticky,
    /// `legacy`: the canary backend has no session affinity.
    Legacy,
}

impl Canary {
    /// Whether a request with these headers goes to the canary: a session kept by the main
    /// backend stays there, one kept by the canary (unless `legacy`) stays there; then the
    /// header decides, then the cookie, then the weight. `roll(n)` must give a random number
    /// below `n`; it is called only when the weight decides. Never allocates, unless the canary
    /// header is sent several times and a pattern must match its lines joined.
    pub fn chooses(&self, headers: &HeaderMap, roll: impl FnOnce(u64) -> u64) -> bool {
        if let Some(sessions) = &self.sessions
            && let Some(value) = cookie(headers, &sessions.cookie, Case::Sensitive)
        {
            // `<endpoint>|<backend key>`, maybe more fields after.
            let backend = value.split(|&b| b == b'|').nth(1);
            if backend == Some(sessions.main_key.as_bytes()) {
                return false;
            }
            if backend == Some(sessions.canary_key.as_bytes()) && self.affinity == CanaryAffinity::Sticky {
                return true;
            }
        }
        if let Some(header) = &self.header
            && headers.contains_key(&header.name)
            && let Some(decided) = header.rule.judge(|| headers.get_all(&header.name))
        {
            return decided;
        }
        if let Some(name) = &self.cookie {
            match cookie(headers, name, Case::Insensitive) {
                Some(b"always") => return true,
                Some(b"never") => return false,
                _ => {}
            }
        }
        self.weight > 0 && roll(self.weight_total) < self.weight
    }
}

impl PartialEq for Canary {
    fn eq(&self, other: &Self) -> bool {
        self.backend == other.backend
            && self.ingress == other.ingress
            && self.header == other.header
            && self.cookie == other.cookie
            && self.weight == other.weight
            && self.weight_total == other.weight_total
            && self.affinity == other.affinity
            && self.sessions == other.sessions
            && self.load_balance == other.load_balance
            && self.upstream_hash == other.upstream_hash
            && self.own_affinity == other.own_affinity
    }
}

impl Eq for Canary {}

impl PartialEq for CanaryHeader {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.rule, &other.rule) {
                (HeaderRule::AlwaysOrNever, HeaderRule::AlwaysOrNever)
                | (HeaderRule::BrokenPattern, HeaderRule::BrokenPattern) => true,
                (HeaderRule::Value(a), HeaderRule::Value(b)) => a == b,
                (HeaderRule::Pattern(a), HeaderRule::Pattern(b)) => a.as_str() == b.as_str(),
                _ => false,
            }
    }
}

impl Eq for CanaryHeader {}

impl HeaderRule {
    /// `Some(true)`: the canary; `Some(false)`: the main backend; `None`: the header does not
    /// decide. Several lines of the header are judged joined with `, `, as nginx's `$http_`
    /// variables join them.
    fn judge<'h>(&self, values: impl Fn() -> GetAll<'h, HeaderValue>) -> Option<bool> {
        match self {
            Self::AlwaysOrNever => {
                if joined_equals(values(), b"always") {
                    Some(true)
                } else if joined_equals(values(), b"never") {
                    Some(false)
                } else {
                    None
                }
            }
            Self::Value(expected) => joined_equals(values(), expected.as_bytes()).then_some(true),
            Self::Pattern(pattern) => {
                let mut lines = values().into_iter();
                let first = lines.next()?.as_bytes();
                let matched = match lines.next() {
                    None => pattern.is_match(first),
                    Some(_) => pattern.is_match(&joined(values())),
                };
                matched.then_some(true)
            }
            Self::BrokenPattern => Some(false),
        }
    }
}

/// Whether the lines of a header, joined with `, `, equal `expected`.
fn joined_equals(values: GetAll<'_, HeaderValue>, mut expected: &[u8]) -> bool {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            let Some(rest) = expected.strip_prefix(b", ") else { return false };
            expected = rest;
        }
        let Some(rest) = expected.strip_prefix(value.as_bytes()) else { return false };
        expected = rest;
    }
    expected.is_empty()
}

fn joined(values: GetAll<'_, HeaderValue>) -> Vec<u8> {
    let mut joined = Vec::new();
    for value in values.iter() {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    joined
}

/// How a cookie's name is compared: nginx's `$cookie_` variables ignore case, the Lua cookie
/// library of the sticky balancers does not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Sensitive,
    Insensitive,
}

/// The value of the first cookie named `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str, case: Case) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().flat_map(|line| line.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii_start();
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        let key = key.trim_ascii_end();
        let named = match case {
            Case::Sensitive => key == name.as_bytes(),
            Case::Insensitive => key.eq_ignore_ascii_case(name.as_bytes()),
        };
        named.then(|| value[1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(header: Option<CanaryHeader>, cookie: Option<&str>, weight: u64) -> Canary {
        Canary {
            backend: crate::Backend::unavailable_for_tests("canary"),
            ingress: Arc::new(NamespacedName::new("default", "canary")),
            header,
            cookie: cookie.map(Into::into),
            weight,
            weight_total: DEFAULT_WEIGHT_TOTAL,
            affinity: CanaryAffinity::Sticky,
            sessions: None,
            load_balance: LoadBalance::RoundRobin,
            upstream_hash: None,
            own_affinity: None,
        }
    }

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn by_header(rule: HeaderRule) -> Canary {
        canary(Some(CanaryHeader { name: HeaderName::from_static("x-canary"), rule }), Some("c"), 0)
    }

    fn no_roll(_: u64) -> u64 {
        panic!("the weight should not decide")
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = by_header(HeaderRule::AlwaysOrNever);
        assert!(c.chooses(&headers(&[("x-canary", "always")]), no_roll));
        assert!(!c.chooses(&headers(&[("x-canary", "never"), ("cookie", "c=always")]), no_roll));
        assert!(c.chooses(&headers(&[("x-canary", "other"), ("cookie", "a=1; C=always")]), |_| 0));
        assert!(!c.chooses(&headers(&[("cookie", "c=never")]), no_roll));
        assert!(!c.chooses(&headers(&[("cookie", "c=maybe")]), |_| 0), "weight 0");
    }

    #[test]
    fn header_values_and_patterns() {
        let value = by_header(HeaderRule::Value(HeaderValue::from_static("DoCanary")));
        assert!(value.chooses(&headers(&[("x-canary", "DoCanary")]), no_roll));
        assert!(!value.chooses(&headers(&[("x-canary", "always")]), |_| 0));
        let pattern = by_header(HeaderRule::Pattern(regex::bytes::Regex::new("^Do[A-Z][a-z]+y$").unwrap()));
        assert!(pattern.chooses(&headers(&[("x-canary", "DoCanary")]), no_roll));
        assert!(!pattern.chooses(&headers(&[("x-canary", "Docanary")]), |_| 0));
        let broken = by_header(HeaderRule::BrokenPattern);
        assert!(!broken.chooses(&headers(&[("x-canary", "x"), ("cookie", "c=always")]), no_roll));
        assert!(broken.chooses(&headers(&[("cookie", "c=always")]), no_roll));
    }

    #[test]
    fn repeated_header_lines_are_judged_joined() {
        let c = by_header(HeaderRule::Value(HeaderValue::from_static("a, b")));
        assert!(c.chooses(&headers(&[("x-canary", "a"), ("x-canary", "b")]), no_roll));
        assert!(!c.chooses(&headers(&[("x-canary", "a")]), |_| 0));
        let always = by_header(HeaderRule::AlwaysOrNever);
        assert!(!always.chooses(&headers(&[("x-canary", "always"), ("x-canary", "always")]), |_| 0));
    }

    /// balancer.lua's `route_to_alternative_balancer`: the main backend's session first, even
    /// over `always`; then the canary's, unless `legacy`.
    #[test]
    fn sessions_stay_with_their_backend() {
        let sessions = CanarySessions { cookie: "aff".into(), main_key: "m".into(), canary_key: "c".into() };
        let sticky = Canary { sessions: Some(sessions), ..by_header(HeaderRule::AlwaysOrNever) };
        assert!(!sticky.chooses(&headers(&[("x-canary", "always"), ("cookie", "aff=e1|m")]), no_roll));
        assert!(sticky.chooses(&headers(&[("x-canary", "never"), ("cookie", "aff=e2|c")]), no_roll));
        assert!(sticky.chooses(&headers(&[("x-canary", "always"), ("cookie", "aff=e2|other")]), no_roll));
        assert!(sticky.chooses(&headers(&[("x-canary", "always"), ("cookie", "AFF=e1|m")]), no_roll));
        let legacy = Canary { affinity: CanaryAffinity::Legacy, ..sticky.clone() };
        assert!(!legacy.chooses(&headers(&[("cookie", "aff=e2|c")]), |_| 0));
        assert!(!legacy.chooses(&headers(&[("x-canary", "always"), ("cookie", "aff=e1|m")]), no_roll));
    }

    #[test]
    fn weight_is_a_share_of_the_total() {
        let c = Canary { weight: 30, ..canary(None, None, 30) };
        assert!(c.chooses(&HeaderMap::new(), |n| n - 71));
        assert!(!c.chooses(&HeaderMap::new(), |n| n - 70));
    }
}
