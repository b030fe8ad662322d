//! Rate limits by client address (`limit-rps`, `limit-rpm`, `limit-burst-multiplier`,
//! `limit-connections`, `limit-allowlist`) and the bandwidth of responses (`limit-rate`,
//! `limit-rate-after`), as ingress-nginx renders them for nginx's `limit_req`, `limit_conn` and
//! `limit_rate`.
//!
//! The per-client state of an Ingress is one [`RateLimitZone`], shared by all its routes (as
//! ingress-nginx declares one set of zones per Ingress, named after its namespace, name and UID)
//! and handed from table to table by [`RateLimitZones`], so a rebuild does not reset anyone's
//! bucket (as nginx keeps a zone across reloads). State is per process, that is per replica, as
//! nginx's shared memory is.
//!
//! Memory is bounded: a zone remembers at most [`RateLimitZone::CAPACITY`] clients (about 4 MiB,
//! as ingress-nginx's 5 MB zones). It is split into shards, each with its own lock, so requests
//! from different clients rarely wait for each other. A shard keeps two generations of clients;
//! when the current one is full, the previous one is forgotten, so a client is forgotten only
//! after a shard's worth of other clients arrived since it was last seen (nginx evicts its least
//! recently used entry when its zone is full). A forgotten client starts again with a full
//! allowance: a flood of distinct addresses can reset buckets but never grow memory, and every
//! address is still limited while it is remembered.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::{CidrSet, HashMap, NamespacedName};

/// `limit-rps`, `limit-rpm` and `limit-connections` of one Ingress, with the addresses they do
/// not apply to. Checked before access control, as nginx's preaccess phase runs before its
/// access phase: `limit_req` first, then `limit_conn`; a request over either is refused (503).
#[derive(Clone)]
pub struct RateLimit {
    /// `limit-rps`.
    pub per_second: Option<RequestRate>,
    /// `limit-rpm`. With `limit-rps`, a request must pass both.
    pub per_minute: Option<RequestRate>,
    /// `limit-connections`: requests of one client being handled at once (nginx's `limit_conn`
    /// counts requests, so each HTTP/2 stream counts).
    pub connections: Option<u32>,
    /// `limit-allowlist` (or `limit-whitelist`): clients none of the limits apply to.
    pub allowlist: Option<CidrSet>,
    /// The Ingress's per-client state.
    pub zone: Arc<RateLimitZone>,
    /// The answers to requests over the limits.
    pub statuses: LimitStatuses,
}

/// `limit-req-status-code` and `limit-conn-status-code` (ConfigMap keys, 503 each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitStatuses {
    pub requests: u16,
    pub connections: u16,
}

impl Default for LimitStatuses {
    fn default() -> Self {
        Self { requests: 503, connections: 503 }
    }
}

/// A `limit_req` rate: nginx's leaky bucket with `burst` and `nodelay`. A client's excess grows
/// by one with each accepted request and drains at the rate; a request that would take it above
/// the burst is refused at once, an accepted one is never delayed. A client's first request is
/// always accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRate {
    /// Requests a second (`limit-rps`) or a minute (`limit-rpm`).
    pub requests: u64,
    /// Requests accepted beyond the rate: `requests × limit-burst-multiplier`.
    pub burst: u64,
    /// The drain, in thousandths of a request a second (nginx's unit, rounded down as nginx does
    /// for a rate a minute).
    milli_per_second: u64,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// Over `limit-rps` or `limit-rpm`.
    Requests,
    /// Over `limit-connections`, or no room left to count the client.
    Connections,
}

/// `limit-rate` and `limit-rate-after`: the response to a request is sent to the client at
/// `bytes_per_second` on average once `after` bytes have gone, counted from the start of the
/// request with one second of allowance, as nginx's `limit_rate` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseRate {
    pub bytes_per_second: u64,
    pub after: u64,
}

/// The per-client state of one Ingress's rate limits.
pub struct RateLimitZone {
    ingress: NamespacedName,
    uid: Box<str>,
    hasher: foldhash::fast::RandomState,
    requests: Box<[Mutex<Generations<[Bucket; 2]>>]>,
    connections: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

/// A client's request counted by `limit-connections` until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    zone: Arc<RateLimitZone>,
    client: IpAddr,
}

