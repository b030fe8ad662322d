//! Where a request's client address comes from, and the addresses refused outright: the
//! `--configmap` keys `use-proxy-protocol`, `proxy-protocol-header-timeout`,
//! `use-forwarded-headers`, `enable-real-ip`, `forwarded-for-header`,
//! `compute-full-forwarded-for`, `proxy-real-ip-cidr` and `block-cidrs`.
//!
//! As nginx's realip module with `real_ip_recursive on` (ingress-nginx's nginx.tmpl): the TCP
//! peer is the client unless it is one of the trusted proxies (`set_real_ip_from`); a trusted
//! peer's PROXY header names the client, and with forwarded headers the header's list is read
//! from the right, skipping trusted proxies, down to the first address that is not one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::HeaderName;

use crate::CidrSet;

/// How the proxy finds the client address of connections and requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddressing {
    /// `proxy-real-ip-cidr`: the peers whose word on the client address is taken (ingress-nginx's
    /// default `0.0.0.0/0`: every IPv4 peer); `None`: no peer is.
    pub trusted: Option<CidrSet>,
    /// `use-proxy-protocol`: every connection must start with a PROXY header (v1 or v2).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `use-forwarded-headers` or `enable-real-ip`: the client address a trusted peer forwards.
    pub forwarded: Option<ForwardedHeaders>,
    /// `block-cidrs`: clients refused on every host (403).
    pub blocked: Option<Blocked>,
}

/// `use-proxy-protocol: "true"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// `proxy-protocol-header-timeout` (5 s): a connection whose header is not complete by then
    /// is closed.
    pub header_timeout: Duration,
}

/// What a trusted peer's request headers say of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `forwarded-for-header` (`X-Forwarded-For`): the list of addresses the client came through.
    pub client_header: HeaderName,
    /// `use-forwarded-headers` (rather than `enable-real-ip` alone): `X-Forwarded-Proto`,
    /// `X-Forwarded-Port` and `X-Forwarded-Host` of a trusted peer are passed on, and its
    /// `X-Forwarded-Proto` decides whether the request came over HTTPS (redirects).
    pub scheme_and_host: bool,
    /// `compute-full-forwarded-for` (with `use-forwarded-headers` only): `X-Forwarded-For`
    /// upstream is a trusted peer's list with the peer appended, rather than the client alone.
    pub full_forwarded_for: bool,
}

/// `block-cidrs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Clients in these networks get 403.
    Networks(CidrSet),
    /// The list does not parse: every request is refused (503) rather than served unblocked.
    Unreadable,
}

impl Default for ClientAddressing {
    fn default() -> Self {
        Self { trusted: Some(every_ipv4_address()), proxy_protocol: None, forwarded: None, blocked: None }
    }
}

/// ingress-nginx's default `proxy-real-ip-cidr`.
pub fn every_ipv4_address() -> CidrSet {
    // A valid network: the parse cannot fail.
    "0.0.0.0/0".parse().expect("0.0.0.0/0 is a network")
}

impl ClientAddressing {
    /// Whether `peer` may say who the client is.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.as_ref().is_some_and(|trusted| trusted.contains(peer))
    }

    /// The client behind a forwarded-for list (`X-Forwarded-For: client, proxy1, proxy2`) that
    /// `peer` sent: read from the right while the address read so far is a trusted proxy, as
    /// nginx's `real_ip_recursive on`. `values` are the header's fields in order; an entry that
    /// is no address (optionally with a port) ends the walk. `None` when `peer` is not trusted or
    /// the list names nobody.
    pub fn forwarded_client<'v>(
        &self,
        peer: IpAddr,
        values: impl DoubleEndedIterator<Item = &'v [u8]>,
    ) -> Option<SocketAddr> {
        let mut current = peer;
        let mut found = None;
        for value in values.rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                if !self.trusts(current) {
                    return found;
                }
                let Some(address) = std::str::from_utf8(entry).ok().and_then(parse_address) else {
                    return found;
                };
                current = address.ip();
                found = Some(address);
            }
        }
        found
    }
}

/// An address as nginx's `ngx_parse_addr_port` reads it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`
/// or `[2001:db8::1]:80`; the port is 0 when none is given.
fn parse_address(entry: &str) -> Option<SocketAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address);
    }
    let ip = entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusting(networks: &str) -> ClientAddressing {
        ClientAddressing { trusted: Some(networks.parse().unwrap()), ..ClientAddressing::default() }
    }

    fn client(rules: &ClientAddressing, peer: &str, values: &[&str]) -> Option<String> {
        let values = values.iter().map(|v| v.as_bytes());
        rules.forwarded_client(peer.parse().unwrap(), values).map(|a| a.ip().to_string())
    }

    #[test]
    fn the_list_is_read_from_the_right_past_trusted_proxies() {
        let rules = trusting("10.0.0.0/8");
        assert_eq!(client(&rules, "10.0.0.1", &["203.0.113.7, 10.0.0.9"]).as_deref(), Some("203.0.113.7"));
        assert_eq!(
            client(&rules, "10.0.0.1", &["198.51.100.1, 203.0.113.7, 10.0.0.9"]).as_deref(),
            Some("203.0.113.7"),
            "a client's own claims left of the first untrusted address are not taken"
        );
        assert_eq!(
            client(&rules, "10.0.0.1", &["198.51.100.1", "203.0.113.7,10.0.0.9"]).as_deref(),
            Some("203.0.113.7"),
            "several fields are one list"
        );
        assert_eq!(client(&rules, "10.0.0.1", &["10.0.0.3, 10.0.0.9"]).as_deref(), Some("10.0.0.3"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client() {
        let rules = trusting("10.0.0.0/8");
        assert_eq!(client(&rules, "192.0.2.1", &["203.0.113.7"]), None);
        assert_eq!(client(&rules, "10.0.0.1", &[]), None);
        assert_eq!(client(&rules, "10.0.0.1", &[" , "]), None);
    }

    #[test]
    fn an_entry_that_is_no_address_ends_the_walk() {
        let rules = trusting("10.0.0.0/8");
        assert_eq!(client(&rules, "10.0.0.1", &["unknown"]), None);
        assert_eq!(
            client(&rules, "10.0.0.1", &["203.0.113.7, garbage, 10.0.0.9"]).as_deref(),
            Some("10.0.0.9")
        );
    }

    #[test]
    fn addresses_may_carry_ports() {
        let rules = trusting("0.0.0.0/0");
        let values = [b"[2001:db8::7]:4711".as_slice()];
        let address = rules.forwarded_client("10.0.0.1".parse().unwrap(), values.into_iter()).unwrap();
        assert_eq!(address, "[2001:db8::7]:4711".parse().unwrap());
        assert_eq!(client(&rules, "10.0.0.1", &["203.0.113.7:80"]).as_deref(), Some("203.0.113.7"));
        assert_eq!(client(&rules, "10.0.0.1", &["2001:db8::8"]).as_deref(), Some("2001:db8::8"));
        assert_eq!(client(&rules, "10.0.0.1", &["[2001:db8::9]"]).as_deref(), Some("2001:db8::9"));
    }

    #[test]
    fn the_default_trusts_every_ipv4_peer_and_no_ipv6_one() {
        let rules = ClientAddressing::default();
        assert!(rules.trusts("203.0.113.7".parse().unwrap()));
        assert!(!rules.trusts("2001:db8::1".parse().unwrap()));
        let nobody = ClientAddressing { trusted: None, ..ClientAddressing::default() };
        assert!(!nobody.trusts("203.0.113.7".parse().unwrap()));
    }
}
