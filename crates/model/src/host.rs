//! Host rules: exact names and one-label wildcards, as the Ingress spec defines them.
//!
//! See <https://kubernetes.io/docs/concepts/services-networking/ingress/#hostname-wildcards>.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The longest DNS name a host rule or a request host may have.
const MAX_HOST_LEN: usize = 253;

/// A configured host: an exact name (`foo.example.com`) or a wildcard (`*.example.com`) that
/// covers exactly one extra label. Names are stored lower-case; a rule with no host at all is
/// represented by the absence of a `HostRule`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostRule {
    Exact(Arc<str>),
    /// The suffix after `*.`: `Wildcard("example.com")` matches `a.example.com` only.
    Wildcard(Arc<str>),
}

/// How a request host matched. Ordered by precedence: an exact name beats a wildcard, which beats
/// a rule with no host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    Any,
    Wildcard,
    Exact,
}

/// Why a host rule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidHost {
    #[error("host is empty")]
    Empty,
    #[error("host `{0}` is an IP address; Ingress hosts must be DNS names")]
    IpAddress(String),
    #[error("host `{0}` is not a valid DNS name (RFC 1123), or `*.` followed by one")]
    NotDnsName(String),
}

/// A request host as routing compares it: port and one trailing dot removed, ASCII lower-cased,
/// held on the stack so that lookups never allocate.
#[derive(Clone, Copy)]
pub struct NormalizedHost {
    buf: [u8; MAX_HOST_LEN],
    len: u8,
}

/// Normalises the `Host` header (or `:authority`) of a request for matching. `None` when there is
/// no usable name (empty, or longer than a DNS name can be); such requests only match rules
/// with no host.
pub fn normalize_host(authority: &str) -> Option<NormalizedHost> {
    let host = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let mut buf = [0u8; MAX_HOST_LEN];
    for (dst, src) in buf.iter_mut().zip(host.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    Some(NormalizedHost { buf, len: host.len() as u8 })
}

// === impl NormalizedHost ===

impl NormalizedHost {
    pub fn as_str(&self) -> &str {
        // ASCII lower-casing keeps valid UTF-8 valid, so this cannot fail; fall back to "" rather
        // than panic on a request-derived value.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    /// The part a wildcard rule compares: everything after the first label, when that label
    /// is not empty.
    pub fn wildcard_suffix(&self) -> Option<&str> {
        let host = self.as_str();
        match host.split_once('.') {
            Some((label, rest)) if !label.is_empty() && !rest.is_empty() => Some(rest),
            _ => None,
        }
    }
}

impl fmt::Debug for NormalizedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NormalizedHost").field(&self.as_str()).finish()
    }
}

// === impl HostRule ===

impl HostRule {
    /// Whether this rule covers the (normalised) request host.
    pub fn matches(&self, host: &NormalizedHost) -> bool {
        match self {
            Self::Exact(name) => **name == *host.as_str(),
            Self::Wildcard(suffix) => host.wildcard_suffix() == Some(&**suffix),
        }
    }
}

impl FromStr for HostRule {
    type Err = InvalidHost;

    /// Parses a rule host as the Ingress API validates it: a lower-case RFC 1123 subdomain, or
    /// `*.` followed by one; no IP addresses, no port. Upper case is folded.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidHost::Empty);
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(InvalidHost::IpAddress(s.to_owned()));
        }
        let lower = s.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_dns_subdomain(name) {
            return Err(InvalidHost::NotDnsName(s.to_owned()));
        }
        let name: Arc<str> = name.into();
        Ok(if wildcard { Self::Wildcard(name) } else { Self::Exact(name) })
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// RFC 1123 subdomain, lower case: dot-separated labels of `[a-z0-9-]`, each 1..=63 long,
/// neither starting nor ending with `-`, 253 in all.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= MAX_HOST_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> NormalizedHost {
        normalize_host(s).unwrap()
    }

    fn rule(s: &str) -> HostRule {
        s.parse().unwrap()
    }

    /// The wildcard table of the Ingress concept page.
    #[test]
    fn wildcard_matches_one_label_only() {
        let r = rule("*.foo.com");
        assert!(r.matches(&host("bar.foo.com")));
        assert!(!r.matches(&host("baz.bar.foo.com")), "two labels");
        assert!(!r.matches(&host("foo.com")), "zero labels");
    }

    #[test]
    fn wildcard_needs_a_non_empty_label() {
        assert!(!rule("*.foo.com").matches(&host(".foo.com")));
    }

    #[test]
    fn exact_host_ignores_case_port_and_trailing_dot() {
        let r = rule("foo.bar.com");
        for h in ["foo.bar.com", "FOO.Bar.COM", "foo.bar.com:8080", "foo.bar.com.", "Foo.bar.com.:443"] {
            assert!(r.matches(&host(h)), "{h}");
        }
        assert!(!r.matches(&host("foo.bar.co")));
    }

    #[test]
    fn rule_hosts_are_folded_to_lower_case() {
        assert_eq!(rule("Foo.Example.COM"), HostRule::Exact("foo.example.com".into()));
        assert_eq!(rule("*.Example.com"), HostRule::Wildcard("example.com".into()));
    }

    #[test]
    fn ipv6_literal_keeps_brackets_and_drops_port() {
        assert_eq!(host("[::1]:8080").as_str(), "[::1]");
        assert_eq!(host("[::1]").as_str(), "[::1]");
    }

    #[test]
    fn invalid_rule_hosts_are_refused() {
        assert_eq!("".parse::<HostRule>(), Err(InvalidHost::Empty));
        assert!(matches!("10.0.0.1".parse::<HostRule>(), Err(InvalidHost::IpAddress(_))));
        for bad in
            ["*", "*.", "foo..com", "-foo.com", "foo-.com", "foo.com:80", "fo_o.com", "a.*.com", "**.foo.com"]
        {
            assert!(matches!(bad.parse::<HostRule>(), Err(InvalidHost::NotDnsName(_))), "{bad}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(long.parse::<HostRule>().is_err(), "label over 63");
    }

    #[test]
    fn unusable_request_hosts_normalise_to_none() {
        assert!(normalize_host("").is_none());
        assert!(normalize_host(":80").is_none());
        assert!(normalize_host(&"a".repeat(254)).is_none());
    }

    #[test]
    fn exact_beats_wildcard_beats_any() {
        assert!(HostMatch::Exact > HostMatch::Wildcard);
        assert!(HostMatch::Wildcard > HostMatch::Any);
    }
}
