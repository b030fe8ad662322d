//! The client a request is from: its address, which feeds `X-Forwarded-For`, `X-Real-IP`, the
//! source ranges, rate limits, `$remote_addr`, the auth subrequest and the access log; and the
//! scheme, port and host it used, when a trusted proxy in front says so.
//!
//! The TCP peer is the client unless it is a trusted proxy (`proxy-real-ip-cidr`, see
//! `ostium_model::ClientAddressing`): then the source of its PROXY header is, decided once per
//! connection, and with `use-forwarded-headers` or `enable-real-ip` the forwarded-for list of
//! each request, read from the right past trusted proxies (nginx's realip module with
//! `real_ip_recursive on`). An untrusted peer's headers are never read.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ostium_model::ClientAddressing;

use crate::proxy_protocol::ProxyHeader;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Who a request is from, as far as the proxy may believe what it is told.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    /// The client's address. Its port is the peer's or the PROXY header's source port, or the
    /// one a forwarded-for entry carries (0 when it carries none), as nginx's `$remote_port`.
    pub(crate) address: SocketAddr,
    /// The address's IP as a header value (`X-Real-IP`, `$remote_addr`).
    pub(crate) ip: HeaderValue,
    /// `X-Forwarded-For` when it says more than `ip`: a trusted proxy's list with the proxy
    /// appended (`compute-full-forwarded-for`).
    forwarded_for: Option<HeaderValue>,
    /// The scheme the client used, when a trusted proxy says (`X-Forwarded-Proto`, or a PROXY
    /// header to port 443); otherwise the connection's.
    scheme: Option<HeaderValue>,
    /// The port the client used, when a trusted proxy says (`X-Forwarded-Port`, or the PROXY
    /// header's destination port).
    pub(crate) port: Option<HeaderValue>,
    /// The host the client asked for, when a trusted proxy says (`X-Forwarded-Host`).
    pub(crate) host: Option<HeaderValue>,
}

impl Client {
    /// The client of a connection from `peer`: the source of its PROXY header when `peer` is a
    /// trusted proxy, else `peer` itself (as nginx's `real_ip_header proxy_protocol` with
    /// `set_real_ip_from`). A header's destination port is the port the client used, and port
    /// 443 means HTTPS (ingress-nginx's lua_ingress.lua).
    pub(crate) fn of_connection(
        peer: SocketAddr,
        header: Option<ProxyHeader>,
        rules: &ClientAddressing,
    ) -> Self {
        let addresses = header.and_then(|header| header.addresses).filter(|_| rules.trusts(peer.ip()));
        let Some((source, destination)) = addresses else { return Self::at(peer) };
        let mut client = Self::at(source);
        client.port = Some(HeaderValue::from(destination.port()));
        if destination.port() == 443 {
            client.scheme = Some(HeaderValue::from_static("https"));
        }
        client
    }

    /// The client of a request on a connection whose client is `hop`, when the rules read
    /// forwarded headers and `hop` is a trusted proxy; `None` otherwise (`hop` is the client).
    pub(crate) fn forwarded(rules: &ClientAddressing, hop: &Client, headers: &HeaderMap) -> Option<Self> {
        let forwarded = rules.forwarded.as_ref()?;
        let hop_ip = hop.address.ip();
        if !rules.trusts(hop_ip) {
            return None;
        }
        let values = headers.get_all(&forwarded.client_header).iter().map(HeaderValue::as_bytes);
        let mut client = match rules.forwarded_client(hop_ip, values) {
            Some(address) => Self { scheme: hop.scheme.clone(), port: hop.port.clone(), ..Self::at(address) },
            None => hop.clone(),
        };
        if forwarded.scheme_and_host {
            // lua_ingress.lua: X-Forwarded-Proto, -Port and -Host as sent; a PROXY header to
            // port 443 still means HTTPS.
            if let Some(scheme) = headers.get(X_FORWARDED_PROTO).filter(|_| hop.scheme.is_none()) {
                client.scheme = Some(scheme.clone());
            }
            if let Some(port) = headers.get(X_FORWARDED_PORT) {
                client.port = Some(port.clone());
            }
            if let Some(host) = headers.get(X_FORWARDED_HOST).and_then(first_host) {
                client.host = Some(host);
            }
        }
        if forwarded.full_forwarded_for {
            client.forwarded_for = full_forwarded_for(headers, &hop.ip);
        }
        Some(client)
    }

    fn at(address: SocketAddr) -> Self {
        let ip =
            HeaderValue::from_str(&address.ip().to_string()).expect("an IP address is a valid header value");
        Self { address, ip, forwarded_for: None, scheme: None, port: None, host: None }
    }

    /// `X-Forwarded-For` for the backend and the auth service.
    pub(crate) fn forwarded_for(&self) -> &HeaderValue {
        self.forwarded_for.as_ref().unwrap_or(&self.ip)
    }

    /// The scheme the client used (`X-Forwarded-Proto`, `X-Scheme`): a trusted proxy's word,
    /// else the connection's.
    pub(crate) fn scheme(&self, is_tls: bool) -> HeaderValue {
        match &self.scheme {
            Some(scheme) => scheme.clone(),
            None if is_tls => HeaderValue::from_static("https"),
            None => HeaderValue::from_static("http"),
        }
    }

    /// Whether the client used HTTPS, for redirects: anything but `http` counts, as
    /// lua_ingress.lua's `redirect_to_https` reads `$pass_access_scheme`.
    pub(crate) fn used_tls(&self, is_tls: bool) -> bool {
        self.scheme.as_ref().map_or(is_tls, |scheme| scheme.as_bytes() != b"http")
    }
}

