//! Session affinity (`affinity: cookie` and the `session-cookie-*` keys), as ingress-nginx's Lua
//! balancer (`balancer/sticky*.lua`) does it: a cookie ties a client to an endpoint of the
//! route's backend. Its value never shows an endpoint's address in clear:
//!
//! - [`AffinityMode::Balanced`] (the default): the cookie holds a random key, placed on the
//!   endpoints' hash ring ([`crate::HashRing`]). An endpoint leaving moves only its own keys to
//!   the next endpoint on the ring; a new endpoint takes over about its share of keys. The cookie
//!   stays as it is.
//! - [`AffinityMode::Persistent`]: the cookie holds the endpoint's [`crate::Endpoint::session_id`]
//!   (a hash of its address, the same on every replica, so like ingress-nginx's MD5 it can be
//!   matched against guessed pod addresses). Its session never moves; once the endpoint is gone,
//!   another is picked at random and a new cookie is sent.

use std::fmt;

/// `affinity: cookie` and its settings, for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub mode: AffinityMode,
    pub cookie: SessionCookie,
    /// `session-cookie-change-on-failure`: a try after a failed one goes to another endpoint,
    /// and the cookie is changed to name it. Off: the cookie's endpoint is tried again.
    pub change_on_failure: bool,
}

/// `affinity-mode`: what happens to sessions when endpoints come and go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AffinityMode {
    /// Sessions are spread again over the endpoints, moving as few as possible.
    #[default]
    Balanced,
    /// A session stays with its endpoint for as long as the endpoint exists.
    Persistent,
}

/// The session cookie, as ingress-nginx writes it with `resty.cookie`:
/// `name=value; Expires=…; Max-Age=…; Domain=…; Path=…; Secure; HttpOnly; SameSite=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCookie {
    /// `session-cookie-name`: `INGRESSCOOKIE` by default.
    pub name: Box<str>,
    /// `session-cookie-path`, else the route's Ingress path as written (`/` when empty), as
    /// ingress-nginx's `$location_path`.
    pub path: Box<str>,
    /// `session-cookie-domain`.
    pub domain: Option<Box<str>>,
    /// `session-cookie-expires`: `Expires` is this many seconds after the cookie is sent.
    pub expires: Option<i64>,
    /// `session-cookie-max-age`.
    pub max_age: Option<i64>,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: `SameSite=None` is left out for user agents
    /// known to reject it ([`same_site_none_compatible`]).
    pub conditional_same_site_none: bool,
    /// `session-cookie-secure`: always `Secure`; otherwise only on HTTPS requests.
    pub secure: bool,
}

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// The cookie name ingress-nginx uses when `session-cookie-name` is not set.
pub const DEFAULT_SESSION_COOKIE: &str = "INGRESSCOOKIE";

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Lax => "Lax",
            Self::Strict => "Strict",
        }
    }
}

impl fmt::Display for SameSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AffinityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Balanced => "balanced",
            Self::Persistent => "persistent",
        })
    }
}

/// Whether a user agent accepts `SameSite=None`: not the ones Chromium lists as incompatible
/// (Chrome 40–69, iOS 12, Safari on macOS 10.14), as ingress-nginx's `util/same_site.lua`.
/// A request without `User-Agent` counts as compatible.
pub fn same_site_none_compatible(user_agent: Option<&str>) -> bool {
    let Some(agent) = user_agent else { return true };
    let old_chrome = ["Chrome/4", "Chrome/5", "Chrome/6"].iter().any(|v| agent.contains(v));
    let ios_12 = agent.contains("CPU iPhone OS 12") || agent.contains("iPad; CPU OS 12");
    let mac_safari_14 = agent.contains("Macintosh")
        && agent.contains("Intel Mac OS X 10_14")
        && agent.contains("Safari")
        && !agent.contains("Chrome");
    !(old_chrome || ios_12 || mac_safari_14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompatible_user_agents_are_recognised() {
        let incompatible = [
            "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/59.0.3071 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15",
            "Mozilla/5.0 (iPad; CPU OS 12_1 like Mac OS X) AppleWebKit/605.1.15",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Safari/605.1.15",
        ];
        for agent in incompatible {
            assert!(!same_site_none_compatible(Some(agent)), "{agent}");
        }
        let compatible = [
            "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_0) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            "curl/8.0",
        ];
        for agent in compatible {
            assert!(same_site_none_compatible(Some(agent)), "{agent}");
        }
        assert!(same_site_none_compatible(None));
    }
}
