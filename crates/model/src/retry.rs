//! `proxy-next-upstream`, `proxy-next-upstream-tries` and `proxy-next-upstream-timeout`: when a
//! request that failed on one endpoint is passed to another, as nginx's `proxy_next_upstream`.

use std::fmt;
use std::time::Duration;

/// When a request goes to the next endpoint. The default is ingress-nginx's: on a connection
/// error or timeout, three tries in all, no time limit.
///
/// As nginx: a try is followed by another only for a listed failure, while tries are left and
/// the time limit has not passed; a POST, LOCK or PATCH request that reached an endpoint is tried
/// again only with `non_idempotent`; a request whose body was streamed (not buffered) is not
/// tried again once sent. An endpoint already tried is avoided while others are left. When the
/// last try ends in a listed status, that response is the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    /// The failures after which another try is made; none for `off`.
    pub conditions: RetryConditions,
    /// `non_idempotent`: POST, LOCK and PATCH requests are tried again after being sent.
    pub non_idempotent: bool,
    /// Tries in all, the first included (`proxy-next-upstream-tries`); `0`: each endpoint once.
    pub tries: u32,
    /// No try starts once this long has passed since the first began
    /// (`proxy-next-upstream-timeout`); `None`: no limit.
    pub timeout: Option<Duration>,
}

/// A kind of failed try, as `proxy_next_upstream` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCondition {
    /// `error`: connecting, sending the request or reading the response head failed.
    Error,
    /// `timeout`: connecting, sending the request or reading the response head timed out.
    Timeout,
    /// `invalid_header`: the endpoint's response head is empty or malformed.
    InvalidHeader,
    /// `http_<code>`: the endpoint answered with that status.
    Status(u16),
}

/// A set of [`RetryCondition`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryConditions(u16);

/// The statuses `proxy_next_upstream` can name, in its order.
const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

// === impl NextUpstream ===

impl Default for NextUpstream {
    fn default() -> Self {
        let conditions = RetryConditions::default().with(RetryCondition::Error).with(RetryCondition::Timeout);
        Self { conditions, non_idempotent: false, tries: 3, timeout: None }
    }
}

/// nginx's spelling: the conditions (then `non_idempotent`), or `off`.
impl fmt::Display for NextUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conditions == RetryConditions::default() {
            return f.write_str("off");
        }
        write!(f, "{:?}", self.conditions)?;
        if self.non_idempotent {
            f.write_str(" non_idempotent")?;
        }
        Ok(())
    }
}

// === impl RetryCondition ===

impl RetryCondition {
    /// The condition a `proxy_next_upstream` token names (`non_idempotent` and `off` are not
    /// conditions).
    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            "error" => Some(Self::Error),
            "timeout" => Some(Self::Timeout),
            "invalid_header" => Some(Self::InvalidHeader),
            _ => {
                let code = token.strip_prefix("http_")?.parse::<u16>().ok()?;
                STATUSES.contains(&code).then_some(Self::Status(code))
            }
        }
    }

    fn bit(self) -> u16 {
        match self {
            Self::Error => 1,
            Self::Timeout => 1 << 1,
            Self::InvalidHeader => 1 << 2,
            Self::Status(code) => STATUSES.iter().position(|&s| s == code).map_or(0, |i| 1 << (3 + i)),
        }
    }
}

impl fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error => f.write_str("error"),
            Self::Timeout => f.write_str("timeout"),
            Self::InvalidHeader => f.write_str("invalid_header"),
            Self::Status(code) => write!(f, "http_{code}"),
        }
    }
}

// === impl RetryConditions ===

impl RetryConditions {
    /// This set and `condition`.
    pub fn with(self, condition: RetryCondition) -> Self {
        Self(self.0 | condition.bit())
    }

    /// Whether `condition` is in the set (a status `proxy_next_upstream` cannot name never is).
    pub fn contains(self, condition: RetryCondition) -> bool {
        let bit = condition.bit();
        bit != 0 && self.0 & bit == bit
    }

    fn iter(self) -> impl Iterator<Item = RetryCondition> {
        let all = [RetryCondition::Error, RetryCondition::Timeout, RetryCondition::InvalidHeader];
        all.into_iter().chain(STATUSES.map(RetryCondition::Status)).filter(move |c| self.contains(*c))
    }
}

/// The tokens, space-separated.
impl fmt::Debug for RetryConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, condition) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{condition}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_conditions_and_statuses_only_nginx_knows() {
        assert_eq!(RetryCondition::from_token("http_429"), Some(RetryCondition::Status(429)));
        assert_eq!(RetryCondition::from_token("invalid_header"), Some(RetryCondition::InvalidHeader));
        for unknown in ["http_501", "http_", "HTTP_502", "non_idempotent", "off", ""] {
            assert_eq!(RetryCondition::from_token(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_set_holds_what_was_added() {
        let set = RetryConditions::default().with(RetryCondition::Status(502)).with(RetryCondition::Timeout);
        assert!(set.contains(RetryCondition::Status(502)) && set.contains(RetryCondition::Timeout));
        assert!(!set.contains(RetryCondition::Status(503)) && !set.contains(RetryCondition::Error));
        assert!(!set.contains(RetryCondition::Status(501)), "a status nginx cannot name");
        assert_eq!(format!("{set:?}"), "timeout http_502");
    }

    #[test]
    fn the_default_is_ingress_nginx_s() {
        let default = NextUpstream::default();
        assert_eq!(default.to_string(), "error timeout");
        assert_eq!((default.tries, default.timeout), (3, None));
    }
}
