//! Listeners: accept connections up to a cap, serve HTTP/1.1 and HTTP/2 on them under the
//! connection clocks of `connection`, drain on shutdown.
//!
//! On the plain port the protocol is told by the first bytes (HTTP/1.1, or HTTP/2 with prior
//! knowledge); on TLS, ALPN decides alone: `h2` speaks only HTTP/2, anything else only HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::client::Client;
use crate::client_cert::{self, ClientCert};
use crate::connection::{Activity, ConnectionLimits};
use crate::framing::{FramingFlags, FramingGuard};
use crate::metrics::ConnectionGuard;
use ostium_model::{ClientAuth, NormalizedHost};

use crate::passthrough::{self, Replayed, read_client_hello};
use crate::tls::HostConfigs;
use crate::{ConnectionInfo, Proxy, TlsSession, proxy_protocol, tls};

/// How long a connection told to shut down may take to close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Connections the admin server keeps open at once.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) until `shutdown` completes,
/// then lets in-flight requests finish within the drain timeout.
pub async fn serve_http(proxy: Proxy, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let limits = &proxy.config().connections;
    let builders = (Arc::new(http1_builder(limits)), Arc::new(http2_builder(limits)));
    let drain = proxy.config().drain_timeout;
    let metrics = proxy.metrics().clone();
    let cap = proxy.inner.caps.http.clone();
    accept_loop(listener, &cap, drain, Some(&metrics), shutdown, move |mut stream, remote, context| {
        let (proxy, builders) = (proxy.clone(), builders.clone());
        async move {
            let limits = proxy.connection_limits();
            let Some((client, read)) =
                connection_client(&proxy, &mut stream, remote, &context, &limits).await
            else {
                return;
            };
            let Some((read, is_http2)) = first_bytes(&mut stream, read, remote, &context, &limits).await
            else {
                return;
            };
            let (stream, flags) = FramingGuard::new(Replayed::new(read, stream));
            let client_address = client.address;
            let service =
                proxy_service(&proxy, &context, (remote, client), None, Some(flags.clone()), &limits);
            let io = TokioIo::new(stream);
            let flags = Some(flags);
            if is_http2 {
                let builder = own_builder(&builders.1, &proxy, &limits, http2_builder);
                let connection = builder.serve_connection(io, service.service);
                serve_proxied(proxy, connection, service.activity, flags, client_address, context, &limits)
                    .await;
            } else {
                let builder = own_builder(&builders.0, &proxy, &limits, http1_builder);
                let connection = builder.serve_connection(io, service.service).with_upgrades();
                serve_proxied(proxy, connection, service.activity, flags, client_address, context, &limits)
                    .await;
            }
        }
    })
    .await;
}

