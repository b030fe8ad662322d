//! The upstream side: connections to endpoints (kept with each endpoint, see `pool`), endpoint
//! choice, and passive health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Request, Response, Version};
use ostium_model::{BackendTls, Endpoint, Endpoints, Protocol};

use crate::ProxyConfig;
use crate::pool::{Destination, Dialer, NamePools, PooledBody, Pools, SendError};
use crate::upstream_body::UpstreamBody;

/// What every request to an endpoint shares: the TLS settings of the proxy's own, the pools of
/// names, and the clocks of passive health.
#[derive(Debug)]
pub(crate) struct Upstream {
    default_connect_timeout: Duration,
    /// TLS with the proxy's defaults, offering HTTP/1.1, and HTTP/2 (ALPN).
    https: Arc<rustls::ClientConfig>,
    h2s: Arc<rustls::ClientConfig>,
    names: NamePools,
    started: Instant,
    eject_for_ms: u64,
}

impl Upstream {
    pub(crate) fn new(config: &ProxyConfig, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        let base = upstream_tls_config(provider);
        Self {
            default_connect_timeout: config.connect_timeout,
            https: with_alpn(&base, Protocol::Https),
            h2s: with_alpn(&base, Protocol::Grpcs),
            names: NamePools::default(),
            started: Instant::now(),
            eject_for_ms: config.eject_for.as_millis() as u64,
        }
    }

    /// Sends a request to `destination` with a backend protocol, a route's TLS settings (used
    /// with HTTPS and GRPCS) and a route's connect timeout (`None`: the proxy's).
    pub(crate) async fn request(
        &self,
        protocol: Protocol,
        tls: Option<&Arc<BackendTls>>,
        connect_timeout: Option<Duration>,
        destination: Destination<'_>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let settings = tls.filter(|_| matches!(protocol, Protocol::Https | Protocol::Grpcs));
        let name_pools;
        let pools = match destination {
            Destination::Endpoint(endpoint) => endpoint_pools(endpoint),
            Destination::Name(name) => {
                name_pools = self.names.get(name);
                &name_pools
            }
        };
        let pool = pools.pool(protocol, settings, || self.dialer(protocol, settings));
        let timeout = connect_timeout.unwrap_or(self.default_connect_timeout);
        pool.send(destination, request, timeout).await
    }

    /// How connections for `protocol` with a route's TLS settings are made.
    fn dialer(&self, protocol: Protocol, settings: Option<&Arc<BackendTls>>) -> Dialer {
        let tls = match (protocol, settings) {
            (Protocol::Http | Protocol::Grpc, _) => None,
            (_, Some(settings)) => Some(with_alpn(&settings.config, protocol)),
            (Protocol::Https, None) => Some(self.https.clone()),
            (Protocol::Grpcs, None) => Some(self.h2s.clone()),
        };
        let server_name = settings.map(|settings| settings.settings.server_name.clone());
        Dialer { protocol, tls, server_name }
    }

    /// Milliseconds since start, the clock passive health runs on.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Microseconds since start, the clock of the latency averages (`load-balance: ewma`).
    pub(crate) fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub(crate) fn eject_for_ms(&self) -> u64 {
        self.eject_for_ms
    }
}

/// The pools kept with an endpoint.
fn endpoint_pools(endpoint: &Endpoint) -> &Pools {
    endpoint.connections(Pools::default).expect("only the proxy keeps connections with endpoints")
}

/// TLS settings offering the HTTP version of `protocol` (ALPN `http/1.1` or `h2`).
fn with_alpn(config: &rustls::ClientConfig, protocol: Protocol) -> Arc<rustls::ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = match protocol {
        Protocol::Grpc | Protocol::Grpcs => vec![b"h2".to_vec()],
        Protocol::Http | Protocol::Https => vec![b"http/1.1".to_vec()],
    };
    Arc::new(config)
}

