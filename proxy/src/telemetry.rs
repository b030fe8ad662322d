//! OpenTelemetry tracing of requests: a span per request of a traced route (the route's
//! [`RouteTracing`]), W3C `traceparent` sent upstream, and the spans exported in batches over
//! OTLP/gRPC, off the request path.
//!
//! A route that is not traced costs one `Option` check at each end of the request: no clock, no
//! random numbers, no allocation, and headers pass untouched (incoming `traceparent` included).
//!
//! A traced request's span is a server span. Its parent is the request's `traceparent` when the
//! route trusts incoming spans (and it is valid); otherwise it starts a new trace. The endpoint
//! gets a `traceparent` naming the same trace and this span as its parent. Finished spans wait in
//! a queue bounded by `otel-max-queuesize`; one task exports them in batches
//! (`otel-max-export-batch-size`, at least every `otel-schedule-delay-millis`) over the
//! collector's HTTP/2 connection. When the queue is full, as when the collector is slow or gone,
//! spans are dropped and counted; requests never wait for the collector.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ostium_model::{NamespacedName, RouteTracing, TraceExport};
use tokio::sync::mpsc;

use crate::ProxyMetrics;

/// The most of a collector's answer read.
const COLLECTOR_ANSWER_LIMIT: usize = 64 * 1024;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest an export may take before its spans are counted as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The open span of one traced request.
#[derive(Debug)]
pub(crate) struct Span {
    tracing: RouteTracing,
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    sampled: bool,
    method: Method,
    uri: Uri,
    host: Option<Box<str>>,
}

impl Span {
    /// The span of a request on a route with `tracing`; `None` when the route is not traced.
    pub(crate) fn start(
        tracing: Option<&RouteTracing>,
        method: &Method,
        uri: &Uri,
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Self> {
        let tracing = tracing?;
        let incoming = tracing
            .trust_incoming_span
            .then(|| headers.get(TRACEPARENT).and_then(|value| TraceParent::parse(value.as_bytes())))
            .flatten();
        let export = &tracing.export;
        let (trace_id, parent_span_id, sampled) = match incoming {
            Some(parent) => {
                let sampled = match export.parent_based {
                    true => parent.sampled,
                    false => export.sampler.samples(parent.trace_id),
                };
                (parent.trace_id, Some(parent.span_id), sampled)
            }
            None => {
                let trace_id = nonzero(fastrand::u128(..));
                (trace_id, None, export.sampler.samples(trace_id))
            }
        };
        Some(Self {
            tracing: tracing.clone(),
            trace_id,
            span_id: nonzero(fastrand::u64(..)) as u64,
            parent_span_id,
            sampled,
            method: method.clone(),
            uri: uri.clone(),
            host: host.map(Into::into),
        })
    }

    /// Tells the endpoint the trace and this span as its parent: `traceparent` replaced, and an
    /// incoming `tracestate` kept only when its `traceparent` was trusted.
    pub(crate) fn propagate(&self, headers: &mut HeaderMap) {
        if self.parent_span_id.is_none() {
            headers.remove(TRACESTATE);
        }
        let parent = TraceParent { trace_id: self.trace_id, span_id: self.span_id, sampled: self.sampled };
        headers.insert(TRACEPARENT, parent.header_value());
    }
}

/// What the access log knows of a finished request, for its span.
#[derive(Debug)]
pub(crate) struct Finished<'a> {
    pub(crate) status: u16,
    pub(crate) ingress: Option<&'a Arc<NamespacedName>>,
    pub(crate) service: Option<&'a Arc<NamespacedName>>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) client: SocketAddr,
}

/// The process's span exporter: a bounded queue and the task that empties it, started with the
/// first span.
#[derive(Debug)]
pub(crate) struct Tracer {
    queue: OnceLock<mpsc::UnboundedSender<Record>>,
    /// Spans queued or being exported: bounded by `otel-max-queuesize` (the limit may change
    /// with the table, so it is counted here rather than fixed in the channel).
    queued: Arc<AtomicUsize>,
    metrics: ProxyMetrics,
}