/// The zones of the tables one controller builds, by Ingress (namespace, name and UID), so that
/// the next table gets the zone the current one uses. A zone lives as long as a table uses it.
#[derive(Clone, Debug, Default)]
pub struct RateLimitZones {
    zones: Arc<Mutex<ZoneMap>>,
}

#[derive(Debug, Default)]
struct ZoneMap {
    zones: HashMap<(NamespacedName, Box<str>), Weak<RateLimitZone>>,
    /// Forget zones no table uses any more when the map reaches this size.
    prune_at: usize,
}

/// Shards of a zone; a power of two.
const SHARDS: usize = 64;

/// Clients in a shard's generation: 448 entries fill a hash table of 512 buckets.
const GENERATION: usize = 448;

/// Clients with requests in flight in one shard (`limit-connections`).
const CONNECTIONS_PER_SHARD: usize = 1024;

/// nginx's leaky bucket state: the excess in thousandths of a request, and when it was last
/// changed (milliseconds).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    excess: u64,
    last: u64,
}

/// A bounded map of clients in two generations (see the module documentation).
#[derive(Debug)]
struct Generations<V> {
    current: HashMap<IpAddr, V>,
    previous: HashMap<IpAddr, V>,
}

// === impl RateLimit ===

impl RateLimit {
    /// Admits a request from `client` at `now_ms` (a millisecond clock that never goes back) or
    /// says which limit it is over. An admitted request under `limit-connections` holds the slot
    /// until its response is done.
    pub fn admit(&self, client: IpAddr, now_ms: u64) -> Result<Option<ConnectionSlot>, Limited> {
        let client = client.to_canonical();
        if self.allowlist.as_ref().is_some_and(|allowlist| allowlist.contains(client)) {
            return Ok(None);
        }
        let rates = [self.per_second, self.per_minute];
        if rates.iter().any(Option::is_some) && !self.zone.admit_request(client, now_ms, rates) {
            return Err(Limited::Requests);
        }
        match self.connections {
            Some(limit) => self.zone.connect(client, limit).map(Some).ok_or(Limited::Connections),
            None => Ok(None),
        }
    }
}

/// Equal when they limit alike, in the same Ingress's zone; the clients' state does not count.
impl PartialEq for RateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.per_second == other.per_second
            && self.per_minute == other.per_minute
            && self.connections == other.connections
            && self.allowlist == other.allowlist
            && self.zone.ingress == other.zone.ingress
            && self.zone.uid == other.zone.uid
            && self.statuses == other.statuses
    }
}

impl Eq for RateLimit {}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("per_second", &self.per_second)
            .field("per_minute", &self.per_minute)
            .field("connections", &self.connections)
            .field("allowlist", &self.allowlist)
            .field("zone", &self.zone)
            .field("statuses", &self.statuses)
            .finish()
    }
}

// === impl RequestRate ===

impl RequestRate {
    /// `limit-rps`: `requests` a second, `burst` more at once.
    pub fn per_second(requests: u64, burst: u64) -> Self {
        Self { requests, burst, milli_per_second: requests.saturating_mul(1000) }
    }

    /// `limit-rpm`: `requests` a minute, `burst` more at once.
    pub fn per_minute(requests: u64, burst: u64) -> Self {
        Self { requests, burst, milli_per_second: requests.saturating_mul(1000) / 60 }
    }
}

// === impl RateLimitZone ===

impl RateLimitZone {
    /// The most clients a zone remembers for `limit-rps` and `limit-rpm`.
    pub const CAPACITY: usize = SHARDS * 2 * GENERATION;

    /// An empty zone for an Ingress.
    pub fn new(ingress: NamespacedName, uid: &str) -> Self {
        Self {
            ingress,
            uid: uid.into(),
            hasher: foldhash::fast::RandomState::default(),
            requests: (0..SHARDS).map(|_| Mutex::new(Generations::new())).collect(),
            connections: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
        }
    }

    /// How many clients the zone remembers for `limit-rps` and `limit-rpm`.
    pub fn clients(&self) -> usize {
        self.requests.iter().map(|shard| lock(shard).len()).sum()
    }