/// The URI scheme and HTTP version a backend protocol is spoken with.
pub(crate) fn scheme(protocol: Protocol) -> (Scheme, Version) {
    match protocol {
        Protocol::Http => (Scheme::HTTP, Version::HTTP_11),
        Protocol::Https => (Scheme::HTTPS, Version::HTTP_11),
        Protocol::Grpc => (Scheme::HTTP, Version::HTTP_2),
        Protocol::Grpcs => (Scheme::HTTPS, Version::HTTP_2),
    }
}

/// TLS to backends, as ingress-nginx does by default (`proxy-ssl-verify: off`): encrypted, the
/// backend's certificate not verified, no SNI (endpoints are dialled by address).
pub fn upstream_tls_config(provider: Arc<rustls::crypto::CryptoProvider>) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions.
        .expect("default TLS versions are supported")
        .dangerous()
        .with_custom_certificate_verifier(ostium_model::accept_any_server_certificate(provider))
        .with_no_client_auth()
}

/// Chooses an endpoint: the next one in round-robin order, unless a random second candidate has
/// fewer requests in flight (power of two choices). With equal load this is exact round robin;
/// under uneven load it steers away from the busier endpoint. Ejected endpoints are skipped
/// while any other is left; `tried` are the endpoints a retry must avoid (`None` when all are
/// tried).
pub(crate) fn pick(endpoints: &Endpoints, now_ms: u64, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = endpoints.next_cursor();
    let allowed = |e: &Arc<Endpoint>| !tried.contains(&e.addr);
    let in_order = (0..n).map(|i| (start + i) % n);
    let Some(first) =
        in_order.clone().find(|&i| endpoints.get(i).is_some_and(|e| allowed(e) && !e.is_ejected(now_ms)))
    else {
        // Every endpoint is ejected: trying one beats failing outright.
        return in_order.filter_map(|i| endpoints.get(i)).find(|e| allowed(e)).cloned();
    };
    let chosen = endpoints.get(first)?;
    if n > 1 {
        // The second choice is one of the others, drawn at random.
        let other = (first + 1 + fastrand::usize(..n - 1)) % n;
        if let Some(other) = endpoints.get(other)
            && allowed(other)
            && !other.is_ejected(now_ms)
            && other.in_flight() < chosen.in_flight()
        {
            return Some(other.clone());
        }
    }
    Some(chosen.clone())
}

/// `load-balance: ewma`, as ingress-nginx's `balancer/ewma.lua`: of two endpoints drawn at
/// random among those the request has not tried, the one with the lower latency score
/// ([`Endpoint::latency_score`]) at `now_us`. Ejected endpoints are left out while any other is
/// left, as in [`pick`]; `None` when every endpoint was tried.
pub(crate) fn pick_ewma(
    endpoints: &Endpoints,
    (now_ms, now_us): (u64, u64),
    tried: &[SocketAddr],
) -> Option<Arc<Endpoint>> {
    let untried = |e: &&Arc<Endpoint>| !tried.contains(&e.addr);
    let healthy = |e: &&Arc<Endpoint>| untried(e) && !e.is_ejected(now_ms);
    let candidate = |nth: usize, skip_ejected: bool| match skip_ejected {
        true => endpoints.iter().filter(healthy).nth(nth),
        false => endpoints.iter().filter(untried).nth(nth),
    };
    let healthy_count = endpoints.iter().filter(healthy).count();
    let skip_ejected = healthy_count > 0;
    let n = if skip_ejected { healthy_count } else { endpoints.iter().filter(untried).count() };
    if n < 2 {
        return candidate(0, skip_ejected).cloned();
    }
    let first = fastrand::usize(..n);
    let second = (first + 1 + fastrand::usize(..n - 1)) % n;
    // Another request may eject an endpoint meanwhile: then any untried one will do.
    let first = candidate(first, skip_ejected).or_else(|| candidate(0, false))?;
    let second = candidate(second, skip_ejected).unwrap_or(first);
    // A tie keeps the first drawn, as ingress-nginx's `pick_and_score`.
    let better = second.latency_score(now_us) < first.latency_score(now_us);
    Some(if better { second } else { first }.clone())
}

