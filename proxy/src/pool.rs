//! Connections to endpoints, kept for the next request.
//!
//! Each endpoint keeps its own connections ([`Endpoint::connections`]): the balancer's pick is
//! the pool, so a request finds an idle connection with one uncontended lock, no key built or
//! hashed. An endpoint that stays across table swaps and endpoint updates keeps its
//! connections; one that goes closes them. Names (ExternalName Services, mirror targets) have
//! no endpoint object and keep theirs in a map of the process.
//!
//! HTTP/1.1 connections serve one request at a time: a connection goes back to its pool when
//! the response body has been read to its end (see [`Checkin`]), and is closed by its own task
//! after [`IDLE_TIMEOUT`] unused. HTTP/2 connections are shared: one per endpoint carries every
//! request at once, and is let go after the same idle time.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ostium_model::{BackendTls, Endpoint, Protocol};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::upstream_body::UpstreamBody;

/// How long an unused connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle HTTP/1.1 connections kept per endpoint and protocol; more are closed.
const MAX_IDLE: usize = 320;

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Destination<'a> {
    Endpoint(&'a Endpoint),
    /// A DNS name and port, resolved when connecting.
    Name(&'a Authority),
}

/// How a pool's connections are made: the protocol, and for TLS the client settings (with the
/// protocol's ALPN) and the name the certificate is checked against (`None`: the endpoint's
/// address, which sends no SNI, or the destination's name).
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) protocol: Protocol,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// The pools of one destination: one for each protocol and TLS settings in use, plain HTTP/1.1
/// first.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    http: Arc<Pool>,
    others: Mutex<Vec<OtherPool>>,
}

/// A pool for a protocol other than plain HTTP/1.1, with the route's TLS settings it was made
/// for (`None`: the proxy's defaults). Held here only, the settings show that no table uses
/// them any more.
#[derive(Debug)]
struct OtherPool {
    protocol: Protocol,
    settings: Option<Arc<BackendTls>>,
    pool: Arc<Pool>,
}

/// The connections of one destination spoken to one way.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Idle HTTP/1.1 connections, ready for a request, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection.
    shared: Mutex<Option<Shared>>,
    /// Held while an HTTP/2 connection is made, so that requests finding none wait for one
    /// rather than each making its own.
    connecting: tokio::sync::Mutex<()>,
    /// For pools other than plain HTTP/1.1: how they connect.
    dialer: Option<Dialer>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    clock: Arc<IdleClock>,
}

#[derive(Clone, Debug)]
struct Shared {
    sender: http2::SendRequest<UpstreamBody>,
    clock: Arc<IdleClock>,
}

/// When a connection was last used, in milliseconds since [`EPOCH`]; [`BUSY`] while in use.
#[derive(Debug)]
struct IdleClock(AtomicU64);

const BUSY: u64 = u64::MAX;
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// An endpoint's response body, which returns its HTTP/1.1 connection to the pool once read to
/// the end.
#[derive(Debug)]
pub(crate) struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
    ended: bool,
}

/// An HTTP/1.1 connection serving a response, to go back to its pool once the response body
/// has been read to the end. Dropped earlier, the connection closes with it.
#[derive(Debug)]
struct Checkin {
    /// Held until then: a pool whose endpoint went meanwhile closes the connection as it goes.
    pool: Arc<Pool>,
    connection: Idle,
}

/// Why a request could not be sent, or got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (TCP, TLS or the HTTP/2 preface), or not within the connect
    /// timeout (`TimedOut`): nothing was sent.
    #[error("cannot connect to the endpoint: {0}")]
    Connect(#[source] std::io::Error),
    /// The exchange failed after the request was sent, or while sending it.
    #[error("the exchange with the endpoint failed: {0}")]
    Exchange(#[source] hyper::Error),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// The pools of names, by name.
#[derive(Debug, Default)]
pub(crate) struct NamePools(Mutex<HashMap<Authority, Arc<Pools>>>);

/// Names kept before those with no connection are let go (auth URLs may name a host per
/// request).
const NAMES_KEPT: usize = 256;

impl NamePools {
    pub(crate) fn get(&self, name: &Authority) -> Arc<Pools> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pools) = all.get(name) {
            return pools.clone();
        }
        if all.len() >= NAMES_KEPT {
            all.retain(|_, pools| Arc::strong_count(pools) > 1 || pools.has_live_connections());
        }
        all.entry(name.clone()).or_default().clone()
    }
}

impl Pools {
    fn has_live_connections(&self) -> bool {
        let others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        self.http.has_live_connections() || others.iter().any(|other| other.pool.has_live_connections())
    }

