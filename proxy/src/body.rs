//! Bodies on their way through the proxy, with nginx's clocks and the access log's counts.
//!
//! - A request body times the client's pauses (`client_body_timeout`: 408) and tells the
//!   upstream exchange, through a [`BodyClock`], whether the endpoint is taking the body
//!   (`proxy_send_timeout`) or has it all (`proxy_read_timeout` runs).
//! - A response body from an endpoint times the endpoint's pauses (`proxy_read_timeout`: the
//!   client's connection is cut, as nginx does once the head is sent).
//! - A response body the ConfigMap compresses goes through its [`Encoder`] (gzip or brotli)
//!   before `limit-rate`, so the pace and the access log count what the client gets.
//! - A response body under `limit-rate` is paced by its [`Throttle`], and holds the request's
//!   place under `limit-connections` until it is done.
//! - Both count bytes for the access log, whose line is written when the response body is
//!   finished with (sent in full, or dropped when the client went away), which is also when
//!   the request's duration ends, and when the connection's request stops being in flight.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ostium_model::{ConnectionSlot, NamespacedName};
use tokio::time::Sleep;

use crate::ProxyError;
use crate::access_log::{AddressText, Line};
use crate::compress::Encoder;
use crate::connection::RequestGuard;
use crate::error::find_cause;
use crate::policy::Throttle;
use crate::pool::PooledBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body under `client_body_timeout`, reporting to its [`BodyClock`], and adding the
/// length of each data frame to a shared counter when there is one (only requests that get an
/// access log line have one).
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    bytes: Option<Arc<AtomicU64>>,
    clock: Arc<BodyClock>,
    idle: IdleTimer,
}

/// Why a request body could not be read; the request gets 408 or 400.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("the client paused longer than client_body_timeout while sending the body")]
    TimedOut,
    #[error("malformed or truncated request body")]
    Malformed(#[source] hyper::Error),
}

/// The answer for a request whose body could not be read, when `error` (or one of its causes) says
/// so: 408 for a client that paused too long, 400 for a malformed body, 413 for one over the
/// route's limit.
pub(crate) fn client_body_fault(error: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    if let Some(client) = find_cause::<ClientBodyError>(error) {
        return Some(match client {
            ClientBodyError::TimedOut => ProxyError::ClientBodyTimeout,
            ClientBodyError::Malformed(_) => ProxyError::BadRequest("request body"),
        });
    }
    find_cause::<http_body_util::LengthLimitError>(error).map(|_| ProxyError::BodyTooLarge)
}

/// Where a request body is, shared between the body (which moves it) and the upstream
/// exchange (which times the endpoint by it).
#[derive(Debug)]
pub(crate) struct BodyClock {
    epoch: tokio::time::Instant,
    phase: AtomicU8,
    /// Milliseconds since `epoch` when `phase` last changed.
    since: AtomicU64,
}

const WAITING_FOR_CLIENT: u8 = 0;
const WITH_UPSTREAM: u8 = 1;
const COMPLETE: u8 = 2;

impl BodyClock {
    pub(crate) fn new(has_body: bool) -> Self {
        let phase = if has_body { WAITING_FOR_CLIENT } else { COMPLETE };
        Self { epoch: tokio::time::Instant::now(), phase: AtomicU8::new(phase), since: AtomicU64::new(0) }
    }

