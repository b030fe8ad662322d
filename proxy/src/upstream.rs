//! The upstream side: one pooled client for the process (shared across table versions, pooled
//! per endpoint address), endpoint choice, and passive health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ostium_model::{Endpoint, Endpoints, Protocol};

use crate::ProxyConfig;

/// A request body on its way upstream: the client's (under the route's size limit), or none.
pub(crate) type UpstreamBody = Either<Limited<Incoming>, Empty<Bytes>>;

#[derive(Debug)]
pub(crate) struct Upstream {
    http1: Client<HttpConnector, UpstreamBody>,
    h2c: Client<HttpConnector, UpstreamBody>,
    started: Instant,
    eject_for_ms: u64,
}

impl Upstream {
    pub(crate) fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = |http2_only: bool| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(320)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2_only)
                .build(connector.clone())
        };
        Self {
            http1: client(false),
            h2c: client(true),
            started: Instant::now(),
            eject_for_ms: config.eject_for.as_millis() as u64,
        }
    }

    /// The client for a backend protocol; `None` for protocols not served yet (TLS upstreams).
    pub(crate) fn client(&self, protocol: Protocol) -> Option<&Client<HttpConnector, UpstreamBody>> {
        match protocol {
            Protocol::Http => Some(&self.http1),
            Protocol::Grpc => Some(&self.h2c),
            Protocol::Https | Protocol::Grpcs => None,
        }
    }

    /// Milliseconds since start, the clock passive health runs on.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn eject_for_ms(&self) -> u64 {
        self.eject_for_ms
    }
}

/// Chooses an endpoint: the next one in round-robin order, unless a random second candidate has
/// fewer requests in flight (power of two choices). With equal load this is exact round robin;
/// under uneven load it steers away from the busier endpoint. Ejected endpoints are skipped
/// while any other is left; `exclude` is the endpoint a retry must avoid.
pub(crate) fn pick(endpoints: &Endpoints, now_ms: u64, exclude: Option<SocketAddr>) -> Option<Arc<Endpoint>> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = endpoints.next_cursor();
    let in_order = || (0..n).filter_map(move |i| endpoints.get((start + i) % n));
    let allowed = |e: &&Arc<Endpoint>| Some(e.addr) != exclude;
    let Some(first) = in_order().filter(allowed).find(|e| !e.is_ejected(now_ms)) else {
        // Every endpoint is ejected: trying one beats failing outright.
        return in_order().find(allowed).cloned();
    };
    if n > 1
        && let Some(other) = endpoints.get(fastrand::usize(..n))
        && !Arc::ptr_eq(other, first)
        && allowed(&other)
        && !other.is_ejected(now_ms)
        && other.in_flight() < first.in_flight()
    {
        return Some(other.clone());
    }
    Some(first.clone())
}

#[cfg(test)]
mod tests {
    use ostium_model::{EndpointKey, EndpointSet, NamespacedName};

    use super::*;

    fn set(n: u8) -> EndpointSet {
        let key = EndpointKey { service: NamespacedName::new("default", "web"), port: 80 };
        EndpointSet::new(key, (1..=n).map(|i| SocketAddr::from(([10, 0, 0, i], 80))))
    }

    #[test]
    fn equal_load_is_exact_round_robin() {
        let set = set(3);
        let endpoints = set.load();
        let mut counts = [0; 3];
        for _ in 0..300 {
            let e = pick(&endpoints, 0, None).unwrap();
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
        let picks = (0..200).filter(|_| pick(&endpoints, 0, None).unwrap().addr == busy.addr).count();
        // Round robin alone would give 100; the second choice moves most of them away.
        assert!(picks < 60, "busy endpoint picked {picks} times of 200");
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let set = set(2);
        let endpoints = set.load();
        let bad = endpoints.get(0).unwrap();
        for _ in 0..3 {
            bad.record_failure(1_000, 10_000);
        }
        assert!((0..50).all(|_| pick(&endpoints, 2_000, None).unwrap().addr != bad.addr));
        let good = endpoints.get(1).unwrap();
        for _ in 0..3 {
            good.record_failure(1_000, 10_000);
        }
        assert!(pick(&endpoints, 2_000, None).is_some(), "all ejected: still try one");
    }

    #[test]
    fn a_retry_avoids_the_endpoint_that_failed() {
        let set = set(2);
        let endpoints = set.load();
        let failed = endpoints.get(0).unwrap().addr;
        assert!((0..50).all(|_| pick(&endpoints, 0, Some(failed)).unwrap().addr != failed));
        let single = self::set(1);
        let only = single.load();
        assert!(pick(&only, 0, Some(only.get(0).unwrap().addr)).is_none());
    }
}