    /// The pool for `protocol` with a route's TLS settings (`None`: the proxy's), made with
    /// `dialer` when first needed. Plain HTTP/1.1 needs no lookup.
    pub(crate) fn pool(
        &self,
        protocol: Protocol,
        settings: Option<&Arc<BackendTls>>,
        dialer: impl FnOnce() -> Dialer,
    ) -> Arc<Pool> {
        if protocol == Protocol::Http {
            return self.http.clone();
        }
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |other: &&mut OtherPool| {
            other.protocol == protocol
                && match (&other.settings, settings) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
        };
        if let Some(other) = others.iter_mut().find(same) {
            // Equal settings of a newer table keep the connections; the older table's go.
            if let (Some(ours), Some(theirs)) = (&mut other.settings, settings) {
                *ours = theirs.clone();
            }
            return other.pool.clone();
        }
        // Settings that only this list holds belong to no table any more.
        others.retain(|other| other.settings.as_ref().is_none_or(|s| Arc::strong_count(s) > 1));
        let pool = Arc::new(Pool { dialer: Some(dialer()), ..Pool::default() });
        others.push(OtherPool { protocol, settings: settings.cloned(), pool: pool.clone() });
        pool
    }
}

impl Pool {
    fn has_live_connections(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|connection| !connection.sender.is_closed());
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.as_ref().is_some_and(|shared| shared.sender.is_closed()) {
            *shared = None;
        }
        !idle.is_empty() || shared.is_some()
    }

    fn protocol(&self) -> Protocol {
        self.dialer.as_ref().map_or(Protocol::Http, |d| d.protocol)
    }

    /// Sends `request` on a connection of this pool (made within `connect_timeout` when none is
    /// idle). An HTTP/1.1 response body returns its connection to the pool when read to its end.
    pub(crate) async fn send(
        self: &Arc<Self>,
        destination: Destination<'_>,
        request: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        let (response, checkin) = match self.protocol() {
            Protocol::Http | Protocol::Https => {
                self.send_http1(destination, request, connect_timeout).await?
            }
            Protocol::Grpc | Protocol::Grpcs => {
                (self.send_http2(destination, request, connect_timeout).await?, None)
            }
        };
        Ok(response.map(|body| PooledBody { body, checkin, ended: false }))
    }

    async fn send_http1(
        self: &Arc<Self>,
        destination: Destination<'_>,
        mut request: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        loop {
            let (mut connection, reused) = match self.take_idle() {
                Some(idle) => (idle, true),
                // Boxed: connecting (TCP, TLS, the handshake) is rare, and its future would
                // otherwise add to every request's.
                None => (Box::pin(self.connect_http1(destination, connect_timeout)).await?, false),
            };
            match connection.sender.try_send_request(request).await {
                Ok(response) => {
                    let checkin = Checkin { pool: self.clone(), connection };
                    return Ok((response, Some(checkin)));
                }
                // The connection closed before the request went out (the endpoint closes idle
                // connections on its own clock): another one takes it.
                Err(mut error) if reused && error.message().is_some() => {
                    request = error.take_message().expect("checked above");
                }
                Err(error) => return Err(SendError::Exchange(error.into_error())),
            }
        }
    }

    async fn send_http2(
        &self,
        destination: Destination<'_>,
        mut request: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        loop {
            let (mut shared, reused) = match self.live_shared() {
                Some(shared) => (shared, true),
                None => (Box::pin(self.connect_http2(destination, connect_timeout)).await?, false),
            };
            match shared.sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                // The connection went away (GOAWAY, closed, idle too long) before the request
                // went out: a new one takes it.
                Err(mut error) if reused && error.message().is_some() => {
                    request = error.take_message().expect("checked above");
                    let mut current = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                    if current.as_ref().is_some_and(|c| Arc::ptr_eq(&c.clock, &shared.clock)) {
                        *current = None;
                    }
                }
                Err(error) => return Err(SendError::Exchange(error.into_error())),
            }
        }
    }

    /// The shared HTTP/2 connection, if it is open; its idle clock restarts.
    fn live_shared(&self) -> Option<Shared> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = shared.as_ref().filter(|s| !s.sender.is_closed())?;
        shared.clock.idle(); // the clock runs from the last request sent
        Some(shared.clone())
    }

    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(connection) = idle.pop() {
            // Ready when checked in: not ready now, it is closing.
            if connection.sender.is_ready() {
                connection.clock.busy();
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Idle) {
        if !connection.sender.is_ready() {
            return;
        }
        connection.clock.idle();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    async fn connect_http1(
        &self,
        destination: Destination<'_>,
        timeout: Duration,
    ) -> Result<Idle, SendError> {
        let connect = async {
            let io = self.dial(destination).await?;
            let (sender, connection) =
                http1::Builder::new().handshake::<_, UpstreamBody>(io).await.map_err(connect_error)?;
            let clock = Arc::new(IdleClock(AtomicU64::new(BUSY)));
            // With upgrades: a `101` answer hands the connection to the tunnel.
            tokio::spawn(close_when_idle(connection.with_upgrades(), clock.clone()));
            Ok(Idle { sender, clock })
        };
        within(timeout, connect).await
    }

    /// A new shared HTTP/2 connection, or the one another request made meanwhile.
    async fn connect_http2(
        &self,
        destination: Destination<'_>,
        timeout: Duration,
    ) -> Result<Shared, SendError> {
        let connect = async {
            let _connecting = self.connecting.lock().await;
            if let Some(made) = self.live_shared() {
                return Ok(made);
            }
            let io = self.dial(destination).await?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            let (sender, connection) =
                builder.handshake::<_, UpstreamBody>(io).await.map_err(connect_error)?;
            let clock = Arc::new(IdleClock(AtomicU64::new(EPOCH.elapsed().as_millis() as u64)));
            tokio::spawn(close_when_idle(connection, clock.clone()));
            let made = Shared { sender, clock };
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(made.clone());
            Ok(made)
        };
        within(timeout, connect).await
    }

    /// A new connection to `destination`, TLS included.
    async fn dial(&self, destination: Destination<'_>) -> Result<TokioIo<Box<dyn Io>>, SendError> {
        let tls = self.dialer.as_ref().and_then(|d| d.tls.clone());
        let tcp = match destination {
            Destination::Endpoint(endpoint) => TcpStream::connect(endpoint.addr).await,
            Destination::Name(name) => {
                let port = name.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
                TcpStream::connect((host(name), port)).await
            }
        }
        .map_err(SendError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = tls else {
            return Ok(TokioIo::new(Box::new(tcp)));
        };
        let server_name = self.dialer.as_ref().and_then(|d| d.server_name.as_ref());
        let name = match (server_name, destination) {
            // The name checked and sent is the route's settings', not the endpoint's address.
            (Some(name), _) => name.clone(),
            // Endpoints are dialled by address: no SNI.
            (None, Destination::Endpoint(endpoint)) => ServerName::from(endpoint.addr.ip()),
            (None, Destination::Name(name)) => ServerName::try_from(host(name).to_owned())
                .map_err(|e| SendError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?,
        };
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(SendError::Connect)?;
        Ok(TokioIo::new(Box::new(tls)))
    }
}

impl Checkin {
    /// Returns the connection to its pool, if the pool is still there, once it is ready for
    /// another request (at once, unless it is still sending the request of an early answer).
    fn check_in(self) {
        let Self { pool, connection } = self;
        if connection.sender.is_ready() {
            pool.put_idle(connection);
        } else if !connection.sender.is_closed() {
            let Idle { mut sender, clock } = connection;
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.put_idle(Idle { sender, clock });
                }
            });
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
            if let Some(checkin) = self.checkin.take() {
                checkin.check_in();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body the client stopped reading leaves its connection in the middle of a response:
        // that one closes.
        if let Some(checkin) = self.checkin.take().filter(|_| self.is_end_stream()) {
            checkin.check_in();
        }
    }
}

impl IdleClock {
    fn busy(&self) {
        self.0.store(BUSY, Ordering::Relaxed);
    }

    fn idle(&self) {
        self.0.store(EPOCH.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long until the connection has been idle for [`IDLE_TIMEOUT`]; zero when it has.
    fn left(&self) -> Duration {
        let since = self.0.load(Ordering::Relaxed);
        if since == BUSY {
            return IDLE_TIMEOUT;
        }
        let idle_for = Duration::from_millis((EPOCH.elapsed().as_millis() as u64).saturating_sub(since));
        IDLE_TIMEOUT.saturating_sub(idle_for)
    }
}

/// Drives a connection until it ends, or until it has sat unused for [`IDLE_TIMEOUT`] (then it
/// is dropped, which closes it; a request that took it meanwhile is sent again elsewhere).
async fn close_when_idle<C: Future>(connection: C, clock: Arc<IdleClock>) {
    let expired = async {
        loop {
            let left = clock.left();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    };
    tokio::select! {
        _ = connection => {}
        () = expired => {}
    }
}

/// A name's host without the brackets of an IPv6 address.
fn host(name: &Authority) -> &str {
    name.host().trim_start_matches('[').trim_end_matches(']')
}

async fn within<T>(
    timeout: Duration,
    connect: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(made) => made,
        Err(_) => Err(SendError::Connect(std::io::ErrorKind::TimedOut.into())),
    }
}

fn connect_error(error: hyper::Error) -> SendError {
    SendError::Connect(std::io::Error::other(error))
}

/// A connection to an endpoint, plain or TLS (boxed once per connection, not per request).
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