/// nginx.tmpl's `$full_x_forwarded_for`: the `X-Forwarded-For` the trusted proxy sent, with
/// the proxy appended.
fn full_forwarded_for(headers: &HeaderMap, hop: &HeaderValue) -> Option<HeaderValue> {
    let mut values = headers.get_all(X_FORWARDED_FOR).iter().peekable();
    values.peek()?;
    let mut joined = Vec::with_capacity(64);
    for value in values {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(hop.as_bytes());
    HeaderValue::from_bytes(&joined).ok()
}

/// The first host of an `X-Forwarded-Host` list.
fn first_host(value: &HeaderValue) -> Option<HeaderValue> {
    let first = value.as_bytes().split(|&b| b == b',').next()?.trim_ascii();
    (!first.is_empty()).then(|| HeaderValue::from_bytes(first).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use ostium_model::ForwardedHeaders;

    use super::*;

    fn rules(trusted: &str, forwarded: Option<ForwardedHeaders>) -> ClientAddressing {
        ClientAddressing { trusted: Some(trusted.parse().unwrap()), forwarded, ..ClientAddressing::default() }
    }

    fn use_forwarded_headers(full: bool) -> Option<ForwardedHeaders> {
        Some(ForwardedHeaders {
            client_header: X_FORWARDED_FOR,
            scheme_and_host: true,
            full_forwarded_for: full,
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    fn header(source: &str, destination: &str) -> Option<ProxyHeader> {
        Some(ProxyHeader { addresses: Some((source.parse().unwrap(), destination.parse().unwrap())) })
    }

    #[test]
    fn a_trusted_peer_names_the_client_in_its_proxy_header() {
        let rules = rules("10.0.0.0/8", None);
        let client = Client::of_connection(
            "10.0.0.1:5000".parse().unwrap(),
            header("203.0.113.7:4711", "192.0.2.1:443"),
            &rules,
        );
        assert_eq!(client.address, "203.0.113.7:4711".parse().unwrap());
        assert_eq!(client.ip, "203.0.113.7");
        assert_eq!(client.port.as_ref().unwrap(), "443");
        assert_eq!(client.scheme(false), "https", "PROXY to port 443 is HTTPS");
        assert!(client.used_tls(false));

        let untrusted = Client::of_connection(
            "192.0.2.9:5000".parse().unwrap(),
            header("203.0.113.7:4711", "192.0.2.1:443"),
            &rules,
        );
        assert_eq!(untrusted.ip, "192.0.2.9");
        assert_eq!(untrusted.scheme(false), "http");
        let local = Client::of_connection(
            "10.0.0.1:5000".parse().unwrap(),
            Some(ProxyHeader { addresses: None }),
            &rules,
        );
        assert_eq!(local.ip, "10.0.0.1");
    }

    #[test]
    fn forwarded_headers_count_from_trusted_peers_only() {
        let rules = rules("10.0.0.0/8", use_forwarded_headers(false));
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-host", "shop.example.com, lb.internal"),
        ]);
        let trusted = Client::at("10.0.0.1:5000".parse().unwrap());
        let client = Client::forwarded(&rules, &trusted, &sent).unwrap();
        assert_eq!(client.ip, "203.0.113.7");
        assert_eq!(client.forwarded_for(), "203.0.113.7");
        assert_eq!(client.scheme(false), "https");
        assert_eq!(client.port.as_ref().unwrap(), "8443");
        assert_eq!(client.host.as_ref().unwrap(), "shop.example.com");

        let untrusted = Client::at("192.0.2.9:5000".parse().unwrap());
        assert!(Client::forwarded(&rules, &untrusted, &sent).is_none());
    }

    #[test]
    fn enable_real_ip_alone_takes_the_address_only() {
        let forwarded = ForwardedHeaders { scheme_and_host: false, ..use_forwarded_headers(false).unwrap() };
        let rules = rules("10.0.0.0/8", Some(forwarded));
        let sent = headers(&[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")]);
        let client = Client::forwarded(&rules, &Client::at("10.0.0.1:5000".parse().unwrap()), &sent).unwrap();
        assert_eq!(client.ip, "203.0.113.7");
        assert_eq!(client.scheme(false), "http");
        assert!(!client.used_tls(false));
    }

    #[test]
    fn the_full_forwarded_for_appends_the_trusted_peer() {
        let rules = rules("10.0.0.0/8", use_forwarded_headers(true));
        let hop = Client::at("10.0.0.1:5000".parse().unwrap());
        let sent =
            headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7"), ("x-forwarded-for", "10.0.0.5")]);
        let client = Client::forwarded(&rules, &hop, &sent).unwrap();
        assert_eq!(client.ip, "203.0.113.7");
        assert_eq!(client.forwarded_for(), "198.51.100.1, 203.0.113.7, 10.0.0.5, 10.0.0.1");
        let client = Client::forwarded(&rules, &hop, &HeaderMap::new()).unwrap();
        assert_eq!(client.forwarded_for(), "10.0.0.1");
    }

    #[test]
    fn a_proxy_header_to_port_443_wins_over_a_forwarded_scheme() {
        let rules = rules("10.0.0.0/8", use_forwarded_headers(false));
        let hop = Client::of_connection(
            "10.0.0.1:5000".parse().unwrap(),
            header("10.0.0.2:4711", "192.0.2.1:443"),
            &rules,
        );
        let sent = headers(&[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "http")]);
        let client = Client::forwarded(&rules, &hop, &sent).unwrap();
        assert_eq!(client.ip, "203.0.113.7");
        assert_eq!(client.scheme(false), "https");
    }
}
