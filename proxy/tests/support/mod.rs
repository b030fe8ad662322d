//! Loopback harness for proxy tests: a proxy on port 0 fed a hand-built table, echo backends,
//! and small clients that speak raw HTTP/1.1, HTTP/2 and TLS.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ostium_model::{
    Backend, Certificate, EndpointKey, EndpointSet, HostRule, NamespacedName, PathRule, Policy, PortRef,
    Protocol, Route, RouteAction, Table, TableStore, Target, TlsTable,
};
use ostium_proxy::{Proxy, ProxyConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy serving on 127.0.0.1 (HTTP and HTTPS), stopped by [`Harness::shutdown`] or on drop.
pub struct Harness {
    pub store: TableStore,
    pub http: SocketAddr,
    pub https: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    pub async fn start(table: Table) -> Self {
        Self::start_with(table, ProxyConfig { access_log: false, ..ProxyConfig::default() }).await
    }

    pub async fn start_with(table: Table, config: ProxyConfig) -> Self {
        let store = TableStore::new(table);
        store.publish(store.current());
        let proxy = Proxy::new(store.reader(), config, ostium_proxy::ProxyMetrics::default(), provider());
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http, https) = (http_listener.local_addr().unwrap(), https_listener.local_addr().unwrap());
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tls = ostium_proxy::server_config(store.reader(), provider());
        let tasks = vec![
            tokio::spawn(ostium_proxy::serve_http(proxy.clone(), http_listener, until(stopped.clone()))),
            tokio::spawn(ostium_proxy::serve_https(proxy, https_listener, tls, until(stopped))),
        ];
        Self { store, http, https, stop, tasks }
    }

    /// Replaces the table being served.
    pub fn publish(&self, table: Table) {
        self.store.publish(Arc::new(table));
    }

    /// Stops accepting and waits until in-flight requests are drained.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The crypto provider the proxy is given (one per process in the binary).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// --- Tables ---

pub use ostium_test_support::certificate;

/// Builds tables route by route; each route gets its own backend named after its service.
pub struct TableBuilder {
    table: ostium_model::TableBuilder,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::with_default_certificate(certificate(&["default.invalid"]))
    }

    pub fn with_default_certificate(default: Certificate) -> Self {
        Self { table: ostium_model::TableBuilder::new(TlsTable::new(default)) }
    }

    pub fn route(self, host: Option<&str>, path: &str, service: &str, target: Target) -> Self {
        self.route_with(host, PathRule::prefix(path).unwrap(), service, target, Policy::default())
    }

    pub fn route_with(
        self,
        host: Option<&str>,
        rule: PathRule,
        service: &str,
        target: Target,
        policy: Policy,
    ) -> Self {
        self.route_full(host, rule, service, target, policy, Protocol::Http)
    }

    /// Everything under `/` of `host` to `service` at `addr`, with `policy`.
    pub fn site(self, host: Option<&str>, service: &str, addr: SocketAddr, policy: Policy) -> Self {
        self.route_with(host, PathRule::prefix("/").unwrap(), service, endpoints(service, &[addr]), policy)
    }

    /// Everything under `/` of `host` to `service` at `addr` over TLS (`backend-protocol: HTTPS`),
    /// with `policy`.
    pub fn https_site(self, host: &str, service: &str, addr: SocketAddr, policy: Policy) -> Self {
        self.tls_site(host, service, addr, policy, Protocol::Https)
    }

    /// As [`Self::https_site`], with HTTPS or GRPCS.
    pub fn tls_site(
        self,
        host: &str,
        service: &str,
        addr: SocketAddr,
        policy: Policy,
        protocol: Protocol,
    ) -> Self {
        let (rule, target) = (PathRule::prefix("/").unwrap(), endpoints(service, &[addr]));
        self.route_full(Some(host), rule, service, target, policy, protocol)
    }

    pub fn route_protocol(self, path: &str, service: &str, target: Target, protocol: Protocol) -> Self {
        self.route_full(None, PathRule::prefix(path).unwrap(), service, target, Policy::default(), protocol)
    }

    fn route_full(
        mut self,
        host: Option<&str>,
        rule: PathRule,
        service: &str,
        target: Target,
        policy: Policy,
        protocol: Protocol,
    ) -> Self {
        let backend = self.table.add_backend(Backend {
            service: Arc::new(NamespacedName::new("default", service)),
            port: PortRef::Number(80),
            protocol,
            target,
        });
        let host = host.map(|h| h.parse::<HostRule>().unwrap());
        let route = Route {
            rule,
            ingress: Some(Arc::new(NamespacedName::new("default", service))),
            action: RouteAction::Forward(backend),
            policy: Arc::new(policy),
        };
        self.table.virtual_host_mut(host.as_ref()).add_route(route).unwrap();
        self
    }

    /// A backend no route uses yet (a default backend), speaking HTTP.
    pub fn backend(&mut self, service: &str, target: Target) -> ostium_model::BackendRef {
        self.table.add_backend(Backend {
            service: Arc::new(NamespacedName::new("default", service)),
            port: PortRef::Number(80),
            protocol: Protocol::Http,
            target,
        })
    }

    /// `--default-backend-service`'s backend (error pages of routes without one of their own).
    pub fn default_backend(mut self, backend: ostium_model::BackendRef) -> Self {
        self.table.set_default_backend(backend);
        self
    }

    /// Every request for `host` redirected to `to` (`from-to-www-redirect`'s other name).
    pub fn redirect_host(mut self, host: &str, to: &str) -> Self {
        let host = host.parse::<HostRule>().unwrap();
        let route = Route {
            rule: PathRule::prefix("/").unwrap(),
            ingress: None,
            action: RouteAction::Redirect(ostium_model::HostRedirect::new(to)),
            policy: Arc::default(),
        };
        self.table.virtual_host_mut(Some(&host)).set_fallback(route).unwrap();
        self
    }

    /// What `host` (`None`: the rules without a host) asks of client certificates (`auth-tls-*`).
    pub fn client_auth(mut self, host: Option<&str>, client_auth: ostium_model::ClientAuth) -> Self {
        let host = host.map(|h| h.parse::<HostRule>().unwrap());
        self.table.virtual_host_mut(host.as_ref()).set_client_auth(Arc::new(client_auth));
        self
    }

    pub fn tls(mut self, host: &str, certificate: Certificate) -> Self {
        assert!(self.table.tls_mut().insert(&host.parse().unwrap(), certificate));
        self
    }

    /// TLS connections for `host` passed through undecrypted to `service` at `addr`.
    pub fn passthrough(mut self, host: &str, service: &str, addr: SocketAddr) -> Self {
        let backend = self.backend(service, endpoints(service, &[addr]));
        self.table.set_passthrough(host, backend);
        self
    }

    /// Handshake settings of `host` (`ssl-ciphers`, `ssl-prefer-server-ciphers`).
    pub fn server_tls(mut self, host: &str, settings: ostium_model::ServerTls) -> Self {
        self.table.tls_mut().set_server_tls(&host.parse().unwrap(), settings);
        self
    }

    /// The ConfigMap's handshake settings, for hosts without their own.
    pub fn default_server_tls(mut self, settings: ostium_model::ServerTls) -> Self {
        self.table.tls_mut().set_default_server_tls(settings);
        self
    }

    /// The ConfigMap's access log settings.
    pub fn access_log_settings(self, access_log: ostium_model::AccessLogSettings) -> Self {
        self.global(ostium_model::GlobalSettings { access_log, ..Default::default() })
    }

    /// The ConfigMap's settings for every request (`--configmap`).
    pub fn global(mut self, settings: ostium_model::GlobalSettings) -> Self {
        self.table.set_global(Arc::new(settings));
        self
    }

    pub fn build(self) -> Table {
        self.table.build()
    }
}

