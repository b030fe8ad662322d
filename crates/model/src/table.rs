//! The routing table: virtual hosts, their routes, backends and certificates.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{Backend, BackendRef, EndpointKey, EndpointSet, Target};
use crate::host::NormalizedHost;
use crate::host::{HostMatch, HostRule, normalize_host};
use crate::host_map::HostMap;
use crate::path::{PathMatch, PathMatchKind, PathRule};
use crate::{
    ClientAuth, GlobalSettings, HashMap, HostRedirect, NamespacedName, Policy, StreamService, TlsTable,
    Transport,
};

/// One immutable version of the routing configuration.
///
/// Request routing ([`Table::route`]) first picks one virtual host — exact name, else one-label
/// wildcard, else the rules without a host — and then the best path within it. A request whose
/// virtual host has no matching path goes to that host's fallback (an Ingress's
/// `spec.defaultBackend`, for the hosts that Ingress defines), else to the table's default
/// route; it does not fall through to a less specific host (as nginx picks a `server` first and
/// a `location` second).
///
/// Virtual hosts, backends and certificates are shared (`Arc`), so a table made from another by
/// [`Table::splice`] costs what changed, plus copying the maps' pointers.
#[derive(Clone, Debug)]
pub struct Table {
    exact_hosts: HostMap<Arc<VirtualHost>>,
    wildcard_hosts: HostMap<Arc<VirtualHost>>,
    any_host: Option<Arc<VirtualHost>>,
    default_route: Option<Route>,
    /// `--default-backend-service`: where error pages come from when a route has no
    /// `default-backend` of its own.
    default_backend: Option<BackendRef>,
    /// The endpoint set of each Service port some backend uses, and how many users it has
    /// (virtual hosts, the default route and backend, streams): a set without users leaves.
    endpoint_sets: EndpointSets,
    tls: TlsTable,
    /// `ssl-passthrough` hosts (exact names): their TLS connections go, undecrypted, to this
    /// backend.
    passthrough: HashMap<Arc<str>, BackendRef>,
    /// How many virtual hosts have client certificate rules: without any,
    /// [`Table::client_auth`] looks nothing up.
    client_auth_hosts: usize,
    /// Path routes and host fallbacks of all virtual hosts.
    routes: usize,
    /// The `--configmap` settings that apply to every connection and request.
    global: Arc<GlobalSettings>,
    /// TCP and UDP services, by protocol and port.
    streams: BTreeMap<(Transport, u16), StreamService>,
}

/// Endpoint sets by Service port, each with how many users it has, in shards by Service (as
/// [`HostMap`]'s): a table made from another copies only the shards whose counts moved.
#[derive(Clone, Debug)]
struct EndpointSets {
    shards: Box<[Arc<SetShard>]>,
}

type SetShard = BTreeMap<Arc<EndpointKey>, (Arc<EndpointSet>, u32)>;

/// A [`Table`] being filled by translation; [`TableBuilder::build`] turns it into the immutable
/// table that is served.
#[derive(Debug)]
pub struct TableBuilder {
    table: Table,
    /// Endpoint sets to reuse: those of the table being replaced (see
    /// [`TableBuilder::share_endpoint_sets`]).
    shared_sets: Option<EndpointSets>,
    /// How many reused sets got other endpoints.
    endpoints_moved: usize,
}

/// What [`Table::splice`] takes from a partial table: everything of these hosts (virtual host,
/// certificate, handshake settings, passthrough), and optionally the rules without a host and
/// the default route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    pub hosts: Vec<HostRule>,
    pub any_host: bool,
    pub default_route: bool,
}

/// The routes of one host (or of the rules with no host).
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    host: Option<HostRule>,
    routes: Vec<Route>,
    /// `Exact` rules by path.
    exact: PathIndex,
    /// `Prefix` rules by path without trailing slash (`""` for `/`).
    prefix: PathIndex,
    /// The longest `Prefix` rule: no longer candidate can match.
    max_prefix_len: usize,
    /// Once the host has a `Regex` rule: every rule, longest path or pattern first (insertion
    /// order among equals), used instead of the maps (see [`VirtualHost::route`]).
    regex_order: Option<Vec<usize>>,
    /// Boxed: most hosts have none, and a host is held for as long as it exists.
    fallback: Option<Box<Route>>,
    /// `auth-tls-*`: what the host asks of client certificates.
    client_auth: Option<Arc<ClientAuth>>,
}