    /// nginx's `limit_req` for both rates at once: the request is counted in both buckets or in
    /// neither.
    fn admit_request(&self, client: IpAddr, now_ms: u64, rates: [Option<RequestRate>; 2]) -> bool {
        let mut shard = lock(&self.requests[self.shard(client)]);
        let Some(buckets) = shard.touch(client) else {
            shard.insert(client, [Bucket { excess: 0, last: now_ms }; 2]);
            return true;
        };
        let mut next = *buckets;
        for (bucket, rate) in next.iter_mut().zip(rates) {
            let Some(rate) = rate else { continue };
            let elapsed = now_ms.saturating_sub(bucket.last);
            let drained = rate.milli_per_second.saturating_mul(elapsed) / 1000;
            let excess = (bucket.excess + 1000).saturating_sub(drained);
            if excess > rate.burst.saturating_mul(1000) {
                return false;
            }
            *bucket = Bucket { excess, last: now_ms.max(bucket.last) };
        }
        *buckets = next;
        true
    }

    /// nginx's `limit_conn`: one more request of `client` in flight, unless it has `limit`
    /// already. When the shard has no room for another client the request is refused, as nginx
    /// refuses it when its zone is full.
    fn connect(self: &Arc<Self>, client: IpAddr, limit: u32) -> Option<ConnectionSlot> {
        let mut shard = lock(&self.connections[self.shard(client)]);
        let count = shard.get(&client).copied().unwrap_or(0);
        if count >= limit || (count == 0 && shard.len() >= CONNECTIONS_PER_SHARD) {
            return None;
        }
        shard.insert(client, count + 1);
        Some(ConnectionSlot { zone: self.clone(), client })
    }

    fn shard(&self, client: IpAddr) -> usize {
        self.hasher.hash_one(client) as usize & (SHARDS - 1)
    }
}

impl fmt::Debug for RateLimitZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitZone")
            .field("ingress", &self.ingress)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// The state is plain numbers, consistent after any panic, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ConnectionSlot ===

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut shard = lock(&self.zone.connections[self.zone.shard(self.client)]);
        if let Some(count) = shard.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.client);
            }
        }
    }
}

// === impl RateLimitZones ===

impl RateLimitZones {
    /// The zone of an Ingress: the one a table still uses, or a new one.
    pub fn zone(&self, ingress: &NamespacedName, uid: &str) -> Arc<RateLimitZone> {
        let mut map = lock(&self.zones);
        let key = (ingress.clone(), Box::from(uid));
        if let Some(zone) = map.zones.get(&key).and_then(Weak::upgrade) {
            return zone;
        }
        if map.zones.len() >= map.prune_at {
            map.zones.retain(|_, zone| zone.strong_count() > 0);
            map.prune_at = (map.zones.len() * 2).max(64);
        }
        let zone = Arc::new(RateLimitZone::new(ingress.clone(), uid));
        map.zones.insert(key, Arc::downgrade(&zone));
        zone
    }
}

// === impl Generations ===