impl Tracer {
    pub(crate) fn new(metrics: ProxyMetrics) -> Self {
        Self { queue: OnceLock::new(), queued: Arc::default(), metrics }
    }

    /// Ends a request's span (if it has one) and queues it for export, or drops it when the queue
    /// is full.
    pub(crate) fn finish(&self, span: Option<Span>, started: Instant, finished: Finished<'_>) {
        let Some(span) = span.filter(|span| span.sampled) else { return };
        let export = &span.tracing.export;
        if self.queued.fetch_add(1, Ordering::Relaxed) >= export.max_queue_size {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.spans_dropped("queue_full", 1);
            return;
        }
        let end = SystemTime::now();
        let record = Record {
            start: end.checked_sub(started.elapsed()).unwrap_or(end),
            end,
            status: finished.status,
            ingress: finished.ingress.cloned(),
            service: finished.service.cloned(),
            upstream: finished.upstream,
            client: finished.client,
            span,
        };
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(export_loop(receiver, self.queued.clone(), self.metrics.clone()));
            sender
        });
        if queue.send(record).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.spans_dropped("queue_full", 1);
        }
    }
}

/// A finished span waiting for export.
#[derive(Debug)]
struct Record {
    span: Span,
    start: SystemTime,
    end: SystemTime,
    status: u16,
    ingress: Option<Arc<NamespacedName>>,
    service: Option<Arc<NamespacedName>>,
    upstream: Option<SocketAddr>,
    client: SocketAddr,
}

/// Exports queued spans in batches: a batch ends when it is full or when the first span in it
/// has waited `otel-schedule-delay-millis`. Settings come from the spans (a table may change
/// them); the collector of a batch is that of its first span.
async fn export_loop(
    mut queue: mpsc::UnboundedReceiver<Record>,
    queued: Arc<AtomicUsize>,
    metrics: ProxyMetrics,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut failing = false;
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        let export = first.span.tracing.export.clone();
        batch.push(first);
        let deadline = tokio::time::Instant::now() + export.schedule_delay;
        while batch.len() < export.max_export_batch_size {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len();
        match send(&client, &export, &batch).await {
            Ok(()) => {
                metrics.spans_exported(count);
                if std::mem::take(&mut failing) {
                    tracing::info!(collector = %export.collector, "span export works again");
                }
            }
            Err(error) => {
                metrics.spans_dropped("export_failed", count);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(collector = %export.collector, %error, "span export failed; spans are dropped until it works");
                }
            }
        }
        batch.clear();
        queued.fetch_sub(count, Ordering::Relaxed);
    }
}

/// One OTLP/gRPC `TraceService/Export` call.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    export: &TraceExport,
    batch: &[Record],
) -> Result<(), String> {
    let message = otlp::export_request(export, batch);
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0); // not compressed
    body.extend_from_slice(&u32::try_from(message.len()).map_err(|_| "batch too large")?.to_be_bytes());
    body.extend_from_slice(&message);
    let uri =
        format!("http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", export.collector);
    let request = Request::post(uri)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        // An export's answer is a few bytes; a collector sending more is cut off.
        let body = http_body_util::Limited::new(body, COLLECTOR_ANSWER_LIMIT);
        let body = body.collect().await.map_err(|e| e.to_string())?;
        if !parts.status.is_success() {
            return Err(format!("collector answered {}", parts.status));
        }
        let trailers = body.trailers();
        let status = parts.headers.get("grpc-status").or_else(|| trailers.and_then(|t| t.get("grpc-status")));
        match status.map(HeaderValue::as_bytes) {
            Some(b"0") => Ok(()),
            Some(code) => Err(format!("gRPC status {}", String::from_utf8_lossy(code))),
            None => Err("no gRPC status".to_owned()),
        }
    };
    tokio::time::timeout(EXPORT_TIMEOUT, answer).await.map_err(|_| "timed out".to_owned())?
}