/// A path rule and what to do with the requests it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub rule: PathRule,
    /// The Ingress the route comes from; `None` for `--default-backend-service`.
    pub ingress: Option<Arc<NamespacedName>>,
    pub action: RouteAction,
    /// Shared by the routes of an Ingress, so a request takes it with one reference count.
    pub policy: Arc<Policy>,
}

/// Tables are equal when they serve the same: the maps are compared, not their order or sharing.
impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        let sets = |t: &Table| -> Vec<(EndpointKey, u32)> {
            t.endpoint_sets.iter().map(|(k, (_, users))| (EndpointKey::clone(k), *users)).collect()
        };
        self.exact_hosts == other.exact_hosts
            && self.wildcard_hosts == other.wildcard_hosts
            && self.any_host == other.any_host
            && self.default_route == other.default_route
            && self.default_backend == other.default_backend
            && self.tls == other.tls
            && self.passthrough == other.passthrough
            && self.global == other.global
            && self.streams == other.streams
            && sets(self) == sets(other)
            && self.routes == other.routes
            && self.client_auth_hosts == other.client_auth_hosts
    }
}

/// What a route does with a request its policies let through.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// Forward it to this backend.
    Forward(BackendRef),
    /// Redirect it to another host (`from-to-www-redirect`): there is no backend.
    Redirect(HostRedirect),
}

/// The route chosen for a request, with how its host and path matched (`path` is `None` for a
/// fallback or the default route).
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'t> {
    pub route: &'t Route,
    pub host: HostMatch,
    pub path: Option<PathMatch>,
}

/// A rule was already taken; `existing` names the Ingress that holds it, `rule` is the rule of
/// the route that was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("already defined by {}", existing.as_ref().map_or_else(|| "a flag".to_owned(), |n| format!("ingress {n}")))]
pub struct RouteConflict {
    pub existing: Option<Arc<NamespacedName>>,
    pub rule: PathRule,
}

// === impl Table ===

impl Table {
    /// An empty table: every request gets the built-in 404.
    pub fn new(tls: TlsTable) -> Self {
        Self {
            exact_hosts: HostMap::default(),
            wildcard_hosts: HostMap::default(),
            any_host: None,
            default_route: None,
            default_backend: None,
            endpoint_sets: EndpointSets::default(),
            tls,
            passthrough: HashMap::default(),
            client_auth_hosts: 0,
            routes: 0,
            global: Arc::default(),
            streams: BTreeMap::new(),
        }
    }

    /// The settings that apply to every connection and request.
    pub fn global(&self) -> &Arc<GlobalSettings> {
        &self.global
    }

    /// The TCP or UDP service listening on `port`, if any.
    pub fn stream(&self, protocol: Transport, port: u16) -> Option<&StreamService> {
        self.streams.get(&(protocol, port))
    }

    /// Every TCP service, then every UDP service, each by port.
    pub fn streams(&self) -> impl Iterator<Item = &StreamService> {
        self.streams.values()
    }

    /// The backend a TLS connection for this SNI name is passed through to, undecrypted; `None`
    /// when the connection is terminated here.
    pub fn passthrough(&self, sni: &str) -> Option<&Backend> {
        let host = normalize_host(sni)?;
        self.passthrough.get(host.as_str()).map(|backend| &**backend)
    }

    /// Every `ssl-passthrough` host and its backend, sorted.
    pub fn passthrough_hosts(&self) -> Vec<(&str, &Backend)> {
        let mut hosts: Vec<_> = self.passthrough.iter().map(|(host, b)| (&**host, &**b)).collect();
        hosts.sort_unstable_by_key(|(host, _)| *host);
        hosts
    }