#[cfg(test)]
mod tests {
    use ostium_model::{EndpointKey, EndpointSet, NamespacedName};

    use super::*;

    fn set(n: u8) -> EndpointSet {
        let key = EndpointKey {
            service: NamespacedName::new("default", "web"),
            port: 80,
            protocol: ostium_model::Transport::Tcp,
        };
        EndpointSet::new(key, (1..=n).map(|i| SocketAddr::from(([10, 0, 0, i], 80))))
    }

    #[test]
    fn equal_load_is_exact_round_robin() {
        let set = set(3);
        let endpoints = set.load();
        let mut counts = [0; 3];
        for _ in 0..300 {
            let e = pick(&endpoints, 0, &[]).unwrap();
            counts[(e.addr.ip().to_string().rsplit('.').next().unwrap().parse::<usize>().unwrap()) - 1] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn a_busy_endpoint_is_avoided() {
        let set = set(2);
        let endpoints = set.load();
        let busy = endpoints.get(0).unwrap();
        for _ in 0..10 {
            busy.start_request();
        }
        let picks = (0..200).filter(|_| pick(&endpoints, 0, &[]).unwrap().addr == busy.addr).count();
        // Round robin alone would give 100; the second choice (always the other one here) moves
        // every one of them away.
        assert_eq!(picks, 0, "busy endpoint picked {picks} times of 200");
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let set = set(2);
        let endpoints = set.load();
        let bad = endpoints.get(0).unwrap();
        for _ in 0..3 {
            bad.record_failure(1_000, 10_000);
        }
        assert!((0..50).all(|_| pick(&endpoints, 2_000, &[]).unwrap().addr != bad.addr));
        let good = endpoints.get(1).unwrap();
        for _ in 0..3 {
            good.record_failure(1_000, 10_000);
        }
        assert!(pick(&endpoints, 2_000, &[]).is_some(), "all ejected: still try one");
    }

    #[test]
    fn ewma_prefers_the_faster_of_two_and_forgets_slowly() {
        let set = set(2);
        let endpoints = set.load();
        let (fast, slow) = (endpoints.get(0).unwrap(), endpoints.get(1).unwrap());
        fast.record_latency(1_000, 1_000_000);
        slow.record_latency(100_000, 1_000_000);
        let now = (1_000, 1_000_000);
        assert!((0..100).all(|_| pick_ewma(&endpoints, now, &[]).unwrap().addr == fast.addr));
        // A retry goes to the one left, however slow.
        assert_eq!(pick_ewma(&endpoints, now, &[fast.addr]).unwrap().addr, slow.addr);
        assert!(pick_ewma(&endpoints, now, &[fast.addr, slow.addr]).is_none());
        // Long unused, the slow endpoint's score decays below the fast one's fresh sample.
        fast.record_latency(1_000, 61_000_000);
        assert!(slow.latency_score(61_000_000) < fast.latency_score(61_000_000));
    }

    #[test]
    fn ewma_skips_ejected_endpoints_unless_all_are() {
        let set = set(3);
        let endpoints = set.load();
        let bad = endpoints.get(0).unwrap();
        for _ in 0..3 {
            bad.record_failure(1_000, 10_000);
        }
        assert!((0..100).all(|_| pick_ewma(&endpoints, (2_000, 0), &[]).unwrap().addr != bad.addr));
        let others = [endpoints.get(1).unwrap().addr, endpoints.get(2).unwrap().addr];
        assert_eq!(pick_ewma(&endpoints, (2_000, 0), &others).unwrap().addr, bad.addr);
    }

    #[test]
    fn a_retry_avoids_the_endpoints_tried() {
        let set = set(3);
        let endpoints = set.load();
        let failed = [endpoints.get(0).unwrap().addr, endpoints.get(2).unwrap().addr];
        assert!(
            (0..50).all(|_| pick(&endpoints, 0, &failed).unwrap().addr == endpoints.get(1).unwrap().addr)
        );
        let all = [failed[0], failed[1], endpoints.get(1).unwrap().addr];
        assert!(pick(&endpoints, 0, &all).is_none());
    }
}