/// A W3C trace context `traceparent` (version 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TraceParent {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceParent {
    /// `version-traceid-parentid-flags`; a later version may add fields after a `-`. All-zero
    /// ids and version `ff` are invalid.
    fn parse(value: &[u8]) -> Option<Self> {
        let (head, rest) = value.split_at_checked(55)?;
        let version = hex(&head[0..2])?;
        if version == 0xff || (version == 0 && !rest.is_empty()) || (!rest.is_empty() && rest[0] != b'-') {
            return None;
        }
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let trace_id = hex(&head[3..35])?;
        let span_id = hex(&head[36..52])? as u64;
        let flags = hex(&head[53..55])?;
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    fn header_value(&self) -> HeaderValue {
        let value = format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled));
        HeaderValue::try_from(value).expect("hex digits and dashes are a valid header value")
    }
}

/// Lower-case hex digits (as the W3C format requires) as a number.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &d| {
        let digit = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(digit))
    })
}

/// An id other than zero (zero means "none" in trace context).
fn nonzero<T: Into<u128>>(id: T) -> u128 {
    let id = id.into();
    if id == 0 { 1 } else { id }
}

/// Protocol Buffers encoding of OTLP's `ExportTraceServiceRequest`
/// (opentelemetry-proto: `collector/trace/v1/trace_service.proto`, `trace/v1/trace.proto`,
/// `common/v1/common.proto`, `resource/v1/resource.proto`), written out for the few fields used.
mod otlp {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::Record;
    use ostium_model::TraceExport;

    /// `Span.SpanKind.SPAN_KIND_SERVER`.
    const SPAN_KIND_SERVER: u64 = 2;
    /// `Status.StatusCode.STATUS_CODE_ERROR`.
    const STATUS_CODE_ERROR: u64 = 2;

    pub(super) fn export_request(export: &TraceExport, batch: &[Record]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 * batch.len());
        // ExportTraceServiceRequest.resource_spans
        message(&mut out, 1, |resource_spans| {
            // ResourceSpans.resource { attributes }
            message(resource_spans, 1, |resource| {
                string_attribute(resource, 1, "service.name", &export.service_name)
            });
            // ResourceSpans.scope_spans
            message(resource_spans, 2, |scope_spans| {
                message(scope_spans, 1, |scope| {
                    bytes(scope, 1, b"ostium");
                    bytes(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
                });
                for record in batch {
                    message(scope_spans, 2, |span| encode_span(span, record));
                }
            });
        });
        out
    }

    fn encode_span(out: &mut Vec<u8>, record: &Record) {
        let span = &record.span;
        bytes(out, 1, &span.trace_id.to_be_bytes());
        bytes(out, 2, &span.span_id.to_be_bytes());
        if let Some(parent) = span.parent_span_id {
            bytes(out, 4, &parent.to_be_bytes());
        }
        match &span.tracing.operation_name {
            Some(name) => bytes(out, 5, name.as_bytes()),
            None => bytes(out, 5, format!("HTTP {}", span.method).as_bytes()),
        }
        varint_field(out, 6, SPAN_KIND_SERVER);
        fixed64(out, 7, unix_nanos(record.start));
        fixed64(out, 8, unix_nanos(record.end));
        string_attribute(out, 9, "http.request.method", span.method.as_str());
        string_attribute(out, 9, "url.path", span.uri.path());
        if let Some(host) = &span.host {
            string_attribute(out, 9, "server.address", host);
        }
        int_attribute(out, 9, "http.response.status_code", i64::from(record.status));
        string_attribute(out, 9, "client.address", &record.client.ip().to_string());
        if let Some(ingress) = &record.ingress {
            string_attribute(out, 9, "ostium.ingress", &ingress.to_string());
        }
        if let Some(service) = &record.service {
            string_attribute(out, 9, "ostium.service", &service.to_string());
        }
        if let Some(upstream) = record.upstream {
            string_attribute(out, 9, "ostium.upstream", &upstream.to_string());
        }
        if record.status >= 500 {
            message(out, 15, |status| varint_field(status, 3, STATUS_CODE_ERROR));
        }
    }