    /// Routes a request: `authority` is the `Host` header (or `:authority`), `path` the request
    /// path after [`normalize_path`](crate::normalize_path). `None` means the built-in 404.
    /// Never allocates.
    pub fn route(&self, authority: Option<&str>, path: &str) -> Option<RouteMatch<'_>> {
        let host = authority.and_then(normalize_host);
        let Some((vhost, host)) = self.virtual_host(host.as_ref()) else {
            return self.default_route();
        };
        if let Some((route, path)) = vhost.route(path) {
            return Some(RouteMatch { route, host, path: Some(path) });
        }
        match vhost.fallback.as_deref() {
            Some(route) => Some(RouteMatch { route, host, path: None }),
            None => self.default_route(),
        }
    }

    /// The virtual host a request for `host` is served by: exact name, else one-label wildcard,
    /// else the rules without a host.
    fn virtual_host(&self, host: Option<&NormalizedHost>) -> Option<(&VirtualHost, HostMatch)> {
        host.and_then(|h| {
            if let Some(v) = self.exact_hosts.get(h.as_str()) {
                return Some((&**v, HostMatch::Exact));
            }
            let v = self.wildcard_hosts.get(h.wildcard_suffix()?)?;
            Some((&**v, HostMatch::Wildcard))
        })
        .or_else(|| self.any_host.as_deref().map(|v| (v, HostMatch::Any)))
    }

    /// The client certificate rules of the virtual host that serves `host` (a request's host,
    /// or a handshake's SNI name; `None` for neither), as nginx applies `ssl_verify_client` per
    /// `server`. Never allocates.
    pub fn client_auth(&self, host: Option<&NormalizedHost>) -> Option<&Arc<ClientAuth>> {
        if self.client_auth_hosts == 0 {
            return None;
        }
        self.virtual_host(host)?.0.client_auth.as_ref()
    }

    fn default_route(&self) -> Option<RouteMatch<'_>> {
        let route = self.default_route.as_ref()?;
        Some(RouteMatch { route, host: HostMatch::Any, path: None })
    }

    pub fn tls(&self) -> &TlsTable {
        &self.tls
    }

    pub fn default_route_ref(&self) -> Option<&Route> {
        self.default_route.as_ref()
    }

    /// The backend of `--default-backend-service`, if set.
    pub fn default_backend(&self) -> Option<&Backend> {
        self.default_backend.as_deref()
    }

    /// The endpoint set of a Service port, to swap its endpoints in place.
    pub fn endpoint_set(&self, key: &EndpointKey) -> Option<&Arc<EndpointSet>> {
        self.endpoint_sets.get(key).map(|(set, _)| set)
    }

    pub fn endpoint_sets(&self) -> impl Iterator<Item = &Arc<EndpointSet>> {
        self.endpoint_sets.iter().map(|(_, (set, _))| set)
    }

    /// The endpoint sets of one Service, one per port the table uses.
    pub fn endpoint_sets_of(&self, service: &NamespacedName) -> impl Iterator<Item = &Arc<EndpointSet>> {
        let key = |port, protocol| EndpointKey { service: service.clone(), port, protocol };
        let range = key(0, Transport::Tcp)..=key(u16::MAX, Transport::Udp);
        self.endpoint_sets.shard(service).range::<EndpointKey, _>(range).map(|(_, (set, _))| set)
    }

    /// How many virtual hosts there are (the host-less one included).
    pub fn host_count(&self) -> usize {
        self.exact_hosts.len() + self.wildcard_hosts.len() + usize::from(self.any_host.is_some())
    }

    /// How many routes the virtual hosts hold (path routes and host fallbacks), plus the default
    /// route when there is one.
    pub fn route_count(&self) -> usize {
        self.routes + usize::from(self.default_route.is_some())
    }

    /// Every virtual host: exact names, then wildcards (each sorted), then the host-less one.
    pub fn virtual_hosts(&self) -> Vec<&VirtualHost> {
        let mut exact: Vec<&VirtualHost> = self.exact_hosts.values().map(|v| &**v).collect();
        let mut wildcard: Vec<&VirtualHost> = self.wildcard_hosts.values().map(|v| &**v).collect();
        exact.sort_by(|a, b| a.host.cmp(&b.host));
        wildcard.sort_by(|a, b| a.host.cmp(&b.host));
        exact.into_iter().chain(wildcard).chain(self.any_host.as_deref()).collect()
    }

    /// A new table: this one with what `replaced` names taken from `part` (a table translated
    /// from the objects that decide those hosts alone, built with this table's endpoint sets
    /// shared, see [`TableBuilder::share_endpoint_sets`]). Everything else is shared with this
    /// table, so the cost is that of the replaced hosts and of copying the maps' pointers.
    pub fn splice(&self, mut part: Table, replaced: &Replaced) -> Table {
        let mut table = self.clone();
        let mut users: HashMap<EndpointKey, i64> = HashMap::default();
        let hosts = replaced.hosts.iter().map(Some).chain(replaced.any_host.then_some(None));
        for host in hosts {
            if let Some(old) = table.take_virtual_host(host) {
                count_users(&mut users, old.endpoint_keys(), -1);
            }
            if let Some(new) = part.take_virtual_host(host) {
                count_users(&mut users, new.endpoint_keys(), 1);
                debug_assert_eq!(host, new.host.as_ref(), "a part's virtual host is under its own name");
                table.insert_virtual_host(new);
            }
            let Some(host) = host else { continue };
            if let HostRule::Exact(name) = host {
                table.passthrough.remove(&**name);
                if let Some(backend) = part.passthrough.remove(&**name) {
                    table.passthrough.insert(name.as_ref().into(), backend);
                }
            }
            table.tls.replace_host(host, &part.tls);
        }
        if replaced.default_route {
            if let Some(old) = table.default_route.take() {
                count_users(&mut users, old.endpoint_keys(), -1);
            }
            if let Some(new) = part.default_route.take() {
                count_users(&mut users, new.endpoint_keys(), 1);
                table.default_route = Some(new);
            }
        }
        for (key, delta) in users.into_iter().filter(|(_, delta)| *delta != 0) {
            let sets = &mut table.endpoint_sets;
            if let Some((_, count)) = sets.get_mut(&key) {
                let left = i64::from(*count) + delta;
                debug_assert!(left >= 0, "{key:?} has fewer users than were taken away");
                *count = u32::try_from(left).unwrap_or(0);
                if *count == 0 {
                    sets.remove(&key);
                }
            } else if let Some((set, _)) = part.endpoint_sets.get(&key)
                && let Ok(count @ 1..) = u32::try_from(delta)
            {
                sets.insert(Arc::new(key), (set.clone(), count));
            }
        }
        table
    }

    /// Takes the virtual host of a host rule (`None`: the rules without a host) out, and its
    /// routes out of the counts.
    fn take_virtual_host(&mut self, host: Option<&HostRule>) -> Option<Arc<VirtualHost>> {
        let removed = match host {
            Some(HostRule::Exact(name)) => self.exact_hosts.remove(name),
            Some(HostRule::Wildcard(suffix)) => self.wildcard_hosts.remove(suffix),
            None => self.any_host.take(),
        }?;
        self.routes -= removed.route_count();
        self.client_auth_hosts -= usize::from(removed.client_auth.is_some());
        Some(removed)
    }

    /// Puts a virtual host under its own name (which the map shares).
    fn insert_virtual_host(&mut self, vhost: Arc<VirtualHost>) {
        self.routes += vhost.route_count();
        self.client_auth_hosts += usize::from(vhost.client_auth.is_some());
        match vhost.host.clone() {
            Some(HostRule::Exact(name)) => self.exact_hosts.insert(name, vhost),
            Some(HostRule::Wildcard(suffix)) => self.wildcard_hosts.insert(suffix, vhost),
            None => self.any_host.replace(vhost),
        };
    }
}

