//! The upstream side: pooled clients for the process (shared across table versions, pooled per
//! endpoint address), endpoint choice, and passive health.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Request, Uri, Version};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ostium_model::{BackendTls, Endpoint, Endpoints, MAX_CONNECT_TIMEOUT, Protocol};

use crate::ProxyConfig;
use crate::upstream_body::UpstreamBody;

/// The clients of the process: one set for the proxy's connect timeout, and one set for each
/// other connect timeout a route asks for, made when first needed. A connector has a single
/// connect timeout, so each set pools its own connections; route timeouts are whole seconds up
/// to [`MAX_CONNECT_TIMEOUT`], which bounds the number of sets. Routes with TLS settings of their
/// own (`proxy-ssl-*`) get TLS clients of their own, made when first needed.
#[derive(Debug)]
pub(crate) struct Upstream {
    default: Clients,
    default_connect_timeout: Duration,
    /// Index `n` holds the clients for a connect timeout of `n + 1` seconds.
    by_connect_timeout: Box<[OnceLock<Clients>]>,
    /// The clients for each route TLS settings and connect timeout in use. Found by the
    /// settings' `Arc`, else by their value: a new table with the same settings keeps the
    /// pooled connections. Entries no table holds any more go when another is added.
    by_backend_tls: RwLock<Vec<Arc<TlsClients>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    started: Instant,
    eject_for_ms: u64,
}

/// One client per backend protocol, each pooling connections per endpoint address.
#[derive(Debug)]
struct Clients {
    http1: Client<Timed<HttpConnector>, UpstreamBody>,
    h2c: Client<Timed<HttpConnector>, UpstreamBody>,
    https: Client<Timed<HttpsConnector<HttpConnector>>, UpstreamBody>,
    h2s: Client<Timed<HttpsConnector<HttpConnector>>, UpstreamBody>,
}

/// The TLS clients for one route TLS settings and connect timeout.
#[derive(Clone, Debug)]
struct TlsClients {
    settings: Arc<BackendTls>,
    connect_timeout: Duration,
    https: Client<Timed<HttpsConnector<HttpConnector>>, UpstreamBody>,
    h2s: Client<Timed<HttpsConnector<HttpConnector>>, UpstreamBody>,
}

/// A connector whose connections, TLS handshake included (as nginx's `proxy_connect_timeout`),
/// fail with `TimedOut` when not made in time.
#[derive(Clone, Debug)]
struct Timed<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Upstream {
    pub(crate) fn new(config: &ProxyConfig, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        let seconds = MAX_CONNECT_TIMEOUT.as_secs() as usize;
        Self {
            default: Clients::new(config.connect_timeout, &provider),
            default_connect_timeout: config.connect_timeout,
            by_connect_timeout: (0..seconds).map(|_| OnceLock::new()).collect(),
            by_backend_tls: RwLock::default(),
            provider,
            started: Instant::now(),
            eject_for_ms: config.eject_for.as_millis() as u64,
        }
    }

    /// Sends a request with the client for a backend protocol, a route's TLS settings (used
    /// with HTTPS and GRPCS) and a route's connect timeout (`None`: the proxy's). The URI's
    /// scheme must be [`scheme`]'s for that protocol.
    pub(crate) fn request(
        &self,
        protocol: Protocol,
        tls: Option<&Arc<BackendTls>>,
        connect_timeout: Option<Duration>,
        request: Request<UpstreamBody>,
    ) -> ResponseFuture {
        if let Some(tls) = tls.filter(|_| matches!(protocol, Protocol::Https | Protocol::Grpcs)) {
            let clients = self.tls_clients(tls, connect_timeout);
            return match protocol {
                Protocol::Grpcs => clients.h2s.request(request),
                _ => clients.https.request(request),
            };
        }
        let clients = match connect_timeout {
            Some(timeout) if timeout != self.default_connect_timeout => {
                // Whole seconds from 1 to the maximum (translation gives nothing else).
                let seconds = timeout.as_secs().clamp(1, self.by_connect_timeout.len() as u64);
                self.by_connect_timeout[seconds as usize - 1]
                    .get_or_init(|| Clients::new(Duration::from_secs(seconds), &self.provider))
            }
            _ => &self.default,
        };
        clients.request(protocol, request)
    }

