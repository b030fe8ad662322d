//! TCP and UDP services (`--tcp-services-configmap`, `--udp-services-configmap`): a listener
//! per port of the current table, opened and closed as tables are published, forwarding what
//! arrives unchanged to the endpoints of the port's Service, as ingress-nginx's `stream` servers.
//!
//! Each connection (TCP) or session (UDP) looks its port up in the table current when it
//! starts, and picks an endpoint with the HTTP side's round robin from the live endpoint set, so
//! endpoint changes reach new connections at once. Closing a port stops accepting on it;
//! TCP connections already open carry on until they end or go idle, UDP sessions end with the
//! socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ostium_model::{Endpoint, EndpointSet, StreamSettings, Transport};
use ppp::PartialResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Proxy;
use crate::passthrough::Replayed;

/// The timeouts and limits of TCP and UDP services that no ConfigMap key sets (those that
/// do, `proxy-stream-*`, come with the table: [`ostium_model::StreamSettings`]).
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// Time to connect to an endpoint (nginx's stream `proxy_connect_timeout`, which
    /// ingress-nginx leaves at 60 s).
    pub connect_timeout: Duration,
    /// How long a client may take to send its PROXY protocol header on a port that expects one
    /// (ingress-nginx's `proxy-protocol-header-timeout`: 5 s).
    pub proxy_protocol_timeout: Duration,
    /// UDP sessions (clients) per port at most; datagrams of further clients are dropped until
    /// a session ends.
    pub max_udp_sessions: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            proxy_protocol_timeout: Duration::from_secs(5),
            max_udp_sessions: 4096,
        }
    }
}

/// The longest PROXY protocol header read from a client: a v1 line is at most 107 bytes; a v2
/// header is 16 bytes and its addresses and TLVs, which nginx reads up to 4 KiB of.
const MAX_PROXY_HEADER_BYTES: usize = 16 + 4096;
/// How often a port that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(1);
/// The largest reply datagram relayed to a UDP client (nginx's stream `proxy_buffer_size`);
/// longer ones are cut, as nginx's.
const MAX_REPLY_BYTES: usize = 16 * 1024;

/// Serves the TCP and UDP services of the current table on `ip` (the HTTP listener's address),
/// reconciling the open ports with the table each time `published` changes, until `shutdown`.
/// A port that cannot be bound (taken by another process, or still held by the listener of a
/// port just closed) is logged once and tried again every [`BIND_RETRY`].
pub async fn serve_streams(
    proxy: Proxy,
    ip: IpAddr,
    limits: StreamLimits,
    mut published: watch::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    // Dropping a port's sender stops its listener.
    let mut open: BTreeMap<(Transport, u16), oneshot::Sender<()>> = BTreeMap::new();
    let mut failing: BTreeSet<(Transport, u16)> = BTreeSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let wanted: BTreeSet<(Transport, u16)> =
            proxy.inner.tables.load().streams().map(|s| (s.protocol, s.port)).collect();
        failing.retain(|slot| wanted.contains(slot));
        open.retain(|&(protocol, port), _| {
            let keep = wanted.contains(&(protocol, port));
            if !keep {
                tracing::info!(%protocol, port, "stream service removed; its port is closed");
            }
            keep
        });
        for (protocol, port) in wanted {
            if open.contains_key(&(protocol, port)) {
                continue;
            }
            let addr = SocketAddr::new(ip, port);
            let (stop, stopped) = oneshot::channel::<()>();
            let stopped = async move {
                let _ = stopped.await;
            };
            let bound = match protocol {
                Transport::Tcp => TcpListener::bind(addr).await.map(|listener| {
                    tokio::spawn(serve_tcp(proxy.clone(), listener, port, limits.clone(), stopped));
                }),
                Transport::Udp => UdpSocket::bind(addr).await.map(|socket| {
                    tokio::spawn(serve_udp(proxy.clone(), socket, port, limits.clone(), stopped));
                }),
            };
            match bound {
                Ok(()) => {
                    tracing::info!(%protocol, %addr, "stream service listening");
                    failing.remove(&(protocol, port));
                    open.insert((protocol, port), stop);
                }
                Err(error) => {
                    if failing.insert((protocol, port)) {
                        tracing::error!(%protocol, %addr, %error, "cannot listen for a stream service; trying again");
                    }
                }
            }
        }
        let retry = async {
            match failing.is_empty() {
                true => std::future::pending().await,
                false => tokio::time::sleep(BIND_RETRY).await,
            }
        };
        tokio::select! {
            changed = published.changed() => if changed.is_err() { break },
            () = retry => {}
            () = &mut shutdown => break,
        }
    }
}