// === impl TableBuilder ===

impl TableBuilder {
    /// An empty table to fill, serving `tls`'s default certificate.
    pub fn new(tls: TlsTable) -> Self {
        Self { table: Table::new(tls), shared_sets: None, endpoints_moved: 0 }
    }

    /// Makes the backends added from now on use `previous`'s endpoint set of their Service port
    /// where it has one, after moving it to the new endpoints: balancer state carries over, and
    /// requests still on the previous table see the new endpoints at once.
    pub fn share_endpoint_sets(&mut self, previous: &Table) {
        self.shared_sets = Some(previous.endpoint_sets.clone());
    }

    /// How many shared endpoint sets got other endpoints.
    pub fn endpoints_moved(&self) -> usize {
        self.endpoints_moved
    }

    /// The table, immutable from now on.
    pub fn build(mut self) -> Table {
        let table = &mut self.table;
        let mut users: HashMap<EndpointKey, i64> = HashMap::default();
        let (mut routes, mut client_auth_hosts) = (0, 0);
        let hosts = table.exact_hosts.values().chain(table.wildcard_hosts.values()).chain(&table.any_host);
        for vhost in hosts {
            routes += vhost.route_count();
            client_auth_hosts += usize::from(vhost.client_auth.is_some());
            count_users(&mut users, vhost.endpoint_keys(), 1);
        }
        let mut extra = table.default_route.as_ref().map(Route::endpoint_keys).unwrap_or_default();
        extra.extend(table.default_backend.iter().filter_map(|b| b.endpoint_set()).map(|s| s.key().clone()));
        extra.extend(table.streams.values().map(|stream| stream.endpoints.key().clone()));
        count_users(&mut users, extra, 1);
        for shard in table.endpoint_sets.shards.iter_mut() {
            Arc::make_mut(shard).retain(|key, (_, count)| {
                *count = users.get(&**key).map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX));
                *count > 0
            });
        }
        table.routes = routes;
        table.client_auth_hosts = client_auth_hosts;
        self.table
    }

    pub fn tls(&self) -> &TlsTable {
        &self.table.tls
    }

    pub fn set_global(&mut self, global: Arc<GlobalSettings>) {
        self.table.global = global;
    }

    pub fn tls_mut(&mut self) -> &mut TlsTable {
        &mut self.table.tls
    }

    pub fn default_route(&self) -> Option<&Route> {
        self.table.default_route.as_ref()
    }

    /// Adds a backend; its endpoint set (if any) is registered under its key, and a backend
    /// added later with the same key shares the first one's set (or the previous table's, see
    /// [`TableBuilder::share_endpoint_sets`]).
    pub fn add_backend(&mut self, mut backend: Backend) -> BackendRef {
        if let Target::Endpoints(set) = &mut backend.target {
            *set = self.register(set);
        }
        Arc::new(backend)
    }

    /// The endpoint set to use for `set`'s Service port: the one registered already, else the
    /// previous table's (given `set`'s endpoints), else `set`.
    fn register(&mut self, set: &Arc<EndpointSet>) -> Arc<EndpointSet> {
        if let Some((existing, _)) = self.table.endpoint_sets.get(set.key()) {
            return existing.clone();
        }
        let shared = self.shared_sets.as_ref().and_then(|shared| shared.get(set.key()));
        let chosen = match shared {
            Some((old, _)) => {
                self.endpoints_moved += usize::from(old.replace(set.addrs()));
                old.clone()
            }
            None => set.clone(),
        };
        self.table.endpoint_sets.insert(Arc::new(set.key().clone()), (chosen.clone(), 0));
        chosen
    }

    /// Adds a TCP or UDP service; its endpoint set is registered as a backend's is (shared with
    /// any backend of the same Service port). `false`, and nothing added, when its protocol and
    /// port are taken.
    pub fn add_stream(&mut self, mut stream: StreamService) -> bool {
        let slot = (stream.protocol, stream.port);
        if self.table.streams.contains_key(&slot) {
            return false;
        }
        stream.endpoints = self.register(&stream.endpoints);
        self.table.streams.insert(slot, stream);
        true
    }

    /// The virtual host of a host rule, if some rule defines it.
    pub fn virtual_host(&self, host: &HostRule) -> Option<&VirtualHost> {
        match host {
            HostRule::Exact(name) => self.table.exact_hosts.get(name).map(|v| &**v),
            HostRule::Wildcard(suffix) => self.table.wildcard_hosts.get(suffix).map(|v| &**v),
        }
    }

    /// Passes TLS connections for `host` (an exact name, lower case) through to `backend`
    /// undecrypted.
    pub fn set_passthrough(&mut self, host: &str, backend: BackendRef) {
        self.table.passthrough.insert(host.into(), backend);
    }

    /// Whether some rule defines this host.
    pub fn has_virtual_host(&self, host: &HostRule) -> bool {
        self.virtual_host(host).is_some()
    }

    /// The virtual host for a host rule (`None`: the rules without a host), if some rule
    /// defines it, to change its routes' policies.
    pub fn defined_virtual_host_mut(&mut self, host: Option<&HostRule>) -> Option<&mut VirtualHost> {
        let vhost = match host {
            Some(HostRule::Exact(name)) => self.table.exact_hosts.get_mut(name),
            Some(HostRule::Wildcard(suffix)) => self.table.wildcard_hosts.get_mut(suffix),
            None => self.table.any_host.as_mut(),
        };
        vhost.map(Arc::make_mut)
    }

    /// The virtual host for a host rule (`None`: the rules without a host), created if new.
    pub fn virtual_host_mut(&mut self, host: Option<&HostRule>) -> &mut VirtualHost {
        let (map, key) = match host {
            Some(HostRule::Exact(name)) => (&mut self.table.exact_hosts, name),
            Some(HostRule::Wildcard(suffix)) => (&mut self.table.wildcard_hosts, suffix),
            None => {
                let vhost = self.table.any_host.get_or_insert_with(|| Arc::new(VirtualHost::new(None)));
                return Arc::make_mut(vhost);
            }
        };
        if !map.contains_key(key) {
            // The map and the virtual host share the name.
            map.insert(key.clone(), Arc::new(VirtualHost::new(host.cloned())));
        }
        // Present: inserted just above if it was not.
        Arc::make_mut(map.get_mut(key).expect("virtual host present"))
    }

    /// Records the backend of `--default-backend-service`.
    pub fn set_default_backend(&mut self, backend: BackendRef) {
        self.table.default_backend = Some(backend);
    }

    /// Serves `alias` exactly as `host` (`server-alias`): a copy of its virtual host as it is
    /// now. `false` when `alias` has a virtual host already or `host` has none.
    pub fn add_alias(&mut self, alias: &HostRule, host: &HostRule) -> bool {
        if self.has_virtual_host(alias) || !self.has_virtual_host(host) {
            return false;
        }
        let mut copy = self.virtual_host_mut(Some(host)).clone();
        copy.host = Some(alias.clone());
        *self.virtual_host_mut(Some(alias)) = copy;
        true
    }

    /// The route for requests that match no host or path, to change its policy.
    pub fn default_route_mut(&mut self) -> Option<&mut Route> {
        self.table.default_route.as_mut()
    }

    /// Sets the route for requests that match no host or path. The first one set wins.
    pub fn set_default_route(&mut self, route: Route) -> Result<(), RouteConflict> {
        if let Some(existing) = &self.table.default_route {
            return Err(RouteConflict { existing: existing.ingress.clone(), rule: route.rule });
        }
        self.table.default_route = Some(route);
        Ok(())
    }
}