/// Serves HTTPS: TLS with certificates chosen by SNI, then HTTP/2 or HTTP/1.1 as ALPN says.
/// The ClientHello is read first: a connection for an `ssl-passthrough` host is passed through
/// to its backend undecrypted; the others are terminated with their host's handshake settings.
pub async fn serve_https(
    proxy: Proxy,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let configs = Arc::new(HostConfigs::new(tls));
    let limits = proxy.config().connections.clone();
    // HTTP/1.1 connections are served behind a guard that refuses an HTTP/2 preface.
    let builders = (Arc::new(http1_builder(&limits)), Arc::new(http2_builder(&limits)));
    let drain = proxy.config().drain_timeout;
    let metrics = proxy.metrics().clone();
    let cap = proxy.inner.caps.https.clone();
    accept_loop(listener, &cap, drain, Some(&metrics), shutdown, move |mut stream, remote, context| {
        let (proxy, configs, builders) = (proxy.clone(), configs.clone(), builders.clone());
        async move {
            // The ClientHello and the handshake count against the time allowed for the first
            // request head.
            let limits = proxy.connection_limits();
            let deadline = context.accepted + limits.client_header_timeout;
            let Some((client, read)) =
                connection_client(&proxy, &mut stream, remote, &context, &limits).await
            else {
                return;
            };
            let hello = tokio::time::timeout_at(deadline, read_client_hello(&mut stream, read)).await;
            let Some(hello) = handshake_step(&proxy, remote, "no ClientHello", hello) else { return };
            let sni = hello.server_name.as_deref();
            let server_name = sni.and_then(ostium_model::normalize_host);
            // One table decides where the connection goes and how it is handshaken.
            let (passthrough, config, client_auth) = {
                let table = proxy.inner.tables.load();
                let passthrough = sni.and_then(|sni| table.passthrough(sni)).map(|b| b.target.clone());
                let client_auth = table.client_auth(server_name.as_ref()).cloned();
                let settings = table.tls().server_tls(sni);
                let versions = settings.and_then(|settings| settings.versions);
                (passthrough, (configs.get(settings), versions), client_auth)
            };
            if let Some(target) = passthrough {
                passthrough::splice(&proxy, &target, hello.bytes, stream, remote).await;
                drop(context); // the connection's permit and open count, held until it closes
                return;
            }
            let stream = Replayed::new(hello.bytes, stream);
            let accepted =
                tokio::time::timeout_at(deadline, handshake(config, client_auth, server_name, stream)).await;
            let Some((stream, session)) = handshake_step(&proxy, remote, "TLS handshake failed", accepted)
            else {
                return;
            };
            let client_address = client.address;
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let service = proxy_service(&proxy, &context, (remote, client), Some(session), None, &limits);
                let builder = own_builder(&builders.1, &proxy, &limits, http2_builder);
                let connection = builder.serve_connection(TokioIo::new(stream), service.service);
                serve_proxied(proxy, connection, service.activity, None, client_address, context, &limits)
                    .await;
            } else {
                let (stream, flags) = FramingGuard::http1_only(stream);
                let service = proxy_service(
                    &proxy,
                    &context,
                    (remote, client),
                    Some(session),
                    Some(flags.clone()),
                    &limits,
                );
                let builder = own_builder(&builders.0, &proxy, &limits, http1_builder);
                let connection =
                    builder.serve_connection(TokioIo::new(stream), service.service).with_upgrades();
                serve_proxied(
                    proxy,
                    connection,
                    service.activity,
                    Some(flags),
                    client_address,
                    context,
                    &limits,
                )
                .await;
            }
        }
    })
    .await;
}

/// The client of a new connection. With `use-proxy-protocol` (as the current table says), the
/// PROXY header that must open the connection is read first, within
/// `proxy-protocol-header-timeout` and the first-head clock; `None` when it is missing, invalid
/// or late, and the connection is closed. With the client, the bytes read after the header.
async fn connection_client(
    proxy: &Proxy,
    stream: &mut TcpStream,
    remote: SocketAddr,
    context: &Accepted,
    limits: &ConnectionLimits,
) -> Option<(Client, Vec<u8>)> {
    let (proxy_protocol, global) = {
        let table = proxy.inner.tables.load();
        let rules = &table.global().client_address;
        match rules.proxy_protocol {
            None => return Some((Client::of_connection(remote, None, rules), Vec::new())),
            Some(proxy_protocol) => (proxy_protocol, table.global().clone()),
        }
    };
    let mut deadline = context.accepted + limits.client_header_timeout;
    if !proxy_protocol.header_timeout.is_zero() {
        deadline = deadline.min(context.accepted + proxy_protocol.header_timeout);
    }
    match tokio::time::timeout_at(deadline, proxy_protocol::read_header(stream)).await {
        Ok(Ok((header, read))) => {
            Some((Client::of_connection(remote, Some(header), &global.client_address), read))
        }
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "connection closed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "no PROXY header in time; connection closed");
            None
        }
    }
}