// === TCP ===

/// Accepts on one TCP port until `stop`, up to the listener connection limit.
async fn serve_tcp(
    proxy: Proxy,
    listener: TcpListener,
    port: u16,
    limits: StreamLimits,
    stop: impl Future<Output = ()>,
) {
    let permits =
        Arc::new(Semaphore::new(proxy.config().connections.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let mut stop = pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: pause rather than spin.
                    tracing::debug!(port, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            proxy.metrics().connection_refused();
            continue;
        };
        let (proxy, limits) = (proxy.clone(), limits.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _open = proxy.metrics().connection();
            if let Err(error) = forward_tcp(&proxy, stream, remote, port, &limits).await {
                tracing::debug!(port, %remote, %error, "stream connection ended with an error");
            }
        });
    }
}

/// One TCP connection: the PROXY protocol header read when the port expects one, an endpoint
/// connected (skipping those that refuse), a PROXY protocol header sent when the service asks,
/// then bytes copied both ways, half-closes passed on, until both sides end or it goes idle.
async fn forward_tcp(
    proxy: &Proxy,
    mut client: TcpStream,
    remote: SocketAddr,
    port: u16,
    limits: &StreamLimits,
) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let (service, settings, trusted) = {
        let table = proxy.inner.tables.load();
        let Some(service) = table.stream(Transport::Tcp, port).cloned() else { return Ok(()) };
        (service, table.global().stream.clone(), table.global().client_address.trusts(remote.ip()))
    };
    let local = client.local_addr()?;
    let (head, source, destination) = match service.decode_proxy_protocol {
        false => (Vec::new(), remote, local),
        true => {
            let read = read_proxy_header(&mut client);
            match tokio::time::timeout(limits.proxy_protocol_timeout, read).await {
                // The header's addresses are believed from `proxy-real-ip-cidr` peers only, as
                // nginx's `set_real_ip_from`; another peer is named as itself.
                Ok(Ok(header)) if trusted => {
                    (header.rest, header.source.unwrap_or(remote), header.destination.unwrap_or(local))
                }
                Ok(Ok(header)) => (header.rest, remote, local),
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no PROXY protocol header in time"));
                }
            }
        }
    };
    let Some((mut upstream, endpoint)) = connect(proxy, &service.endpoints, &settings, limits).await else {
        tracing::debug!(port, %remote, "no endpoint of the stream service could be reached; closing");
        return Ok(());
    };
    if service.send_proxy_protocol {
        // `proxy_protocol on` in ingress-nginx's template: the text (v1) header.
        let header = ppp::v1::Addresses::from((source, destination)).to_string();
        upstream.write_all(header.as_bytes()).await?;
    }
    endpoint.start_request();
    let result = crate::tunnel::tunnel(Replayed::new(head, client), upstream, settings.timeout).await;
    endpoint.finish_request();
    result
}

/// A connection to one of the endpoints: the balancer's choice, then others while
/// `proxy-stream-next-upstream` allows (endpoints that fail are counted toward ejection, as on
/// the HTTP side).
async fn connect(
    proxy: &Proxy,
    set: &EndpointSet,
    settings: &StreamSettings,
    limits: &StreamLimits,
) -> Option<(TcpStream, Arc<Endpoint>)> {
    let endpoints = set.load();
    let upstream = proxy.upstream();
    let tries = match (settings.next_upstream, settings.next_upstream_tries) {
        (false, _) => 1,
        (true, Some(tries)) => tries.get() as usize,
        (true, None) => endpoints.len(),
    };
    let started = Instant::now();
    let mut tried = Vec::new();
    while tried.len() < tries {
        let late = settings.next_upstream_timeout.is_some_and(|limit| started.elapsed() >= limit);
        if !tried.is_empty() && late {
            return None;
        }
        let endpoint = crate::upstream::pick(&endpoints, upstream.now_ms(), &tried)?;
        match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                endpoint.record_success();
                return Some((stream, endpoint));
            }
            _ => {
                proxy.metrics().connect_error();
                endpoint.record_failure(upstream.now_ms(), upstream.eject_for_ms());
                tried.push(endpoint.addr);
            }
        }
    }
    None
}

