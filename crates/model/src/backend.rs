//! Backends and their endpoint sets.
//!
//! Routes point at a [`Backend`] (a Service port and how to speak to it). A backend that targets
//! pods holds an [`EndpointSet`]: the pods' socket addresses behind their own swappable pointer,
//! so the controller can move endpoints without rebuilding the table, and balancer state of the
//! endpoints that stay carries over.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::{HashRing, NamespacedName, StableHasher, Transport, decay_ewma};

/// A backend as routes hold it: shared by every route of the same Service port, and by the
/// tables that keep those routes, so a new table can take routes from the old one as they are.
pub type BackendRef = Arc<Backend>;

/// A Service port as an Ingress names it: by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    Name(Box<str>),
}

/// How the proxy speaks to a backend (the `backend-protocol` annotation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 or HTTP/2 over TLS.
    Https,
    /// HTTP/2 over TCP (h2c), for gRPC.
    Grpc,
    /// HTTP/2 over TLS, for gRPC.
    Grpcs,
}

/// A Service port requests can be sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Shared, so a request can name it (logs, metrics) without copying it.
    pub service: Arc<NamespacedName>,
    pub port: PortRef,
    pub protocol: Protocol,
    pub target: Target,
}

/// Where a backend's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Straight to the Service's pods (never the Service IP).
    Endpoints(Arc<EndpointSet>),
    /// `service-upstream`: the Service's cluster IP and port, one endpoint that kube-proxy
    /// balances. Not registered for endpoint updates: the address moves only with the Service.
    ClusterIp(Arc<EndpointSet>),
    /// An `ExternalName` Service: a DNS name resolved when connecting, with the Service port.
    ExternalName(Authority),
    /// The backend cannot be reached (missing Service, unknown port, unsupported kind): requests
    /// are answered 503, and a diagnostic says why.
    Unavailable,
}

/// Identity of an endpoint set: a Service and one of its ports (by number and protocol: DNS
/// Services have port 53 twice, once for TCP and once for UDP).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub service: NamespacedName,
    pub port: u16,
    pub protocol: Transport,
}

/// The current endpoints of one Service port, swappable in place.
pub struct EndpointSet {
    key: EndpointKey,
    current: ArcSwap<Endpoints>,
}

/// One version of an endpoint set: ready endpoints, sorted by address, no duplicates.
#[derive(Debug, Default)]
pub struct Endpoints {
    list: Box<[Arc<Endpoint>]>,
    /// Shared cursor for balancers that need one (kept with the list it indexes).
    cursor: AtomicUsize,
    /// The endpoints on a hash ring (`upstream-hash-by`, balanced affinity), built when a route
    /// first needs it.
    ring: OnceLock<HashRing>,
    /// The subsets of `upstream-hash-by-subset` on hash rings, one per number of subsets the
    /// routes of this Service port ask for, each built when first needed.
    subset_rings: ArcSwap<Vec<(usize, Arc<HashRing>)>>,
    /// The endpoints' session ids, sorted, with their index (persistent affinity), built when a
    /// route first needs them.
    session_ids: OnceLock<Box<[(u64, usize)]>>,
}

/// A pod's socket address and the live state the balancer keeps for it.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, built once so requests need not format it.
    pub authority: Authority,
    /// A hash of the address: what a persistent session cookie holds to name the endpoint
    /// without showing its address.
    pub session_id: u64,
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Milliseconds on the caller's clock until which the endpoint is skipped; 0 when healthy.
    ejected_until_ms: AtomicU64,
    /// `load-balance: ewma`: the response time average in microseconds (`f64` bits), and when it
    /// was last updated (microseconds on the caller's clock; 0: never).
    latency_us: AtomicU64,
    latency_touched_us: AtomicU64,
    /// The proxy's connections to this endpoint, kept with it: a request finds them through the
    /// endpoint the balancer picked, without a lookup, and they close when the endpoint goes.
    /// Their type is the proxy's (the model knows no network stack).
    connections: OnceLock<Box<dyn Any + Send + Sync>>,
}

/// Connection failures in a row that eject an endpoint.
const EJECT_AFTER_FAILURES: u32 = 3;

// === impl Backend ===

impl Backend {
    /// A backend of `service` (in `default`, port 80) that cannot be reached: for tests.
    #[cfg(test)]
    pub(crate) fn unavailable_for_tests(service: &str) -> BackendRef {
        Arc::new(Backend {
            service: Arc::new(NamespacedName::new("default", service)),
            port: PortRef::Number(80),
            protocol: Protocol::Http,
            target: Target::Unavailable,
        })
    }