    /// The TLS clients for a route's settings and connect timeout, made when first needed.
    fn tls_clients(&self, settings: &Arc<BackendTls>, connect_timeout: Option<Duration>) -> Arc<TlsClients> {
        let timeout = connect_timeout.unwrap_or(self.default_connect_timeout);
        let same = |c: &&Arc<TlsClients>| c.connect_timeout == timeout && Arc::ptr_eq(&c.settings, settings);
        let known =
            self.by_backend_tls.read().unwrap_or_else(PoisonError::into_inner).iter().find(same).cloned();
        if let Some(clients) = known {
            return clients;
        }
        let mut all = self.by_backend_tls.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(clients) = all.iter().find(same) {
            return clients.clone();
        }
        // Settings equal to an earlier table's keep its clients, and their pooled connections.
        let equal = all.iter().find(|c| c.connect_timeout == timeout && c.settings == *settings);
        let clients = Arc::new(match equal {
            Some(earlier) => TlsClients { settings: settings.clone(), ..TlsClients::clone(earlier) },
            None => TlsClients::new(settings.clone(), timeout),
        });
        // Settings that only this list holds belong to no table any more.
        all.retain(|c| Arc::strong_count(&c.settings) > 1);
        all.push(clients.clone());
        clients
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

impl Clients {
    fn new(connect_timeout: Duration, provider: &Arc<rustls::crypto::CryptoProvider>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false); // the TLS connectors hand it https URIs
        // hyper-rustls offers ALPN `http/1.1` or `h2` from the version enabled.
        let tls = || {
            HttpsConnectorBuilder::new().with_tls_config(upstream_tls_config(provider.clone())).https_only()
        };
        let https = tls().enable_http1().wrap_connector(connector.clone());
        let h2s = tls().enable_http2().wrap_connector(connector.clone());
        Self {
            http1: client_builder(false).build(Timed::new(connector.clone(), connect_timeout)),
            h2c: client_builder(true).build(Timed::new(connector, connect_timeout)),
            https: client_builder(false).build(Timed::new(https, connect_timeout)),
            h2s: client_builder(true).build(Timed::new(h2s, connect_timeout)),
        }
    }

    fn request(&self, protocol: Protocol, request: Request<UpstreamBody>) -> ResponseFuture {
        match protocol {
            Protocol::Http => self.http1.request(request),
            Protocol::Grpc => self.h2c.request(request),
            Protocol::Https => self.https.request(request),
            Protocol::Grpcs => self.h2s.request(request),
        }
    }
}

impl TlsClients {
    fn new(settings: Arc<BackendTls>, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false); // the TLS connectors hand it https URIs
        // The name checked and sent is the settings', not the endpoint's address.
        let tls = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::clone(&settings.config))
                .https_only()
                .with_server_name_resolver(FixedServerNameResolver::new(
                    settings.settings.server_name.clone(),
                ))
        };
        let https = tls().enable_http1().wrap_connector(connector.clone());
        let h2s = tls().enable_http2().wrap_connector(connector);
        Self {
            https: client_builder(false).build(Timed::new(https, connect_timeout)),
            h2s: client_builder(true).build(Timed::new(h2s, connect_timeout)),
            settings,
            connect_timeout,
        }
    }
}

impl<C> Timed<C> {
    fn new(inner: C, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<C> tower_service::Service<Uri> for Timed<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, timeout) = (self.inner.call(uri), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            }
        })
    }
}

/// A client builder with the pool settings of every upstream client.
fn client_builder(http2_only: bool) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(320)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only);
    builder
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
    use ostium_model::{BackendTlsSettings, EndpointKey, EndpointSet, NamespacedName};
    use rustls::pki_types::ServerName;

    use super::*;

    #[tokio::test]
    async fn tls_clients_follow_equal_settings_and_go_with_the_last_table_holding_them() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let upstream = Upstream::new(&ProxyConfig::default(), provider.clone());
        let tls = |name: &str| {
            let settings = BackendTlsSettings {
                source: "default/backend-tls".into(),
                verify: None,
                server_name: ServerName::try_from(name.to_owned()).unwrap(),
                send_server_name: false,
                versions: vec![rustls::ProtocolVersion::TLSv1_2],
                cipher_suites: None,
                client_certificate: None,
            };
            Arc::new(BackendTls::new(settings, None, &provider).unwrap())
        };
        let listed = || -> Vec<String> {
            let all = upstream.by_backend_tls.read().unwrap();
            all.iter().map(|c| c.settings.settings.server_name.to_str().into_owned()).collect()
        };
        let (first, again) = (tls("a.internal"), tls("a.internal"));
        let clients = upstream.tls_clients(&first, None);
        assert!(Arc::ptr_eq(&clients, &upstream.tls_clients(&first, None)));
        // Equal settings of a newer table: an entry of their own, sharing the clients.
        let newer = upstream.tls_clients(&again, None);
        assert!(Arc::ptr_eq(&newer.settings, &again) && !Arc::ptr_eq(&clients, &newer));
        assert_eq!(listed(), ["a.internal", "a.internal"]);
        drop((first, clients));
        let other = tls("b.internal");
        upstream.tls_clients(&other, None);
        assert_eq!(listed(), ["a.internal", "b.internal"], "the first table's entry is gone");
        upstream.tls_clients(&other, Some(Duration::from_secs(1)));
        assert_eq!(listed(), ["a.internal", "b.internal", "b.internal"], "one per connect timeout");
    }

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