/// What a client's PROXY protocol header says, and the bytes read after it.
struct ProxyHeader {
    /// `None` for a `LOCAL` or `UNKNOWN` header, or a non-IP family: the connection's own
    /// addresses stand.
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    rest: Vec<u8>,
}

/// Reads a PROXY protocol header, v1 or v2, from the start of a connection.
async fn read_proxy_header(client: &mut TcpStream) -> io::Result<ProxyHeader> {
    let invalid = |message: &str| io::Error::new(io::ErrorKind::InvalidData, message.to_owned());
    let mut bytes = Vec::with_capacity(256);
    loop {
        let room = MAX_PROXY_HEADER_BYTES.saturating_sub(bytes.len());
        if room == 0 {
            return Err(invalid("PROXY protocol header too long"));
        }
        if (&mut *client).take(room as u64).read_buf(&mut bytes).await? == 0 {
            return Err(invalid("connection closed before a complete PROXY protocol header"));
        }
        let parsed = ppp::HeaderResult::parse(&bytes);
        if parsed.is_incomplete() {
            continue;
        }
        let (length, addresses) = match parsed {
            ppp::HeaderResult::V1(Ok(header)) => {
                let addresses = match header.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        Some(v4(a.source_address, a.source_port, a.destination_address, a.destination_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        Some(v6(a.source_address, a.source_port, a.destination_address, a.destination_port))
                    }
                    ppp::v1::Addresses::Unknown => None,
                };
                (header.header.len(), addresses)
            }
            ppp::HeaderResult::V2(Ok(header)) => {
                let addresses = match (header.command, header.addresses) {
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                        Some(v4(a.source_address, a.source_port, a.destination_address, a.destination_port))
                    }
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                        Some(v6(a.source_address, a.source_port, a.destination_address, a.destination_port))
                    }
                    _ => None,
                };
                (header.len(), addresses)
            }
            _ => return Err(invalid("not a PROXY protocol header")),
        };
        let rest = bytes.split_off(length);
        let (source, destination) = addresses.unzip();
        return Ok(ProxyHeader { source, destination, rest });
    }
}

fn v4(
    source: Ipv4Addr,
    source_port: u16,
    destination: Ipv4Addr,
    destination_port: u16,
) -> (SocketAddr, SocketAddr) {
    (SocketAddr::from((source, source_port)), SocketAddr::from((destination, destination_port)))
}

fn v6(
    source: Ipv6Addr,
    source_port: u16,
    destination: Ipv6Addr,
    destination_port: u16,
) -> (SocketAddr, SocketAddr) {
    (SocketAddr::from((source, source_port)), SocketAddr::from((destination, destination_port)))
}

// === UDP ===

/// One client of a UDP port: its own socket connected to the endpoint chosen for it, and the
/// task relaying that endpoint's replies back.
struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    /// Milliseconds (since the port opened) of the last datagram either way.
    last_active: Arc<AtomicU64>,
    /// Datagrams of the client so far.
    requests: Arc<AtomicU64>,
    /// `proxy-stream-responses: 0`: the session ends with each datagram sent.
    expects_no_reply: bool,
    replies: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Receives on one UDP port until `stop`: each client gets a session, which ends after the
