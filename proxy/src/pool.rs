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
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
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
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::upstream_body::UpstreamBody;

/// How long an unused connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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
/// protocol's ALPN) and the name the certificate is checked against.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) protocol: Protocol,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// The route's TLS settings these were made from (`None`: the proxy's defaults).
    pub(crate) settings: Option<Arc<BackendTls>>,
}

/// The pools of one destination: one for each protocol and TLS settings in use, plain HTTP/1.1
/// first.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    http: Pool,
    others: Mutex<Vec<Arc<Pool>>>,
}

/// The connections of one destination spoken to one way.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection.
    shared: Mutex<Option<Shared>>,
    /// For pools other than plain HTTP/1.1: how they connect.
    dialer: Option<Dialer>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    clock: Arc<IdleClock>,
}

#[derive(Debug)]
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
pub(crate) struct Checkin {
    pool: PoolRef,
    connection: Idle,
}

/// The pool a connection returns to: the endpoint's (held through the endpoint, which may go
/// meanwhile) or a name's.
#[derive(Clone, Debug)]
pub(crate) enum PoolRef {
    Plain(Weak<Pools>),
    Other(Weak<Pool>),
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
            all.retain(|_, pools| Arc::strong_count(pools) > 1 || pools.has_idle());
        }
        all.entry(name.clone()).or_default().clone()
    }
}

impl Pools {
    fn has_idle(&self) -> bool {
        let others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        self.http.has_idle() || others.iter().any(|pool| pool.has_idle())
    }

    /// The pool for `protocol` with a route's TLS settings (`None`: the proxy's), made with
    /// `dialer` when first needed. Plain HTTP/1.1 needs no lookup.
    pub(crate) fn pool(
        self: &Arc<Self>,
        protocol: Protocol,
        settings: Option<&Arc<BackendTls>>,
        dialer: impl FnOnce() -> Dialer,
    ) -> (PoolRef, PoolHandle<'_>) {
        if protocol == Protocol::Http {
            return (PoolRef::Plain(Arc::downgrade(self)), PoolHandle::Borrowed(&self.http));
        }
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |pool: &&Arc<Pool>| {
            let theirs = pool.dialer.as_ref().expect("other pools have a dialer");
            theirs.protocol == protocol
                && match (&theirs.settings, settings) {
                    (None, None) => true,
                    // Equal settings of a newer table keep the connections.
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
        };
        let pool = match others.iter().find(same) {
            Some(pool) => pool.clone(),
            None => {
                let pool = Arc::new(Pool { dialer: Some(dialer()), ..Pool::default() });
                others.push(pool.clone());
                pool
            }
        };
        (PoolRef::Other(Arc::downgrade(&pool)), PoolHandle::Owned(pool))
    }
}

/// A pool as a request uses it.
#[derive(Debug)]
pub(crate) enum PoolHandle<'a> {
    Borrowed(&'a Pool),
    Owned(Arc<Pool>),
}

impl std::ops::Deref for PoolHandle<'_> {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        match self {
            Self::Borrowed(pool) => pool,
            Self::Owned(pool) => pool,
        }
    }
}

impl Pool {
    fn has_idle(&self) -> bool {
        !self.idle.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
            || self.shared.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    fn protocol(&self) -> Protocol {
        self.dialer.as_ref().map_or(Protocol::Http, |d| d.protocol)
    }

    /// Sends `request` on a connection of this pool (made within `connect_timeout` when none is
    /// idle). An HTTP/1.1 response comes with the [`Checkin`] that returns its connection.
    pub(crate) async fn send(
        &self,
        home: &PoolRef,
        destination: Destination<'_>,
        request: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        let (response, checkin) = match self.protocol() {
            Protocol::Http | Protocol::Https => {
                self.send_http1(home, destination, request, connect_timeout).await?
            }
            Protocol::Grpc | Protocol::Grpcs => {
                let mut sender = self.shared(destination, connect_timeout).await?;
                (sender.send_request(request).await.map_err(SendError::Exchange)?, None)
            }
        };
        Ok(response.map(|body| PooledBody { body, checkin, ended: false }))
    }

    async fn send_http1(
        &self,
        home: &PoolRef,
        destination: Destination<'_>,
        mut request: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        loop {
            let (mut connection, reused) = match self.take_idle() {
                Some(idle) => (idle, true),
                None => (self.connect_http1(destination, connect_timeout).await?, false),
            };
            // A connection checked in as its last response ended may still be finishing it.
            if !connection.sender.is_ready() && connection.sender.ready().await.is_err() {
                continue;
            }
            match connection.sender.try_send_request(request).await {
                Ok(response) => {
                    let checkin = Checkin { pool: home.clone(), connection };
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

    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(connection) = idle.pop() {
            if !connection.sender.is_closed() {
                connection.clock.busy();
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Idle) {
        if connection.sender.is_closed() {
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

    /// The shared HTTP/2 connection, made when there is none (or it closed, or sat unused).
    async fn shared(
        &self,
        destination: Destination<'_>,
        timeout: Duration,
    ) -> Result<http2::SendRequest<UpstreamBody>, SendError> {
        {
            let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(shared) = shared.as_ref().filter(|s| !s.sender.is_closed()) {
                shared.clock.idle(); // the clock runs from the last request sent
                return Ok(shared.sender.clone());
            }
        }
        // Requests that find no connection at once each make one; the last one made is kept,
        // the others close when their requests are done.
        let connect = async {
            let io = self.dial(destination).await?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            let (sender, connection) =
                builder.handshake::<_, UpstreamBody>(io).await.map_err(connect_error)?;
            let clock = Arc::new(IdleClock(AtomicU64::new(EPOCH.elapsed().as_millis() as u64)));
            tokio::spawn(close_when_idle(connection, clock.clone()));
            Ok(Shared { sender, clock })
        };
        let made = within(timeout, connect).await?;
        let sender = made.sender.clone();
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(made);
        Ok(sender)
    }

    /// A new connection to `destination`, TLS included.
    async fn dial(&self, destination: Destination<'_>) -> Result<TokioIo<Stream>, SendError> {
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
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        };
        let settings = self.dialer.as_ref().and_then(|d| d.settings.as_ref());
        let name = match (settings, destination) {
            // The name checked and sent is the settings', not the endpoint's address.
            (Some(settings), _) => settings.settings.server_name.clone(),
            // Endpoints are dialled by address: no SNI.
            (None, Destination::Endpoint(endpoint)) => ServerName::from(endpoint.addr.ip()),
            (None, Destination::Name(name)) => ServerName::try_from(host(name).to_owned())
                .map_err(|e| SendError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?,
        };
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(SendError::Connect)?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

impl Checkin {
    /// Returns the connection to its pool, if the pool is still there.
    pub(crate) fn check_in(self) {
        match &self.pool {
            PoolRef::Plain(pools) => {
                if let Some(pools) = pools.upgrade() {
                    pools.http.put_idle(self.connection);
                }
            }
            PoolRef::Other(pool) => {
                if let Some(pool) = pool.upgrade() {
                    pool.put_idle(self.connection);
                }
            }
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

/// A connection to an endpoint, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