// === impl EndpointSets ===

impl EndpointSets {
    fn shard(&self, service: &NamespacedName) -> &SetShard {
        &self.shards[shard_of(service)]
    }

    fn get(&self, key: &EndpointKey) -> Option<&(Arc<EndpointSet>, u32)> {
        self.shard(&key.service).get(key)
    }

    /// An entry, to change: its shard is copied first if another table shares it.
    fn get_mut(&mut self, key: &EndpointKey) -> Option<&mut (Arc<EndpointSet>, u32)> {
        let shard = &mut self.shards[shard_of(&key.service)];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).get_mut(key)
    }

    fn insert(&mut self, key: Arc<EndpointKey>, value: (Arc<EndpointSet>, u32)) {
        Arc::make_mut(&mut self.shards[shard_of(&key.service)]).insert(key, value);
    }

    fn remove(&mut self, key: &EndpointKey) {
        Arc::make_mut(&mut self.shards[shard_of(&key.service)]).remove(key);
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<EndpointKey>, &(Arc<EndpointSet>, u32))> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

impl Default for EndpointSets {
    fn default() -> Self {
        Self { shards: (0..crate::host_map::SHARDS).map(|_| Arc::default()).collect() }
    }
}

/// The shard of a Service's endpoint sets.
fn shard_of(service: &NamespacedName) -> usize {
    crate::host_map::shard_index(service)
}