/// idle timeout (or when its endpoint refuses); its datagrams go to its session's endpoint,
/// and the endpoint's replies back to the client from the port.
async fn serve_udp(
    proxy: Proxy,
    socket: UdpSocket,
    port: u16,
    limits: StreamLimits,
    stop: impl Future<Output = ()>,
) {
    let socket = Arc::new(socket);
    let opened = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let (ended, mut ended_sessions) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut next_id = 0u64;
    let mut datagram = vec![0u8; 64 * 1024];
    let mut stop = pin!(stop);
    loop {
        let (length, client) = tokio::select! {
            received = socket.recv_from(&mut datagram) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(port, %error, "UDP receive failed");
                    continue;
                }
            },
            Some((client, id)) = ended_sessions.recv() => {
                if sessions.get(&client).is_some_and(|s| s.id == id) {
                    sessions.remove(&client);
                }
                continue;
            }
            () = &mut stop => return,
        };
        // A session whose replies are all in has ended, even if the news is still on its way.
        if sessions.get(&client).is_some_and(|s| s.replies.is_finished()) {
            sessions.remove(&client);
        }
        if !sessions.contains_key(&client) {
            if sessions.len() >= limits.max_udp_sessions {
                tracing::debug!(port, %client, "UDP session limit reached; datagram dropped");
                continue;
            }
            next_id += 1;
            let opening = SessionStart { socket: &socket, port, client, id: next_id, opened, ended: &ended };
            let Some(session) = opening.open(&proxy).await else { continue };
            sessions.insert(client, session);
        }
        let Some(session) = sessions.get(&client) else { continue };
        session.last_active.store(millis_since(opened), Ordering::Relaxed);
        session.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = session.upstream.send(&datagram[..length]).await {
            tracing::debug!(port, %client, %error, "UDP datagram not sent to the endpoint");
        }
        if session.expects_no_reply {
            sessions.remove(&client);
        }
    }
}

/// What a new session needs to know.
struct SessionStart<'a> {
    socket: &'a Arc<UdpSocket>,
    port: u16,
    client: SocketAddr,
    id: u64,
    opened: Instant,
    ended: &'a mpsc::UnboundedSender<(SocketAddr, u64)>,
}

impl SessionStart<'_> {
    /// A session with an endpoint picked from the port's service; `None` when it has none.
    async fn open(self, proxy: &Proxy) -> Option<Session> {
        let (endpoints, settings) = {
            let table = proxy.inner.tables.load();
            (table.stream(Transport::Udp, self.port)?.endpoints.load(), table.global().stream.clone())
        };
        let endpoint = crate::upstream::pick(&endpoints, proxy.upstream().now_ms(), &[])?;
        let any: IpAddr = match endpoint.addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let connected = async {
            let upstream = UdpSocket::bind((any, 0)).await?;
            upstream.connect(endpoint.addr).await?;
            io::Result::Ok(upstream)
        };
        let upstream = match connected.await {
            Ok(upstream) => Arc::new(upstream),
            Err(error) => {
                tracing::debug!(port = self.port, endpoint = %endpoint.addr, %error, "UDP session not opened");
                return None;
            }
        };
        let last_active = Arc::new(AtomicU64::new(millis_since(self.opened)));
        let requests = Arc::new(AtomicU64::new(0));
        let relay = Relay {
            upstream: upstream.clone(),
            socket: self.socket.clone(),
            client: self.client,
            last_active: last_active.clone(),
            requests: requests.clone(),
            responses: settings.responses,
            opened: self.opened,
            idle: settings.timeout,
        };
        let (ended, client, id) = (self.ended.clone(), self.client, self.id);
        let replies = tokio::spawn(async move {
            relay.run().await;
            let _ = ended.send((client, id));
        });
        let expects_no_reply = settings.responses == Some(0);
        Some(Session { id: self.id, upstream, last_active, requests, expects_no_reply, replies })
    }
}

/// Relays an endpoint's replies to its session's client.
struct Relay {
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last_active: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    /// Replies per client datagram that end the session.
    responses: Option<u32>,
    opened: Instant,
    idle: Duration,
}

impl Relay {
    /// Until the expected replies are in, the session is idle for the timeout, or the endpoint
    /// refuses.
    async fn run(self) {
        let mut reply = vec![0u8; MAX_REPLY_BYTES];
        let mut replies = 0u64;
        loop {
            let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
            let deadline = self.opened + last + self.idle;
            tokio::select! {
                received = self.upstream.recv(&mut reply) => match received {
                    Ok(length) => {
                        self.last_active.store(millis_since(self.opened), Ordering::Relaxed);
                        let _ = self.socket.send_to(&reply[..length], self.client).await;
                        replies += 1;
                        let requests = self.requests.load(Ordering::Relaxed);
                        if self.responses.is_some_and(|n| replies >= u64::from(n) * requests) {
                            return;
                        }
                    }
                    // The endpoint's port is closed (an ICMP error on the connected socket): the
                    // client's next datagram opens a new session.
                    Err(_) => return,
                },
                () = tokio::time::sleep_until(deadline) => {
                    let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
                    if Instant::now() >= self.opened + last + self.idle {
                        return;
                    }
                }
            }
        }
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