impl<V> Generations<V> {
    fn new() -> Self {
        Self { current: HashMap::default(), previous: HashMap::default() }
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The client's value, now in the current generation; `None` for a client not remembered.
    fn touch(&mut self, client: IpAddr) -> Option<&mut V> {
        if let Some(value) = self.previous.remove(&client) {
            self.insert(client, value);
        }
        self.current.get_mut(&client)
    }

    /// Adds a client not remembered; a full current generation becomes the previous one, and the
    /// previous one is forgotten.
    fn insert(&mut self, client: IpAddr, value: V) {
        if self.current.len() >= GENERATION {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(client, value);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn zone() -> Arc<RateLimitZone> {
        Arc::new(RateLimitZone::new(NamespacedName::new("default", "web"), "uid"))
    }

    fn limit(per_second: Option<RequestRate>, per_minute: Option<RequestRate>) -> RateLimit {
        RateLimit {
            per_second,
            per_minute,
            connections: None,
            allowlist: None,
            zone: zone(),
            statuses: LimitStatuses::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Requests admitted out of `n` sent at `now_ms`.
    fn admitted(limit: &RateLimit, client: &str, now_ms: u64, n: usize) -> usize {
        (0..n).filter(|_| limit.admit(ip(client), now_ms).is_ok()).count()
    }

    /// ngx_http_limit_req_module.c: a new client's first request leaves the excess at 0, each
    /// other adds 1000 (one request), and a request that would exceed `burst × 1000` is refused
    /// without being counted.
    #[test]
    fn burst_is_honoured_exactly_and_refusals_are_not_counted() {
        let limit = limit(Some(RequestRate::per_second(2, 10)), None);
        assert_eq!(admitted(&limit, "10.0.0.1", 1000, 20), 11, "the first request, then the burst");
        // Half a second drains one request.
        assert_eq!(admitted(&limit, "10.0.0.1", 1500, 5), 1);
        assert_eq!(admitted(&limit, "10.0.0.2", 1500, 20), 11, "each client has its own bucket");
        // The refusals above did not add to the excess: 1.5 s more drain three.
        assert_eq!(admitted(&limit, "10.0.0.1", 3000, 5), 3);
    }

    /// nginx drains `rate × ms / 1000` from `excess + 1000` and clamps at 0: after a long pause
    /// a request leaves no excess at all.
    #[test]
    fn a_drained_bucket_starts_from_zero() {
        let limit = limit(Some(RequestRate::per_second(1, 0)), None);
        assert_eq!(admitted(&limit, "10.0.0.1", 0, 2), 1, "no burst: one at a time");
        assert_eq!(admitted(&limit, "10.0.0.1", 999, 1), 0);
        assert_eq!(admitted(&limit, "10.0.0.1", 1000, 1), 1);
        assert_eq!(admitted(&limit, "10.0.0.1", 60_000, 2), 1);
    }

    /// A rate a minute drains `requests × 1000 / 60` thousandths a second, rounded down as
    /// nginx's `rate=Nr/m`.
    #[test]
    fn a_rate_a_minute_drains_per_minute() {
        let limit = limit(None, Some(RequestRate::per_minute(1, 2)));
        assert_eq!(admitted(&limit, "10.0.0.1", 0, 5), 3);
        assert_eq!(admitted(&limit, "10.0.0.1", 59_000, 1), 0, "16/1000 a second: not yet one");
        assert_eq!(admitted(&limit, "10.0.0.1", 63_000, 1), 1);
    }

    /// With `limit-rps` and `limit-rpm`, a request must pass both, and one refused by either is
    /// counted by neither (nginx accounts the zones only once all passed).
    #[test]
    fn both_rates_apply_and_a_refusal_counts_in_neither() {
        let limit = limit(Some(RequestRate::per_second(1, 1)), Some(RequestRate::per_minute(1, 3)));
        assert_eq!(admitted(&limit, "10.0.0.1", 0, 5), 2, "the second-rate's burst ends first");
        // Two seconds drain the per-second bucket; the per-minute one has room for two more.
        assert_eq!(admitted(&limit, "10.0.0.1", 2000, 5), 2);
        assert_eq!(admitted(&limit, "10.0.0.1", 4000, 5), 0, "now the per-minute bucket is full");
        // Had the requests refused per second been counted per minute, this one would be refused.
        assert_eq!(admitted(&limit, "10.0.0.1", 64_000, 1), 1);
    }

    #[test]
    fn allowlisted_clients_are_not_limited() {
        let mut limit = limit(Some(RequestRate::per_second(1, 0)), None);
        limit.connections = Some(1);
        limit.allowlist = Some("10.1.0.0/16".parse().unwrap());
        assert_eq!(admitted(&limit, "10.1.2.3", 0, 100), 100);
        assert_eq!(admitted(&limit, "::ffff:10.1.2.3", 0, 1), 1, "IPv4-mapped counts as IPv4");
        assert_eq!(admitted(&limit, "10.2.0.1", 0, 100), 1);
        assert_eq!(limit.zone.clients(), 1, "allowlisted clients leave no state");
    }

    /// ngx_http_limit_conn_module.c: a client may have `limit` requests in flight; the count
    /// drops when a request is done, and a client with none leaves no state.
    #[test]
    fn connections_are_counted_while_their_slots_live() {
        let mut limit = limit(None, None);
        limit.connections = Some(2);
        let first = limit.admit(ip("10.0.0.1"), 0).unwrap();
        let second = limit.admit(ip("10.0.0.1"), 0).unwrap();
        assert!(first.is_some() && second.is_some());
        assert_eq!(limit.admit(ip("10.0.0.1"), 0).unwrap_err(), Limited::Connections);
        assert!(limit.admit(ip("10.0.0.2"), 0).unwrap().is_some(), "another client");
        drop(first);
        let third = limit.admit(ip("10.0.0.1"), 0).unwrap();
        drop((second, third));
        let in_flight: usize = limit.zone.connections.iter().map(|shard| lock(shard).len()).sum();
        assert_eq!(in_flight, 0);
    }

    /// `limit_req` runs before `limit_conn`: a request over the rate takes no connection slot.
    #[test]
    fn a_request_over_the_rate_takes_no_connection() {
        let mut limit = limit(Some(RequestRate::per_second(1, 0)), None);
        limit.connections = Some(1);
        let slot = limit.admit(ip("10.0.0.1"), 0).unwrap();
        assert_eq!(limit.admit(ip("10.0.0.1"), 0).unwrap_err(), Limited::Requests);
        drop(slot);
        assert_eq!(limit.admit(ip("10.0.0.1"), 1000).map(|slot| slot.is_some()), Ok(true));
    }

    /// A flood of distinct addresses never makes a zone remember more than its capacity, and a
    /// client seen again in time is still remembered (and limited).
    #[test]
    fn a_flood_of_addresses_is_bounded_and_a_recent_client_is_kept() {
        let limit = limit(None, Some(RequestRate::per_minute(1, 0)));
        let regular = ip("10.0.0.1");
        assert!(limit.admit(regular, 0).is_ok());
        for n in 0..(RateLimitZone::CAPACITY as u128 * 4) {
            let flood = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | n));
            assert!(limit.admit(flood, 0).is_ok(), "a new address gets its first request");
            if n % 256 == 0 {
                assert_eq!(limit.admit(regular, 0).unwrap_err(), Limited::Requests, "after {n}");
                assert!(limit.zone.clients() <= RateLimitZone::CAPACITY);
            }
        }
        assert!(limit.zone.clients() > RateLimitZone::CAPACITY / 2);
    }

    #[test]
    fn connection_counts_are_bounded_and_refuse_when_full() {
        let mut limit = limit(None, None);
        limit.connections = Some(1);
        let mut slots = Vec::new();
        let mut refused = 0;
        for n in 0..(SHARDS * CONNECTIONS_PER_SHARD * 2) as u128 {
            match limit.admit(IpAddr::V6(Ipv6Addr::from(n)), 0) {
                Ok(slot) => slots.push(slot),
                Err(Limited::Connections) => refused += 1,
                Err(Limited::Requests) => unreachable!("no request rate"),
            }
        }
        assert!(slots.len() <= SHARDS * CONNECTIONS_PER_SHARD);
        assert!(refused >= SHARDS * CONNECTIONS_PER_SHARD, "fails closed when full");
        slots.clear();
        assert!(limit.admit(ip("10.0.0.1"), 0).is_ok(), "room again once requests end");
    }

    #[test]
    fn an_ingress_keeps_its_zone_while_a_table_uses_it() {
        let zones = RateLimitZones::default();
        let web = NamespacedName::new("default", "web");
        let first = zones.zone(&web, "1");
        assert!(Arc::ptr_eq(&first, &zones.zone(&web, "1")));
        assert!(!Arc::ptr_eq(&first, &zones.zone(&web, "2")), "a recreated Ingress starts anew");
        assert!(!Arc::ptr_eq(&first, &zones.zone(&NamespacedName::new("other", "web"), "1")));
        let limit = RateLimit { zone: first, ..limit(Some(RequestRate::per_second(1, 0)), None) };
        assert!(limit.admit(ip("10.0.0.1"), 0).is_ok());
        drop(limit);
        assert_eq!(zones.zone(&web, "1").clients(), 0, "no table used it: a new, empty zone");
    }
}