/// A TLS server config for a backend (HTTP/1.1 and HTTP/2 by ALPN).
pub fn backend_tls(name: &str) -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Endpoints for a service (each call makes a new set; use a distinct service per call).
pub fn endpoints(service: &str, addrs: &[SocketAddr]) -> Target {
    let key = EndpointKey {
        service: NamespacedName::new("default", service),
        port: 80,
        protocol: ostium_model::Transport::Tcp,
    };
    Target::Endpoints(Arc::new(EndpointSet::new(key, addrs.iter().copied())))
}

/// An address nothing listens on (a port bound and released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// --- Raw HTTP/1.1 ---

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends raw bytes on a new connection and reads until the server closes (10 s at most).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

/// `GET path` with `Host: host` and `Connection: close`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await
}

// --- HTTP/2 with prior knowledge ---

/// An HTTP/2 client on a new plain connection, and the connection's task (it ends when the
/// server closes the connection).
pub async fn h2c(
    addr: SocketAddr,
) -> (hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let executor = hyper_util::rt::TokioExecutor::new();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, connection)
}

// --- TLS ---

/// A TLS client that accepts any certificate, so tests can look at which one was presented.
pub fn tls_client(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    // The proxy's own client configuration toward backends accepts any certificate, as a test
    // client must here.
    let mut config = ostium_proxy::upstream_tls_config(provider());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Handshakes with `sni` and returns the leaf certificate presented and the ALPN protocol.
pub async fn handshake(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = tls_client(alpn).connect(ServerName::try_from(sni.to_owned()).unwrap(), stream).await.unwrap();
    let (_, connection) = tls.get_ref();
    (connection.peer_certificates().unwrap()[0].clone(), connection.alpn_protocol().map(<[u8]>::to_vec))
}

/// External auth at `url` with every other setting at its default.
pub fn external_auth(url: ostium_model::Template) -> ostium_model::ExternalAuth {
    ostium_model::ExternalAuth {
        url,
        method: None,
        signin: None,
        response_headers: Box::default(),
        proxy_set_headers: Box::default(),
        request_redirect: None,
        always_set_cookie: false,
        cache: None,
    }
}