    pub fn endpoint_set(&self) -> Option<&Arc<EndpointSet>> {
        match &self.target {
            Target::Endpoints(set) => Some(set),
            _ => None,
        }
    }
}

// === impl Target ===

impl Target {
    /// Whether requests can be sent now: an endpoint set with at least one endpoint, a cluster
    /// IP, or an external name.
    pub fn has_endpoints(&self) -> bool {
        match self {
            Self::Endpoints(set) | Self::ClusterIp(set) => !set.load().is_empty(),
            Self::ExternalName(_) => true,
            Self::Unavailable => false,
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

// === impl EndpointSet ===

impl EndpointSet {
    pub fn new(key: EndpointKey, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        let set = Self { key, current: ArcSwap::default() };
        set.replace(addrs);
        set
    }

    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    /// The current endpoints (one atomic load).
    pub fn load(&self) -> Arc<Endpoints> {
        self.current.load_full()
    }

    /// The current addresses, sorted.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.current.load().iter().map(|e| e.addr).collect()
    }

    /// Swaps in a new list of addresses. Endpoints present before keep their state (in-flight
    /// counts); requests already in progress keep the list they started with. Returns whether
    /// anything changed.
    pub fn replace(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> bool {
        let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        addrs.sort_unstable();
        addrs.dedup();
        let old = self.current.load();
        if old.list.len() == addrs.len() && old.iter().zip(&addrs).all(|(e, a)| e.addr == *a) {
            return false;
        }
        let slow_start = Endpoint::slow_start(&old);
        let list = addrs
            .into_iter()
            .map(|addr| match old.list.binary_search_by_key(&addr, |e| e.addr) {
                Ok(i) => old.list[i].clone(),
                Err(_) => Arc::new(Endpoint::new(addr).starting_slow(slow_start)),
            })
            .collect();
        self.current.store(Arc::new(Endpoints { list, ..Endpoints::default() }));
        true
    }
}

/// Endpoint sets compare by identity (Service and port), not by their current endpoints: the
/// endpoints move on their own, and a table is not "different" because a pod moved.
impl PartialEq for EndpointSet {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for EndpointSet {}

impl fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSet").field("key", &self.key).field("addrs", &self.addrs()).finish()
    }
}

// === impl Endpoints ===

impl Endpoints {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.list.iter()
    }

    pub fn get(&self, i: usize) -> Option<&Arc<Endpoint>> {
        self.list.get(i)
    }

    /// Advances the shared cursor and returns its previous value.
    pub fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// The endpoint whose [`Endpoint::session_id`] this is.
    pub fn by_session_id(&self, id: u64) -> Option<&Arc<Endpoint>> {
        let ids = self.session_ids.get_or_init(|| {
            let mut ids: Vec<(u64, usize)> =
                self.list.iter().enumerate().map(|(i, e)| (e.session_id, i)).collect();
            ids.sort_unstable();
            ids.into()
        });
        let found = ids.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        self.list.get(ids[found].1)
    }

    /// The endpoint a key's hash belongs to on the endpoints' ring (see [`HashRing`]).
    pub fn by_hash(&self, hash: u64) -> Option<&Arc<Endpoint>> {
        let ring = self.ring.get_or_init(|| HashRing::new(self.list.iter().map(|e| e.authority.as_str())));
        ring.find(hash).and_then(|i| self.list.get(i))
    }

    /// The endpoints of the subset a key's hash belongs to, as ingress-nginx's `chashsubset`
    /// groups them: in order, `size` at a time, the last group filled up from the first
    /// endpoints; the groups are placed on a ring.
    pub fn subset_by_hash(&self, hash: u64, size: NonZeroU32) -> impl Iterator<Item = &Arc<Endpoint>> {
        // A subset larger than the endpoints is all of them.
        let (n, size_n) = (self.list.len(), (size.get() as usize).min(self.list.len()).max(1));
        let ring = self.subset_ring(n.div_ceil(size_n));
        let first = ring.find(hash).map(|subset| subset * size_n);
        first.into_iter().flat_map(move |first| (first..first + size_n).map(move |i| &self.list[i % n]))
    }

    /// The ring of `count` subsets, built once per version.
    fn subset_ring(&self, count: usize) -> Arc<HashRing> {
        if let Some((_, ring)) = self.subset_rings.load().iter().find(|(c, _)| *c == count) {
            return ring.clone();
        }
        let ring = Arc::new(HashRing::new((1..=count).map(|i| format!("set{i}"))));
        self.subset_rings.rcu(|rings| {
            let mut rings = Vec::clone(rings);
            rings.push((count, ring.clone()));
            rings
        });
        ring
    }
}

// === impl Endpoint ===

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        // A socket address always renders as a valid authority.
        let authority = Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        Self {
            addr,
            session_id: StableHasher::hash(authority.as_str().as_bytes()),
            authority,
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            latency_touched_us: AtomicU64::new(0),
            connections: OnceLock::new(),
        }
    }

    /// The connections kept with this endpoint, made by `make` on first use. `None` if they
    /// were made as another type.
    pub fn connections<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.connections.get_or_init(|| Box::new(make())).downcast_ref()
    }

    /// A new endpoint starts with the average latency of the endpoints that have one, as
    /// ingress-nginx's `calculate_slow_start_ewma`, so it is not flooded for having none; it is
    /// dated from the latest of theirs (ingress-nginx dates it now; there is no clock here).
    fn starting_slow(self, slow_start: Option<(f64, u64)>) -> Self {
        if let Some((average, touched)) = slow_start {
            self.latency_us.store(average.to_bits(), Ordering::Relaxed);
            self.latency_touched_us.store(touched, Ordering::Relaxed);
        }
        self
    }

    /// The average latency of the endpoints that have one, and the latest of their dates.
    fn slow_start(others: &Endpoints) -> Option<(f64, u64)> {
        let (mut sum, mut count, mut latest) = (0.0, 0u32, None::<u64>);
        for (latency, touched) in others.iter().filter_map(|e| e.latency()) {
            (sum, count) = (sum + latency, count + 1);
            latest = latest.max(Some(touched));
        }
        latest.map(|touched| (sum / f64::from(count), touched))
    }

    /// The latency average and when it was updated; `None` before the first response.
    fn latency(&self) -> Option<(f64, u64)> {
        let touched = self.latency_touched_us.load(Ordering::Relaxed);
        (touched != 0).then(|| (f64::from_bits(self.latency_us.load(Ordering::Relaxed)), touched))
    }

    /// The score `load-balance: ewma` compares at `now_us`: the latency average decayed toward 0
    /// by the time since its last update (0 before the first response).
    pub fn latency_score(&self, now_us: u64) -> f64 {
        self.latency().map_or(0.0, |(average, touched)| decay_ewma(average, touched, 0.0, now_us))
    }

    /// Folds a response time into the latency average. Two updates racing may lose one sample,
    /// as ingress-nginx's, which skips the update when its lock is taken.
    pub fn record_latency(&self, sample_us: u64, now_us: u64) {
        let (average, touched) = self.latency().unwrap_or((0.0, 0));
        let average = decay_ewma(average, touched, sample_us as f64, now_us);
        self.latency_us.store(average.to_bits(), Ordering::Relaxed);
        self.latency_touched_us.store(now_us.max(1), Ordering::Relaxed);
    }

    /// Requests currently outstanding on this endpoint.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the endpoint is ejected at `now_ms` (passive health: it kept refusing).
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Records a failed connection. After a few in a row the endpoint is ejected until
    /// `now_ms + eject_for_ms`; returns whether this failure ejected it.
    pub fn record_failure(&self, now_ms: u64, eject_for_ms: u64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < EJECT_AFTER_FAILURES {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(now_ms + eject_for_ms, Ordering::Relaxed);
        true
    }

    /// Records a successful connection: the failure count starts again.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EndpointKey {
        EndpointKey { service: NamespacedName::new("default", "web"), port: 80, protocol: Transport::Tcp }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn endpoints_are_sorted_and_deduplicated() {
        let set = EndpointSet::new(key(), [addr("10.0.0.2:80"), addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        assert_eq!(set.addrs(), vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
    }

    #[test]
    fn replace_keeps_state_of_endpoints_that_stay() {
        let set = EndpointSet::new(key(), [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        let before = set.load();
        before.get(0).unwrap().start_request();

        assert!(set.replace([addr("10.0.0.1:80"), addr("10.0.0.3:80")]));
        let after = set.load();
        assert!(Arc::ptr_eq(before.get(0).unwrap(), after.get(0).unwrap()));
        assert_eq!(after.get(0).unwrap().in_flight(), 1);
        assert_eq!(after.get(1).unwrap().addr, addr("10.0.0.3:80"));
        assert_eq!(after.get(1).unwrap().in_flight(), 0);
        // The old version is still whole for requests that loaded it.
        assert_eq!(before.get(1).unwrap().addr, addr("10.0.0.2:80"));
    }

    #[test]
    fn repeated_failures_eject_for_a_while_and_success_resets() {
        let e = Endpoint::new(addr("10.0.0.1:80"));
        assert_eq!(e.authority.as_str(), "10.0.0.1:80");
        assert!(!e.record_failure(1_000, 5_000));
        e.record_success();
        assert!(!e.record_failure(1_000, 5_000));
        assert!(!e.record_failure(1_000, 5_000));
        assert!(e.record_failure(1_000, 5_000), "third failure in a row ejects");
        assert!(e.is_ejected(5_999));
        assert!(!e.is_ejected(6_000));
    }

    /// As ingress-nginx's `chashsubset.lua`: 7 endpoints in subsets of 3 are
    /// [1 2 3] [4 5 6] [7 1 2]; a key always gets the same subset.
    #[test]
    fn subsets_group_endpoints_in_order_and_fill_the_last_from_the_first() {
        let set = EndpointSet::new(key(), (1..=7).map(|i| SocketAddr::from(([10, 0, 0, i], 80))));
        let endpoints = set.load();
        let size = NonZeroU32::new(3).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..200u64 {
            let hash = StableHasher::hash(&k.to_le_bytes());
            let members: Vec<u8> = endpoints
                .subset_by_hash(hash, size)
                .map(|e| match e.addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    std::net::IpAddr::V6(_) => unreachable!(),
                })
                .collect();
            assert_eq!(members.len(), 3);
            seen.insert(members);
        }
        let expected: std::collections::BTreeSet<Vec<u8>> =
            [vec![1, 2, 3], vec![4, 5, 6], vec![7, 1, 2]].into_iter().collect();
        assert_eq!(seen, expected);
        // Another size on the same version is served too.
        assert_eq!(endpoints.subset_by_hash(1, NonZeroU32::new(7).unwrap()).count(), 7);
    }

    #[test]
    fn endpoints_are_found_by_session_id() {
        let set = EndpointSet::new(key(), (1..=5).map(|i| SocketAddr::from(([10, 0, 0, i], 80))));
        let endpoints = set.load();
        for endpoint in endpoints.iter() {
            assert_eq!(endpoints.by_session_id(endpoint.session_id).unwrap().addr, endpoint.addr);
        }
        let unknown = (0..).find(|id| endpoints.iter().all(|e| e.session_id != *id)).unwrap();
        assert!(endpoints.by_session_id(unknown).is_none());
    }

    #[test]
    fn the_ring_is_built_once_per_version() {
        let set = EndpointSet::new(key(), [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        let endpoints = set.load();
        let picked = endpoints.by_hash(42).unwrap().addr;
        assert!((0..10).all(|_| endpoints.by_hash(42).unwrap().addr == picked));
        let ring = endpoints.ring.get().unwrap() as *const HashRing;
        endpoints.by_hash(7);
        assert_eq!(endpoints.ring.get().unwrap() as *const HashRing, ring);
        assert!(set.replace([addr("10.0.0.1:80")]));
        assert!(set.load().ring.get().is_none(), "a new version starts without a ring");
        assert_ne!(endpoints.get(0).unwrap().session_id, endpoints.get(1).unwrap().session_id);
    }

    #[test]
    fn new_endpoints_start_with_the_average_latency_of_the_others() {
        let set = EndpointSet::new(key(), [addr("10.0.0.1:80"), addr("10.0.0.2:80"), addr("10.0.0.3:80")]);
        let before = set.load();
        before.get(0).unwrap().record_latency(1_000, 5_000_000);
        before.get(1).unwrap().record_latency(3_000, 5_000_000);
        set.replace([addr("10.0.0.1:80"), addr("10.0.0.2:80"), addr("10.0.0.3:80"), addr("10.0.0.4:80")]);
        let after = set.load();
        assert_eq!(after.get(2).unwrap().latency_score(5_000_000), 0.0, "staying, never answered");
        assert_eq!(after.get(3).unwrap().latency_score(5_000_000), 2_000.0);
    }

    #[test]
    fn replace_with_same_addresses_changes_nothing() {
        let set = EndpointSet::new(key(), [addr("10.0.0.1:80")]);
        let before = set.load();
        assert!(!set.replace([addr("10.0.0.1:80")]));
        assert!(Arc::ptr_eq(&before, &set.load()));
    }
}
