//! Endpoint choice that sticks, as ingress-nginx's Lua balancers: `affinity: cookie` (a session
//! cookie names the endpoint; `balancer/sticky*.lua`) and `upstream-hash-by` (a key of the
//! request does; `balancer/chash.lua`, `chashsubset.lua`). Both are decided from the request
//! before it is forwarded; the endpoint is picked per try, and a session cookie chosen on the
//! way goes with the endpoint's answer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::USER_AGENT;
use ostium_model::{
    Affinity, AffinityMode, Endpoint, Endpoints, SameSite, StableHasher, same_site_none_compatible,
};

use crate::canary::Balancing;
use crate::policy::{Original, cookie, render};

/// How a request's endpoint is tied to the request.
#[derive(Debug)]
pub(crate) enum Stickiness {
    /// `affinity: cookie`.
    Cookie(Session),
    /// `upstream-hash-by`: the key's hash, and the subset size.
    Hash { key: u64, subset: Option<NonZeroU32> },
}

/// A request of a route with cookie affinity.
#[derive(Debug)]
pub(crate) struct Session {
    affinity: Arc<Affinity>,
    /// What the request's cookie names: the hash of its key (balanced) or an endpoint's session
    /// id (persistent); `None` without a usable cookie.
    named: Option<u64>,
    https: bool,
    /// Whether the user agent takes `SameSite=None`.
    same_site_none: bool,
    /// The value of the cookie to send, once an endpoint was picked anew.
    new_value: Option<[u8; 16]>,
    /// On a route with a canary, the key of the backend this session is with, appended to the
    /// cookie's value as ingress-nginx does (`<key>|<backend key>`).
    backend_key: Option<Arc<str>>,
}

/// How often a balanced session looks for a random key whose endpoint was not tried yet, as
/// ingress-nginx's `MAX_UPSTREAM_CHECKS_COUNT`.
const NEW_KEY_ATTEMPTS: usize = 20;

impl Stickiness {
    /// What ties the request to an endpoint on its route, if anything (cookie affinity wins
    /// over hashing; translation keeps only one).
    pub(crate) fn new(balancing: &Balancing<'_>, original: &Original<'_>) -> Option<Self> {
        if let Some(affinity) = balancing.affinity {
            return Some(Self::Cookie(Session::new(affinity, balancing.session_backend, original)));
        }
        let hash = balancing.upstream_hash?;
        let mut hasher = StableHasher::new();
        render(&hash.key, original, &mut hasher);
        Some(Self::Hash { key: hasher.finish(), subset: hash.subset_size })
    }

    /// The endpoint for a try; `None` leaves the choice to the balancer. `tried` are the
    /// endpoints tried before, `retry` whether a try failed before this one.
    pub(crate) fn pick(
        &mut self,
        endpoints: &Endpoints,
        tried: &[SocketAddr],
        retry: bool,
    ) -> Option<Arc<Endpoint>> {
        match self {
            Self::Cookie(session) => session.pick(endpoints, tried, retry),
            Self::Hash { key, subset: None } => endpoints.by_hash(*key).cloned(),
            Self::Hash { key, subset: Some(size) } => {
                let chosen = fastrand::usize(..(size.get() as usize).min(endpoints.len()).max(1));
                endpoints.subset_by_hash(*key, *size).nth(chosen).cloned()
            }
        }
    }

    /// The `Set-Cookie` for the answer, when the session's endpoint was picked anew.
    pub(crate) fn set_cookie(&self) -> Option<HeaderValue> {
        match self {
            Self::Cookie(session) => session.set_cookie(SystemTime::now()),
            Self::Hash { .. } => None,
        }
    }
}

// === impl Session ===