/// The first bytes of a plain connection, enough to tell an HTTP/2 preface (prior knowledge)
/// from HTTP/1.1, read within the time allowed for the first request head: with them (and
/// `read`, the bytes already read after a PROXY header), whether the connection speaks HTTP/2.
/// `None` when the client closed, failed, or sent nothing in time, or the listener drains.
/// One read of up to 4 KiB usually takes the whole request head, which hyper is then handed
/// without another system call.
async fn first_bytes(
    stream: &mut TcpStream,
    mut read: Vec<u8>,
    remote: SocketAddr,
    context: &Accepted,
    limits: &ConnectionLimits,
) -> Option<(Vec<u8>, bool)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = context.accepted + limits.client_header_timeout;
    let mut draining = context.draining.clone();
    loop {
        let length = read.len().min(PREFACE.len());
        if read[..length] != PREFACE[..length] {
            return Some((read, false));
        }
        if length == PREFACE.len() {
            return Some((read, true));
        }
        read.reserve(4096);
        let more = tokio::select! {
            more = tokio::time::timeout_at(deadline, stream.read_buf(&mut read)) => more,
            _ = draining.wait_for(|&draining| draining) => return None,
        };
        match more {
            Ok(Ok(0)) if read.is_empty() => return None,
            Ok(Ok(0)) => return Some((read, false)),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%remote, %error, "connection closed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%remote, "connection timed out");
                return None;
            }
        }
    }
}

/// What a step of the TLS handshake gave, under the connection's deadline; `None` (logged and
/// counted as a handshake error) when it failed or ran out of time.
fn handshake_step<T, E: std::fmt::Display>(
    proxy: &Proxy,
    remote: SocketAddr,
    failure: &str,
    result: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match result {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(error)) => tracing::debug!(%remote, %error, "{failure}"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
    proxy.metrics().tls_handshake_error();
    None
}

/// The TLS handshake of a connection whose ClientHello was read: `config` is its host's
/// (handshake settings), asking for a client certificate when the SNI host requires one, and a
/// client certificate is judged once the handshake is done. `client_auth` are the SNI host's rules,
/// from the table that chose `config`, with the versions `ssl-protocols` leaves.
async fn handshake(
    (config, versions): (Arc<ServerConfig>, Option<ostium_model::TlsVersions>),
    client_auth: Option<Arc<ClientAuth>>,
    server_name: Option<NormalizedHost>,
    stream: Replayed<TcpStream>,
) -> std::io::Result<(tokio_rustls::server::TlsStream<Replayed<TcpStream>>, TlsSession)> {
    let requested = client_auth.as_deref().and_then(client_cert::requested);
    let config = match requested {
        Some(verify) => tls::with_client_certificates(&config, verify, versions),
        None => config,
    };
    let stream = TlsAcceptor::from(config.clone()).accept(stream).await?;
    let client_cert = requested.zip(client_auth.clone()).map(|(verify, rules)| {
        let algorithms = &config.crypto_provider().signature_verification_algorithms;
        (rules, ClientCert::judge(verify, stream.get_ref().1.peer_certificates(), algorithms))
    });
    let server_name = server_name.map(|name| name.as_str().into());
    let version = stream.get_ref().1.protocol_version();
    let cipher_suite = stream.get_ref().1.negotiated_cipher_suite().map(|suite| suite.suite());
    Ok((stream, TlsSession { server_name, client_cert, version, cipher_suite }))
}

/// Serves a small HTTP/1.1 service (the admin endpoints) under the same connection clocks as
/// the proxy, with a cap of its own.
pub async fn serve_admin<H>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let builder = Arc::new(http1_builder(&limits));
    let per_connection = limits;
    let cap = ConnectionCap::new(ADMIN_MAX_CONNECTIONS);
    accept_loop(listener, &cap, Duration::ZERO, None, shutdown, move |stream, remote, context| {
        let (builder, handler, limits) = (builder.clone(), handler.clone(), per_connection.clone());
        async move {
            let (stream, flags) = FramingGuard::new(stream);
            let activity = Arc::new(Activity::new(context.accepted));
            let service = {
                let activity = activity.clone();
                service_fn(move |request: Request<Incoming>| {
                    let _active = activity.start_request(false);
                    let response = handler(&request);
                    async move { Ok::<_, Infallible>(response) }
                })
            };
            // It answers no upgrade; `with_upgrades` makes it the proxy's kind of connection.
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let _ = drive(connection, &activity, &limits, Some(&flags), remote, context).await;
        }
    })
    .await;
}