    /// Records progress: each frame handed upstream restarts the send clock.
    fn enter(&self, phase: u8) {
        self.since.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// A piece of the body went to the endpoint.
    pub(crate) fn sent_part(&self) {
        self.enter(WITH_UPSTREAM);
    }

    /// The whole body went to the endpoint.
    pub(crate) fn sent_all(&self) {
        self.enter(COMPLETE);
    }

    /// Resolves when the endpoint has stalled: it has not taken the next piece of the body for
    /// `send_timeout`, or has not answered for `read_timeout` after the whole request. Time
    /// spent waiting for the client does not count.
    pub(crate) async fn upstream_stalled(&self, send_timeout: Duration, read_timeout: Duration) {
        loop {
            let phase = self.phase.load(Ordering::Relaxed);
            let since = self.epoch + Duration::from_millis(self.since.load(Ordering::Relaxed));
            let now = tokio::time::Instant::now();
            let deadline = match phase {
                WITH_UPSTREAM => since + send_timeout,
                COMPLETE => since + read_timeout,
                // The body's own timer watches the client; look again later.
                _ => now + send_timeout.min(read_timeout),
            };
            if phase != WAITING_FOR_CLIENT && now >= deadline {
                return;
            }
            // Progress made meanwhile moves the deadline when it is computed again.
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A timer for the pause since the last frame, armed when a poll finds no frame ready.
#[derive(Debug)]
struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    fn new(timeout: Duration) -> Self {
        Self { timeout, sleep: None, armed: false }
    }

    /// A frame arrived: the next pause starts from scratch.
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Nothing arrived: whether the pause has lasted the timeout (the task is woken when it
    /// does).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        bytes: Option<Arc<AtomicU64>>,
        clock: Arc<BodyClock>,
        timeout: Duration,
    ) -> Self {
        Self { inner, bytes, clock, idle: IdleTimer::new(timeout) }
    }
}

/// The data bytes in a polled frame.
fn data_len<E>(polled: &Poll<Option<Result<Frame<Bytes>, E>>>) -> u64 {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(0, |data| data.len() as u64),
        _ => 0,
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(bytes) = &this.bytes {
            bytes.fetch_add(data_len(&polled), Ordering::Relaxed);
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.disarm();
                this.clock.enter(WITH_UPSTREAM);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(ClientBodyError::Malformed(error)))),
            Poll::Ready(None) => {
                this.clock.enter(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.clock.enter(WAITING_FOR_CLIENT);
                if this.idle.expired(cx) {
                    return Poll::Ready(Some(Err(ClientBodyError::TimedOut)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One access log line, filled in while the request is handled.
#[derive(Debug)]
pub(crate) struct AccessEntry {
    pub(crate) started: Instant,
    pub(crate) client: SocketAddr,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) status: u16,
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) upstream_duration: Option<Duration>,
    pub(crate) ingress: Option<Arc<NamespacedName>>,
    pub(crate) request_id: Option<HeaderValue>,
    /// Why the request was refused or failed.
    pub(crate) error: Option<ProxyError>,
    /// The rest of a `log-format-upstream` line, which is written instead of the event.
    pub(crate) line: Option<Box<Line>>,
}

impl AccessEntry {
    fn write(&self, bytes_out: u64) {
        if let Some(line) = &self.line {
            return line.write(self, bytes_out);
        }
        let host =
            self.uri.authority().map(|a| a.as_str()).or(self.host.as_ref().and_then(|h| h.to_str().ok()));
        tracing::info!(
            target: "ostium::access",
            client = %AddressText::new(self.client),
            method = %self.method.as_str(),
            host,
            path = self.uri.path(),
            status = self.status,
            bytes_in = self.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out,
            duration_ms = millis(self.started.elapsed()),
            upstream = self.upstream.map(|address| tracing::field::display(AddressText::new(address))),
            upstream_ms = self.upstream_duration.map(millis),
            ingress = self.ingress.as_deref().map(tracing::field::display),
            request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            error = self.error.map(tracing::field::display),
        );
    }
}

/// Milliseconds to the microsecond (`12.346`), not to the last bit of an `f64`.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e3
}

/// Every response body: streamed from an endpoint, or a short one of our own, compressed or
/// not; with the access log entry to write once it is done.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Either<PooledBody, Full<Bytes>>,
    /// `proxy_read_timeout` between two reads of an endpoint's body.
    read_timer: Option<IdleTimer>,
    /// `use-gzip`, `enable-brotli`.
    encoder: Option<Box<Encoder>>,
    log: Option<Box<AccessEntry>>,
    bytes_out: u64,
    /// The request counts as in flight on its connection until its response body is done.
    active: Option<RequestGuard>,
    /// The request counts under `limit-connections` until its response body is done.
    slot: Option<ConnectionSlot>,
    /// `limit-rate`.
    throttle: Option<Box<Throttle>>,
}

/// An endpoint paused longer than `proxy_read_timeout` in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint paused longer than proxy_read_timeout in the response body")]
pub(crate) struct UpstreamBodyTimeout;

impl ProxyBody {
    pub(crate) fn upstream(body: PooledBody, read_timeout: Duration) -> Self {
        let read_timer = Some(IdleTimer::new(read_timeout));
        Self {
            inner: Either::Left(body),
            read_timer,
            encoder: None,
            log: None,
            bytes_out: 0,
            active: None,
            slot: None,
            throttle: None,
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            inner: Either::Right(Full::new(bytes)),
            read_timer: None,
            encoder: None,
            log: None,
            bytes_out: 0,
            active: None,
            slot: None,
            throttle: None,
        }
    }

    /// Under the request's rate limits: its place under `limit-connections`, its `limit-rate`.
    pub(crate) fn limited(mut self, slot: Option<ConnectionSlot>, throttle: Option<Throttle>) -> Self {
        self.slot = slot;
        self.throttle = throttle.map(Box::new);
        self
    }

    /// Compressed on its way to the client.
    pub(crate) fn encoded(mut self, encoder: Encoder) -> Self {
        self.encoder = Some(Box::new(encoder));
        self
    }

    pub(crate) fn logged(mut self, entry: AccessEntry) -> Self {
        self.log = Some(Box::new(entry));
        self
    }

    pub(crate) fn while_active(mut self, guard: RequestGuard) -> Self {
        self.active = Some(guard);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(throttle) = &mut this.throttle {
            // Nothing is read from the endpoint before something may be sent.
            ready!(throttle.poll_ready(cx));
            if let Some(held) = throttle.take_held() {
                let data = throttle.pass(held);
                this.bytes_out += data.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        let (inner, read_timer) = (&mut this.inner, &mut this.read_timer);
        let polled = match &mut this.encoder {
            Some(encoder) => encoder.poll_frame(cx, |cx| poll_source(inner, read_timer, cx)),
            None => poll_source(inner, read_timer, cx),
        };
        let polled = match (&mut this.throttle, polled) {
            (Some(throttle), Poll::Ready(Some(Ok(frame)))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(throttle.pass(data))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            (_, polled) => polled,
        };
        this.bytes_out += data_len(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        let source_ended = match &self.encoder {
            Some(encoder) => encoder.is_end_stream(),
            None => self.inner.is_end_stream(),
        };
        source_ended && self.throttle.as_ref().is_none_or(|t| t.held_len() == 0)
    }

    fn size_hint(&self) -> SizeHint {
        // Compressed: of a length known only at its end.
        let mut hint = if self.encoder.is_some() { SizeHint::default() } else { self.inner.size_hint() };
        if let Some(held) = self.throttle.as_ref().map(|t| t.held_len()).filter(|&held| held > 0) {
            // The upper bound first: a lower bound may never exceed it.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + held);
            }
            hint.set_lower(hint.lower() + held);
        }
        hint
    }
}

/// The next frame of the body as the endpoint (or the proxy) sends it, under
/// `proxy_read_timeout`.
fn poll_source(
    inner: &mut Either<PooledBody, Full<Bytes>>,
    read_timer: &mut Option<IdleTimer>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let polled = match inner {
        Either::Left(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        Either::Right(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
    };
    if let Some(timer) = read_timer {
        match polled {
            Poll::Pending if timer.expired(cx) => return Poll::Ready(Some(Err(UpstreamBodyTimeout.into()))),
            Poll::Pending => {}
            _ => timer.disarm(),
        }
    }
    polled
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(entry) = self.log.take() {
            entry.write(self.bytes_out);
        }
    }
}