impl Session {
    fn new(affinity: &Arc<Affinity>, backend_key: Option<&Arc<str>>, original: &Original<'_>) -> Self {
        let settings = &affinity.cookie;
        // The value is `key` or ingress-nginx's `key|backend`; on a route with a canary, a cookie
        // of the other backend names no endpoint here.
        let key = cookie(original.headers, &settings.name).and_then(|value| {
            let (key, backend) = value.split_once('|').map_or((value, None), |(k, b)| (k, Some(b)));
            (backend_key.is_none() || backend == backend_key.map(|k| &**k)).then_some(key)
        });
        let named = key.filter(|k| !k.is_empty()).and_then(|key| match affinity.mode {
            AffinityMode::Balanced => Some(StableHasher::hash(key.as_bytes())),
            AffinityMode::Persistent => u64::from_str_radix(key, 16).ok(),
        });
        let same_site_none = !settings.conditional_same_site_none
            || same_site_none_compatible(original.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()));
        Self {
            affinity: affinity.clone(),
            named,
            https: original.connection.is_tls,
            same_site_none,
            new_value: None,
            backend_key: backend_key.cloned(),
        }
    }

    /// As `sticky.lua`'s `balance`: the cookie's endpoint, unless there is none, or a try failed
    /// and `session-cookie-change-on-failure` is on; then a new one, not tried yet, and a new
    /// cookie. The cookie's endpoint is used whatever its health, as ingress-nginx.
    fn pick(&mut self, endpoints: &Endpoints, tried: &[SocketAddr], retry: bool) -> Option<Arc<Endpoint>> {
        // The cookie names what this try picks, never an endpoint of an earlier try.
        self.new_value = None;
        let mode = self.affinity.mode;
        let named = self.named.and_then(|named| match mode {
            AffinityMode::Balanced => endpoints.by_hash(named),
            AffinityMode::Persistent => endpoints.by_session_id(named),
        });
        if let Some(endpoint) = named
            && !(retry && self.affinity.change_on_failure)
        {
            return Some(endpoint.clone());
        }
        let (endpoint, value) = match mode {
            AffinityMode::Balanced => (0..NEW_KEY_ATTEMPTS).find_map(|_| {
                let key = hex16(fastrand::u64(..));
                let endpoint = endpoints.by_hash(StableHasher::hash(&key))?;
                (!tried.contains(&endpoint.addr)).then(|| (endpoint.clone(), key))
            })?,
            AffinityMode::Persistent => {
                let untried: Vec<&Arc<Endpoint>> =
                    endpoints.iter().filter(|e| !tried.contains(&e.addr)).collect();
                let endpoint = fastrand::choice(untried)?;
                (endpoint.clone(), hex16(endpoint.session_id))
            }
        };
        self.new_value = Some(value);
        Some(endpoint)
    }

    /// The cookie as `resty.cookie` writes it for `sticky.lua`.
    fn set_cookie(&self, now: SystemTime) -> Option<HeaderValue> {
        let value = self.new_value.as_ref()?;
        let cookie = &self.affinity.cookie;
        let mut out = String::with_capacity(160);
        out.push_str(&cookie.name);
        out.push('=');
        out.push_str(std::str::from_utf8(value).ok()?);
        if let Some(backend) = &self.backend_key {
            out.push('|');
            out.push_str(backend);
        }
        if let Some(seconds) = cookie.expires {
            let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            out.push_str("; Expires=");
            cookie_time(now.saturating_add(seconds), &mut out);
        }
        if let Some(max_age) = cookie.max_age {
            let _ = write!(out, "; Max-Age={max_age}");
        }
        if let Some(domain) = &cookie.domain {
            let _ = write!(out, "; Domain={domain}");
        }
        let _ = write!(out, "; Path={}", cookie.path);
        if cookie.secure || self.https {
            out.push_str("; Secure");
        }
        out.push_str("; HttpOnly");
        match cookie.same_site {
            Some(SameSite::None) if !self.same_site_none => {}
            Some(same_site) => {
                let _ = write!(out, "; SameSite={same_site}");
            }
            None => {}
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// `n` as 16 lower-case hex digits, on the stack.
fn hex16(n: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    std::array::from_fn(|i| DIGITS[(n >> (60 - 4 * i)) as usize & 0xf])
}

/// nginx's `ngx_http_cookie_time` (`ngx.cookie_time`): `Thu, 26-Nov-26 16:00:00 GMT`, the year
/// in two digits up to 2037 and in four after.
fn cookie_time(unix_seconds: i64, out: &mut String) {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, seconds) = (unix_seconds.div_euclid(86_400), unix_seconds.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm), the era starting on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // from March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(month - 1) as usize];
    let year = if year > 2037 { year } else { year % 100 };
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let _ = write!(out, "{weekday}, {day:02}-{month}-{year:02} {hour:02}:{minute:02}:{second:02} GMT");
}

#[cfg(test)]
mod tests {
    use ostium_model::SessionCookie;

    use super::*;

    fn session(cookie: SessionCookie, https: bool, same_site_none: bool) -> Session {
        let affinity = Arc::new(Affinity { mode: AffinityMode::Balanced, cookie, change_on_failure: false });
        Session {
            affinity,
            named: None,
            https,
            same_site_none,
            new_value: Some(*b"0123456789abcdef"),
            backend_key: None,
        }
    }

    fn cookie() -> SessionCookie {
        SessionCookie {
            name: "S".into(),
            path: "/".into(),
            domain: None,
            expires: Some(-60),
            max_age: None,
            same_site: Some(SameSite::None),
            conditional_same_site_none: true,
            secure: false,
        }
    }

    /// sticky.lua: `Secure` follows `$https` unless `session-cookie-secure`; `Expires` is
    /// `ngx.cookie_time(ngx.time() + expires)`.
    #[test]
    fn keys_are_sixteen_hex_digits() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex16(0xf), b"000000000000000f");
    }

    #[test]
    fn secure_follows_https_and_expires_counts_from_now() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let written = |s: Session| s.set_cookie(now).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            written(session(cookie(), true, true)),
            "S=0123456789abcdef; Expires=Thu, 01-Jan-70 23:59:00 GMT; Path=/; Secure; HttpOnly; SameSite=None"
        );
        assert_eq!(
            written(session(cookie(), false, false)),
            "S=0123456789abcdef; Expires=Thu, 01-Jan-70 23:59:00 GMT; Path=/; HttpOnly"
        );
        let unchosen = Session { new_value: None, ..session(cookie(), false, true) };
        assert!(unchosen.set_cookie(now).is_none(), "no new endpoint, no cookie");
    }

    #[test]
    fn cookie_time_is_nginxs() {
        let mut out = String::new();
        cookie_time(0, &mut out);
        assert_eq!(out, "Thu, 01-Jan-70 00:00:00 GMT");
        out.clear();
        cookie_time(1_795_651_200 + 3_723, &mut out); // 2026-11-26 01:02:03
        assert_eq!(out, "Thu, 26-Nov-26 01:02:03 GMT");
        out.clear();
        cookie_time(951_782_400, &mut out); // a leap day
        assert_eq!(out, "Tue, 29-Feb-00 00:00:00 GMT");
        out.clear();
        cookie_time(2_240_611_200, &mut out); // after 2037: four digits
        assert_eq!(out, "Tue, 01-Jan-2041 00:00:00 GMT");
    }
}