/// What a connection task gets from the accept loop.
pub(crate) struct Accepted {
    accepted: Instant,
    /// Changes to `true` when the listener starts draining.
    draining: watch::Receiver<bool>,
    /// Held while the connection is open: one of the listener's `max_connections`.
    _permit: OwnedSemaphorePermit,
    /// Counts the connection as open from its accept to its close (the proxy's listeners).
    _open: Option<ConnectionGuard>,
}

/// The open connections a listener address allows, shared by the workers that accept on it.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionCap {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self { permits: Arc::new(Semaphore::new(max)), max }
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    cap: &ConnectionCap,
    drain_timeout: Duration,
    metrics: Option<&crate::ProxyMetrics>,
    shutdown: impl Future<Output = ()>,
    on_connection: F,
) where
    F: Fn(TcpStream, SocketAddr, Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (permits, max) = (&cap.permits, cap.max);
    let (drain, draining) = watch::channel(false);
    let mut accept_errors = Backoff::default();
    let mut refusals = RateLimitedLog::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off rather than spin or flood the log.
                    accept_errors.failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accept_errors.succeeded();
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Full: closing at once keeps the backlog moving and tells the client now.
            if let Some(metrics) = metrics {
                metrics.connection_refused();
            }
            refusals.log(|suppressed| {
                tracing::warn!(
                    max_connections = max,
                    suppressed,
                    "connection limit reached; closing new connections"
                );
            });
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            accepted: Instant::now(),
            draining: draining.clone(),
            _permit: permit,
            _open: metrics.map(|metrics| metrics.connection()),
        };
        tokio::spawn(on_connection(stream, remote, accepted));
    }
    drop(listener);
    let _ = drain.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain_timeout, permits.acquire_many(all)).await.is_err() {
        tracing::warn!(?drain_timeout, "drain deadline passed with requests still in flight");
    }
}

/// The listener's `built` builder, or one made for `limits` when the ConfigMap changes them.
fn own_builder<B>(
    built: &Arc<B>,
    proxy: &Proxy,
    limits: &ConnectionLimits,
    make: fn(&ConnectionLimits) -> B,
) -> Arc<B> {
    match *limits == proxy.config().connections {
        true => built.clone(),
        false => Arc::new(make(limits)),
    }
}

fn http1_builder(limits: &ConnectionLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // The connection clock times request heads and idle time (`connection.rs`); hyper's own
    // header timer would arm a second timer for every request, so it is off.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper's least buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    builder
}

/// Spawns each HTTP/2 stream's task with its future boxed. tokio keeps a future under 16 KiB
/// inside its task and copies it whole on the way in and out; a stream's carries the request's
/// future, several KiB, so boxing it once is cheaper than those copies.
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// An HTTP/2 peer that does not answer a PING within the timeout is gone: the connection is
/// closed without waiting for the idle timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