/// Adds `delta` users to each of `keys`.
fn count_users(
    users: &mut HashMap<EndpointKey, i64>,
    keys: impl IntoIterator<Item = EndpointKey>,
    delta: i64,
) {
    for key in keys {
        *users.entry(key).or_default() += delta;
    }
}

// === impl Route ===

impl Route {
    /// The Service ports whose endpoints the route uses: its backend's, its canary's and its
    /// `default-backend`'s.
    fn endpoint_keys(&self) -> Vec<EndpointKey> {
        let own = match &self.action {
            RouteAction::Forward(backend) => Some(backend),
            RouteAction::Redirect(_) => None,
        };
        let canary = self.policy.canary.as_ref().map(|canary| &canary.backend);
        own.into_iter()
            .chain(&self.policy.default_backend)
            .chain(canary)
            .filter_map(|backend| backend.endpoint_set())
            .map(|set| set.key().clone())
            .collect()
    }
}

/// Paths to route indexes: a list while a host has few paths, a hash map beyond. Most hosts have
/// one or two, and a hash map holding one costs a hundred bytes more than a list of one.
#[derive(Clone, Debug, Default, PartialEq)]
enum PathIndex {
    #[default]
    Empty,
    Few(Vec<(Box<str>, usize)>),
    /// Boxed, so that an index is no larger than its list form.
    Many(Box<HashMap<Box<str>, usize>>),
}