    fn unix_nanos(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// A `KeyValue` with a string `AnyValue`.
    fn string_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &str) {
        message(out, field, |kv| {
            bytes(kv, 1, key.as_bytes());
            message(kv, 2, |any| bytes(any, 1, value.as_bytes()));
        });
    }

    /// A `KeyValue` with an integer `AnyValue`.
    fn int_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: i64) {
        message(out, field, |kv| {
            bytes(kv, 1, key.as_bytes());
            message(kv, 2, |any| varint_field(any, 3, value as u64));
        });
    }

    /// A field holding a message, built by `build`.
    fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        build(&mut inner);
        bytes(out, field, &inner);
    }

    /// A length-delimited field (wire type 2).
    fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
        varint(out, u64::from(field) << 3 | 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    /// A varint field (wire type 0).
    fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
        varint(out, u64::from(field) << 3);
        varint(out, value);
    }

    /// A fixed64 field (wire type 1).
    fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
        varint(out, u64::from(field) << 3 | 1);
        out.extend_from_slice(&value.to_le_bytes());
    }

    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request on a route that is not traced goes through in `forward`: no allocation.
    #[test]
    fn an_untraced_request_costs_no_allocation() {
        // The counter must be live, or a zero below would prove nothing.
        let probe = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
        assert!(probe.count_total >= 1, "the counting allocator is not installed");

        let tracer = Tracer::new(ProxyMetrics::default());
        let request = Request::get("http://a.example.com/cart")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(())
            .unwrap();
        let name = Arc::new(NamespacedName::new("default", "web"));
        let mut upstream_headers = request.headers().clone();
        let started = Instant::now();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let info = allocation_counter::measure(|| {
            let (method, uri, headers) = (request.method(), request.uri(), request.headers());
            let span = Span::start(None, method, uri, Some("a.example.com"), headers);
            if let Some(span) = &span {
                span.propagate(&mut upstream_headers);
            }
            let finished = Finished {
                status: 200,
                ingress: Some(&name),
                service: Some(&name),
                upstream: Some(client),
                client,
            };
            tracer.finish(std::hint::black_box(span), started, finished);
        });
        assert_eq!(info.count_total, 0, "tracing allocated for a route that is not traced");
        assert_eq!(&upstream_headers, request.headers());
    }

    #[tokio::test]
    async fn spans_beyond_the_queue_are_dropped_and_counted_while_the_collector_is_slow() {
        // A collector that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let export = TraceExport {
            collector: silent.local_addr().unwrap().to_string().parse().unwrap(),
            service_name: "edge".into(),
            sampler: ostium_model::Sampler::AlwaysOn,
            parent_based: true,
            max_queue_size: 2,
            schedule_delay: Duration::from_millis(1),
            max_export_batch_size: 2,
        };
        let tracing =
            RouteTracing { export: Arc::new(export), trust_incoming_span: true, operation_name: None };
        let mut registry = prometheus_client::registry::Registry::with_prefix("ostium");
        let tracer = Tracer::new(ProxyMetrics::register(&mut registry));
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for _ in 0..5 {
            let span =
                Span::start(Some(&tracing), &Method::GET, &Uri::from_static("/"), None, &HeaderMap::new());
            let finished = Finished { status: 200, ingress: None, service: None, upstream: None, client };
            tracer.finish(span, Instant::now(), finished);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ostium_tracing_spans_dropped_total{reason=\"queue_full\"} 3"), "{text}");
    }

    #[test]
    fn traceparent_is_read_as_the_w3c_format_says() {
        let valid = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).unwrap();
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert!(parsed.sampled);
        assert_eq!(parsed.header_value().as_bytes(), valid);
        assert!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later").is_some()
        );
        for invalid in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{}", String::from_utf8_lossy(invalid));
        }
    }
}