fn http2_builder(limits: &ConnectionLimits) -> http2::Builder<BoxingExecutor> {
    let mut builder = http2::Builder::new(BoxingExecutor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// The service of one proxied connection, and the activity its requests report to.
struct ProxyService<S> {
    service: S,
    activity: Arc<Activity>,
}

fn proxy_service(
    proxy: &Proxy,
    context: &Accepted,
    (remote, client): (SocketAddr, Client),
    tls: Option<TlsSession>,
    framing: Option<FramingFlags>,
    limits: &ConnectionLimits,
) -> ProxyService<
    impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<crate::ProxyBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<crate::ProxyBody>, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    let activity = Arc::new(Activity::new(context.accepted));
    let body_timeout = limits.client_body_timeout;
    let info = Arc::new(ConnectionInfo { remote, is_tls: tls.is_some(), client, framing, tls, body_timeout });
    let (proxy, requests) = (proxy.clone(), activity.clone());
    // `keep-alive-requests` (HTTP/1; 0: no keep-alive) and `keep-alive: "0"`.
    let keepalive_requests = match limits.keepalive_timeout.is_zero() {
        true => 1,
        false => limits.keepalive_requests.max(1),
    };
    let served = Arc::new(AtomicU32::new(0));
    let service = service_fn(move |request: Request<Incoming>| {
        let is_http2 = request.version() == http::Version::HTTP_2;
        let active = requests.start_request(is_http2);
        let last = !is_http2 && served.fetch_add(1, Ordering::Relaxed) + 1 >= keepalive_requests;
        let (proxy, info) = (proxy.clone(), info.clone());
        async move {
            let mut response = proxy.handle(request, &info).await.map(|body| body.while_active(active));
            // A `101` keeps its `Connection: upgrade`; the tunnel ends the connection anyway.
            if last && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    ProxyService { service, activity }
}

/// Runs a proxied connection; `remote` is its client (the peer, or the source of its PROXY
/// header), as requests refused by hyper are logged.
async fn serve_proxied<C>(
    proxy: Proxy,
    connection: C,
    activity: Arc<Activity>,
    framing: Option<FramingFlags>,
    remote: SocketAddr,
    context: Accepted,
    limits: &ConnectionLimits,
) where
    C: ServedConnection,
{
    if let Err(error) = drive(connection, &activity, limits, framing.as_ref(), remote, context).await {
        proxy.refused_by_protocol(&error, remote);
    }
}

/// Runs a connection until it ends, shutting it down gracefully when its clock runs out or the
/// listener drains, and dropping it if it has not closed `CLOSE_GRACE` after that.
async fn drive<C: ServedConnection>(
    connection: C,
    activity: &Activity,
    limits: &ConnectionLimits,
    framing: Option<&FramingFlags>,
    remote: SocketAddr,
    mut context: Accepted,
) -> hyper::Result<()> {
    let mut connection = pin!(connection);
    let expired = activity.expired(limits, framing);
    let mut expired = pin!(expired);
    let draining = context.draining.wait_for(|&draining| draining);
    let mut draining = pin!(draining);
    let mut closing = false;
    // Set when the clock ran out; draining instead waits for the listener's drain timeout.
    let mut close_by: Option<Instant> = None;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break Some(result),
            () = &mut expired, if !closing => {
                tracing::debug!(%remote, "connection timed out");
                if !activity.has_had_requests() {
                    break None; // nothing to finish politely: no request ever came
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
                close_by = Some(Instant::now() + CLOSE_GRACE);
            }
            _ = &mut draining, if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = sleep_until_some(close_by) => break None,
        }
    };
    match result {
        Some(Err(error)) => {
            tracing::debug!(%remote, %error, "connection ended with an error");
            Err(error)
        }
        None => {
            tracing::debug!(%remote, "connection dropped");
            Ok(())
        }
        Some(Ok(())) => Ok(()),
    }
}

/// A connection `drive` runs: one of hyper's server connections, which can be told to finish
/// the requests in flight and close.
trait ServedConnection: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> ServedConnection for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> ServedConnection for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Exponential back-off after accept errors (5 ms doubling to 1 s), logged at most once a
/// second with the number of errors not logged.
#[derive(Debug, Default)]
struct Backoff {
    delay: Option<Duration>,
    log: RateLimitedLog,
}

impl Backoff {
    async fn failed(&mut self, error: &std::io::Error) {
        let delay = self.delay.map_or(Duration::from_millis(5), |d| (d * 2).min(Duration::from_secs(1)));
        self.delay = Some(delay);
        self.log.log(|suppressed| tracing::warn!(%error, suppressed, "accept failed; backing off"));
        tokio::time::sleep(delay).await;
    }

    fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// Lets one line through per second and counts the others.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn log(&mut self, write: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        write(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_the_same_warning_is_logged_once_a_second_with_a_count() {
        let mut log = RateLimitedLog::default();
        let mut written = Vec::new();
        for _ in 0..10 {
            log.log(|suppressed| written.push(suppressed));
            tokio::time::advance(Duration::from_millis(250)).await;
        }
        // At 0 s, 1 s and 2 s: the first line, then one a second saying how many were held back.
        assert_eq!(written, [0, 3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_exponentially_up_to_a_second() {
        let mut backoff = Backoff::default();
        let error = std::io::Error::other("too many open files");
        let mut delays = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            backoff.failed(&error).await;
            delays.push(started.elapsed().as_millis());
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        let started = Instant::now();
        backoff.failed(&error).await;
        assert_eq!(started.elapsed(), Duration::from_millis(5), "a success resets it");
    }
}
