//! Bodies that count their bytes, so the access log can say how much went each way. The log
//! line is written when the response body is finished with (sent in full, or dropped when the
//! client went away), which is also when the request's duration ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ostium_model::NamespacedName;

/// A request body that adds the length of each data frame to a shared counter, when there is
/// one (only requests that get an access log line have one).
#[derive(Debug)]
pub(crate) struct CountedRequest {
    inner: Incoming,
    bytes: Option<Arc<AtomicU64>>,
}

impl CountedRequest {
    pub(crate) fn new(inner: Incoming, bytes: Option<Arc<AtomicU64>>) -> Self {
        Self { inner, bytes }
    }
}

/// The data bytes in a polled frame.
fn data_len<E>(polled: &Poll<Option<Result<Frame<Bytes>, E>>>) -> u64 {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(0, |data| data.len() as u64),
        _ => 0,
    }
}

impl Body for CountedRequest {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(bytes) = &self.bytes {
            bytes.fetch_add(data_len(&polled), Ordering::Relaxed);
        }
        polled
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
}

impl AccessEntry {
    fn write(&self, bytes_out: u64) {
        let host =
            self.uri.authority().map(|a| a.as_str()).or(self.host.as_ref().and_then(|h| h.to_str().ok()));
        tracing::info!(
            target: "ostium::access",
            client = %self.client,
            method = %self.method,
            host,
            path = self.uri.path(),
            status = self.status,
            bytes_in = self.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            upstream = self.upstream.map(tracing::field::display),
            upstream_ms = self.upstream_duration.map(|d| d.as_secs_f64() * 1e3),
            ingress = self.ingress.as_deref().map(tracing::field::display),
            request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()),
        );
    }
}

/// Every response body: streamed from an endpoint, or a short one of our own; with the access
/// log entry to write once it is done.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Either<Incoming, Full<Bytes>>,
    log: Option<Box<AccessEntry>>,
    bytes_out: u64,
}

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming) -> Self {
        Self { inner: Either::Left(body), log: None, bytes_out: 0 }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        Self { inner: Either::Right(Full::new(bytes)), log: None, bytes_out: 0 }
    }

    pub(crate) fn logged(mut self, entry: AccessEntry) -> Self {
        self.log = Some(Box::new(entry));
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Either::Left(body) => Pin::new(body).poll_frame(cx),
            Either::Right(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        };
        this.bytes_out += data_len(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(entry) = self.log.take() {
            entry.write(self.bytes_out);
        }
    }
}