impl PathIndex {
    /// Beyond this many paths, a hash map.
    const FEW: usize = 8;

    fn get(&self, path: &str) -> Option<usize> {
        match self {
            Self::Empty => None,
            Self::Few(paths) => paths.iter().find(|(p, _)| **p == *path).map(|&(_, i)| i),
            Self::Many(paths) => paths.get(path).copied(),
        }
    }

    /// Adds a path not yet in the index.
    fn insert(&mut self, path: Box<str>, i: usize) {
        match self {
            Self::Empty => *self = Self::Few(vec![(path, i)]),
            Self::Few(paths) if paths.len() < Self::FEW => paths.push((path, i)),
            Self::Few(paths) => {
                let mut map: HashMap<Box<str>, usize> = paths.drain(..).collect();
                map.insert(path, i);
                *self = Self::Many(Box::new(map));
            }
            Self::Many(paths) => {
                paths.insert(path, i);
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }
}

// === impl VirtualHost ===

impl VirtualHost {
    pub fn new(host: Option<HostRule>) -> Self {
        Self {
            host,
            routes: Vec::new(),
            exact: PathIndex::default(),
            prefix: PathIndex::default(),
            max_prefix_len: 0,
            regex_order: None,
            fallback: None,
            client_auth: None,
        }
    }

    pub fn host(&self) -> Option<&HostRule> {
        self.host.as_ref()
    }

    /// Routes in the order they were added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn fallback(&self) -> Option<&Route> {
        self.fallback.as_deref()
    }

    /// The routes, to change their policies (their rules stay as they are).
    pub fn routes_mut(&mut self) -> &mut [Route] {
        &mut self.routes
    }

    /// The fallback, to change its policy.
    pub fn fallback_mut(&mut self) -> Option<&mut Route> {
        self.fallback.as_deref_mut()
    }

    pub fn client_auth(&self) -> Option<&Arc<ClientAuth>> {
        self.client_auth.as_ref()
    }

    /// Path routes and the fallback.
    fn route_count(&self) -> usize {
        self.routes.len() + usize::from(self.fallback.is_some())
    }

    /// The Service ports whose endpoints the host's routes use, each once.
    fn endpoint_keys(&self) -> Vec<EndpointKey> {
        let mut keys: Vec<EndpointKey> =
            self.routes.iter().chain(self.fallback.as_deref()).flat_map(Route::endpoint_keys).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Sets what the host asks of client certificates (`auth-tls-*`).
    pub fn set_client_auth(&mut self, client_auth: Arc<ClientAuth>) {
        self.client_auth = Some(client_auth);
    }

    /// Adds a route. A rule this host already has stays with the route that added it first.
    pub fn add_route(&mut self, route: Route) -> Result<(), RouteConflict> {
        match &route.rule {
            PathRule::Regex(_) => {
                if let Some(existing) = self.routes.iter().find(|r| r.rule == route.rule) {
                    return Err(RouteConflict { existing: existing.ingress.clone(), rule: route.rule });
                }
            }
            PathRule::Exact(p) | PathRule::Prefix(p) => {
                let map = if matches!(route.rule, PathRule::Exact(_)) { &self.exact } else { &self.prefix };
                if let Some(i) = map.get(p) {
                    return Err(RouteConflict { existing: self.routes[i].ingress.clone(), rule: route.rule });
                }
                let i = self.routes.len();
                if let PathRule::Prefix(p) = &route.rule {
                    self.max_prefix_len = self.max_prefix_len.max(p.len());
                    self.prefix.insert(p.clone(), i);
                } else {
                    self.exact.insert(p.clone(), i);
                }
            }
        }
        let is_regex = matches!(route.rule, PathRule::Regex(_));
        // Most hosts have one route: the first takes room for one (a push would take four).
        if self.routes.is_empty() {
            self.routes.reserve_exact(1);
        }
        self.routes.push(route);
        match &mut self.regex_order {
            Some(order) => insert_by_length(order, &self.routes, self.routes.len() - 1),
            None if is_regex => {
                let mut order = Vec::with_capacity(self.routes.len());
                (0..self.routes.len()).for_each(|i| insert_by_length(&mut order, &self.routes, i));
                self.regex_order = Some(order);
            }
            None => {}
        }
        Ok(())
    }

    /// Sets the route for requests of this host that match no path. The first one set wins.
    pub fn set_fallback(&mut self, route: Route) -> Result<(), RouteConflict> {
        if let Some(existing) = &self.fallback {
            return Err(RouteConflict { existing: existing.ingress.clone(), rule: route.rule });
        }
        self.fallback = Some(Box::new(route));
        Ok(())
    }

    /// The best route for a normalised path.
    ///
    /// On a host without `Regex` rules: an `Exact` rule equal to the path, else the longest
    /// `Prefix` rule that is an element-wise prefix of it (the Ingress spec). A path has one
    /// candidate prefix per `/`, so this is a few hash lookups, longest first.
    ///
    /// On a host with a `Regex` rule, as ingress-nginx does once any Ingress of the host uses
    /// `use-regex` or `rewrite-target`: every rule of the host becomes a case-insensitive regex
    /// anchored at the start (`Exact` and `Prefix` paths match as a string prefix, see
    /// [`PathRule::matches_on_regex_host`]) and the rules are tried longest first, the first
    /// match winning. So a longer `/admin` is tried before another Ingress's `/.*`.
    pub fn route(&self, path: &str) -> Option<(&Route, PathMatch)> {
        if let Some(order) = &self.regex_order {
            return order.iter().find_map(|&i| {
                let route = &self.routes[i];
                route.rule.matches_on_regex_host(path).map(|m| (route, m))
            });
        }
        if !self.exact.is_empty()
            && let Some(i) = self.exact.get(path)
        {
            return Some((&self.routes[i], PathMatch { len: path.len(), kind: PathMatchKind::Exact }));
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        // A rule of length L can only match at a `/` boundary no further than L.
        // Cuts are made only at a `/` byte, which is always a character boundary: the path may
        // hold multi-byte characters, so `max_prefix_len` itself may fall inside one.
        if candidate.len() > self.max_prefix_len {
            let bytes = candidate.as_bytes();
            let cut = match bytes[self.max_prefix_len] {
                b'/' => self.max_prefix_len,
                _ => bytes[..self.max_prefix_len].iter().rposition(|&b| b == b'/')?,
            };
            candidate = &candidate[..cut];
        }
        loop {
            if let Some(i) = self.prefix.get(candidate) {
                return Some((
                    &self.routes[i],
                    PathMatch { len: candidate.len(), kind: PathMatchKind::Prefix },
                ));
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }
}

fn rule_len(rule: &PathRule) -> usize {
    match rule {
        PathRule::Exact(p) | PathRule::Prefix(p) => p.len(),
        PathRule::Regex(r) => r.pattern().len(),
    }
}

/// Puts route `i` into `order` after every rule at least as long as its own.
fn insert_by_length(order: &mut Vec<usize>, routes: &[Route], i: usize) {
    let len = rule_len(&routes[i].rule);
    let at = order.iter().position(|&o| rule_len(&routes[o].rule) < len).unwrap_or(order.len());
    order.insert(at, i);
}

#[cfg(test)]
mod tests;
