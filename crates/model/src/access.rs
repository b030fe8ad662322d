//! Access by client address: `allowlist-source-range` (and its older spelling
//! `whitelist-source-range`), `denylist-source-range`, and `satisfy`.
//!
//! As ingress-nginx renders them (`deny` lines first, then `allow` lines and `deny all`): an
//! address in the denylist is refused, then one outside a non-empty allowlist. Networks are
//! compiled into sorted, merged ranges, so a check is a binary search.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A set of IPv4 and IPv6 networks.
#[derive(Clone, PartialEq, Eq)]
pub struct CidrSet {
    /// Merged, sorted, inclusive ranges.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// The networks as written, normalised (`10.1.2.3/8` is `10.0.0.0/8`), sorted.
    networks: Vec<String>,
}

/// Who may reach a route by its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceAccess {
    pub allow: Option<CidrSet>,
    pub deny: Option<CidrSet>,
}

/// How the address check and basic authentication combine (`satisfy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Satisfy {
    /// Both must pass (nginx's default).
    #[default]
    All,
    /// Either suffices: an allowed address needs no credentials.
    Any,
}

/// A network list entry that is neither an address nor a network.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an IP address or network")]
pub struct InvalidNetwork(pub String);

// === impl CidrSet ===

impl FromStr for CidrSet {
    type Err = InvalidNetwork;

    /// A comma-separated list of addresses and networks (`10.0.0.0/8, 192.168.1.7, 2001:db8::/32`).
    fn from_str(list: &str) -> Result<Self, InvalidNetwork> {
        let mut set = Self { v4: Vec::new(), v6: Vec::new(), networks: Vec::new() };
        for entry in list.split(',').map(str::trim) {
            let invalid = || InvalidNetwork(entry.to_owned());
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits.parse::<u8>().map_err(|_| invalid())?)),
                None => (entry, None),
            };
            match address.parse::<IpAddr>().map_err(|_| invalid())? {
                IpAddr::V4(v4) => {
                    let bits = bits.unwrap_or(32);
                    if bits > 32 {
                        return Err(invalid());
                    }
                    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                    let first = u32::from(v4) & mask;
                    set.v4.push((first, first | !mask));
                    set.networks.push(format!("{}/{bits}", std::net::Ipv4Addr::from(first)));
                }
                IpAddr::V6(v6) => {
                    let bits = bits.unwrap_or(128);
                    if bits > 128 {
                        return Err(invalid());
                    }
                    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                    let first = u128::from(v6) & mask;
                    set.v6.push((first, first | !mask));
                    set.networks.push(format!("{}/{bits}", std::net::Ipv6Addr::from(first)));
                }
            }
        }
        set.v4 = merged(set.v4);
        set.v6 = merged(set.v6);
        set.networks.sort();
        set.networks.dedup();
        Ok(set)
    }
}

impl CidrSet {
    /// Whether the address is in one of the networks (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        match address.to_canonical() {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }
}

fn merged<T: Ord + Copy + num::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(previous) if previous.1.next().is_none_or(|after| first <= after) => {
                previous.1 = previous.1.max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], address: T) -> bool {
    // The last range starting at or before the address is the only candidate.
    let after = ranges.partition_point(|&(first, _)| first <= address);
    after > 0 && address <= ranges[after - 1].1
}

/// The next integer, for merging adjacent ranges.
mod num {
    pub trait Successor: Sized {
        fn next(self) -> Option<Self>;
    }

    impl Successor for u32 {
        fn next(self) -> Option<Self> {
            self.checked_add(1)
        }
    }

    impl Successor for u128 {
        fn next(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

impl fmt::Display for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.networks.join(","))
    }
}

impl fmt::Debug for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CidrSet({self})")
    }
}

// === impl SourceAccess ===

impl SourceAccess {
    /// Whether a client at `address` passes: not denied, and allowed when there is an allowlist.
    pub fn permits(&self, address: IpAddr) -> bool {
        self.judge(address) != AddressVerdict::Denied
    }

    /// What nginx's access rules (the denylist's `deny`s, then the allowlist's `allow`s and a
    /// final `deny all`) say of `address`. Only an allowlist match is an `allow`: an address a
    /// denylist alone does not name matches no rule, which `satisfy any` does not count as a pass.
    pub fn judge(&self, address: IpAddr) -> AddressVerdict {
        if self.deny.as_ref().is_some_and(|deny| deny.contains(address)) {
            return AddressVerdict::Denied;
        }
        match &self.allow {
            Some(allow) if allow.contains(address) => AddressVerdict::Allowed,
            Some(_) => AddressVerdict::Denied,
            None => AddressVerdict::NoRule,
        }
    }
}

/// An address judged by a route's ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressVerdict {
    /// An allowlist names it (and no denylist does).
    Allowed,
    /// A denylist names it, or an allowlist exists and does not.
    Denied,
    /// Only a denylist exists, and it does not name the address.
    NoRule,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CidrSet {
        list.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_addresses_are_matched_by_range() {
        let s = set("10.0.0.0/8, 192.168.1.7,172.16.0.0/12, 2001:db8::/32, ::1");
        for inside in ["10.0.0.0", "10.255.255.255", "192.168.1.7", "172.31.0.1", "2001:db8::5", "::1"] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.0", "192.168.1.8", "172.32.0.0", "2001:db9::", "::2", "9.255.255.255"] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
        assert!(s.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
    }

    #[test]
    fn networks_are_normalised_merged_and_sorted() {
        let s = set("10.1.2.3/8,10.0.0.0/9,0.0.0.0/0");
        assert_eq!(s.to_string(), "0.0.0.0/0,10.0.0.0/8,10.0.0.0/9");
        assert_eq!(s.v4, [(0, u32::MAX)]);
        assert!(set("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(set("::/0").contains(ip("2001:db8::1")));
        assert!(!set("::/0").contains(ip("1.2.3.4")), "IPv6 networks hold no IPv4 address");
        let adjacent = set("10.0.0.0/25,10.0.0.128/25");
        assert_eq!(adjacent.v4.len(), 1);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["", "10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/8,", "::/129", "10.0.0.0/-1", "1.2.3.4/ 8"]
        {
            assert!(bad.parse::<CidrSet>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_denylist_wins_over_the_allowlist() {
        let access = SourceAccess { allow: Some(set("10.0.0.0/8")), deny: Some(set("10.0.0.7")) };
        assert!(access.permits(ip("10.0.0.8")));
        assert!(!access.permits(ip("10.0.0.7")));
        assert!(!access.permits(ip("11.0.0.1")));
        let deny_only = SourceAccess { allow: None, deny: Some(set("10.0.0.7")) };
        assert!(deny_only.permits(ip("11.0.0.1")) && !deny_only.permits(ip("10.0.0.7")));
        assert_eq!(deny_only.judge(ip("11.0.0.1")), AddressVerdict::NoRule);
        assert_eq!(access.judge(ip("10.0.0.8")), AddressVerdict::Allowed);
    }
}
