//! OpenTelemetry tracing on loopback: spans exported over OTLP/gRPC to a fake collector, and W3C
//! `traceparent` sent to the endpoint, as ingress-nginx's OpenTelemetry module does
//! (docs/user-guide/third-party-addons/opentelemetry.md; nginx.tmpl's
//! buildOpentelemetryForLocation: `opentelemetry_propagate`, `opentelemetry_trust_incoming_spans`).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ostium_model::{Policy, RouteTracing, Sampler, TraceExport};
use ostium_test_support::{EchoBackend, echoed_header};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "00f067aa0ba902b7";

/// A fake OTLP/gRPC collector: every span of every export, as decoded protobuf fields.
struct Collector {
    addr: SocketAddr,
    spans: mpsc::UnboundedReceiver<(Fields, Fields)>,
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, spans) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let sender = sender.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        assert_eq!(
                            request.uri().path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        assert_eq!(request.headers()["content-type"], "application/grpc");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(body[0], 0, "not compressed");
                        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                        assert_eq!(body.len(), 5 + length);
                        let export = Fields::decode(&body[5..]);
                        for resource_spans in export.messages(1) {
                            let resource = resource_spans.messages(1).remove(0);
                            for scope_spans in resource_spans.messages(2) {
                                for span in scope_spans.messages(2) {
                                    sender.send((resource.clone(), span)).unwrap();
                                }
                            }
                        }
                        let answer = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "0")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, Infallible>(answer)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, spans }
    }

    async fn span(&mut self) -> (Fields, Fields) {
        tokio::time::timeout(Duration::from_secs(10), self.spans.recv()).await.expect("a span").unwrap()
    }
}

/// Protocol Buffers fields of one message, decoded without a schema.
#[derive(Clone, Debug)]
struct Fields(Vec<(u64, Value)>);

#[derive(Clone, Debug)]
enum Value {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
}

impl Fields {
    fn decode(mut data: &[u8]) -> Self {
        fn varint(data: &mut &[u8]) -> u64 {
            let mut value = 0;
            for shift in (0..64).step_by(7) {
                let byte = data[0];
                *data = &data[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    break;
                }
            }
            value
        }
        let mut fields = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut data)),
                1 => {
                    let (bytes, rest) = data.split_at(8);
                    data = rest;
                    Value::Fixed64(u64::from_le_bytes(bytes.try_into().unwrap()))
                }
                2 => {
                    let length = varint(&mut data) as usize;
                    let (bytes, rest) = data.split_at(length);
                    data = rest;
                    Value::Bytes(bytes.to_vec())
                }
                wire => panic!("unexpected wire type {wire}"),
            };
            fields.push((key >> 3, value));
        }
        Self(fields)
    }

    fn bytes(&self, field: u64) -> Vec<&[u8]> {
        let values = self.0.iter().filter(|(f, _)| *f == field);
        values.map(|(_, v)| if let Value::Bytes(b) = v { b.as_slice() } else { panic!("{v:?}") }).collect()
    }

    fn messages(&self, field: u64) -> Vec<Fields> {
        self.bytes(field).into_iter().map(Fields::decode).collect()
    }

    fn hex(&self, field: u64) -> Option<String> {
        let bytes = self.bytes(field);
        bytes.first().map(|b| b.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    fn text(&self, field: u64) -> String {
        String::from_utf8(self.bytes(field)[0].to_vec()).unwrap()
    }

    fn number(&self, field: u64) -> u64 {
        match self.0.iter().find(|(f, _)| *f == field) {
            Some((_, Value::Varint(n) | Value::Fixed64(n))) => *n,
            other => panic!("field {field}: {other:?}"),
        }
    }

    /// A span's or resource's attributes (`KeyValue`s in field 9 or 1), values as text.
    fn attribute(&self, field: u64, key: &str) -> Option<String> {
        let pair = self.messages(field).into_iter().find(|kv| kv.text(1) == key)?;
        let value = pair.messages(2).remove(0);
        Some(match &value.0[0] {
            (1, Value::Bytes(text)) => String::from_utf8(text.clone()).unwrap(),
            (3, Value::Varint(n)) => n.to_string(),
            other => panic!("{other:?}"),
        })
    }
}

fn traced(collector: SocketAddr, trust_incoming_span: bool, operation_name: Option<&str>) -> Policy {
    let export = TraceExport {
        collector: collector.to_string().parse().unwrap(),
        service_name: "edge".into(),
        sampler: Sampler::AlwaysOn,
        parent_based: true,
        max_queue_size: 64,
        schedule_delay: Duration::from_millis(20),
        max_export_batch_size: 16,
    };
    let tracing = RouteTracing {
        export: Arc::new(export),
        trust_incoming_span,
        operation_name: operation_name.map(Into::into),
    };
    Policy { tracing: Some(tracing), ..Policy::default() }
}

async fn get_with(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a.example.com\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// The echoed `traceparent` the endpoint got: (trace id, parent span id, flags).
fn upstream_traceparent(answer: &Answer) -> (String, String, String) {
    let values = echoed_header(&answer.body, "traceparent");
    assert_eq!(values.len(), 1, "{}", answer.body);
    let parts: Vec<&str> = values[0].split('-').collect();
    assert_eq!((parts.len(), parts[0]), (4, "00"), "{}", values[0]);
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

#[tokio::test]
async fn a_trusted_incoming_span_is_the_parent_and_the_endpoint_gets_a_new_one() {
    let mut collector = Collector::start().await;
    let backend = EchoBackend::start("web").await;
    let table = TableBuilder::new()
        .site(Some("a.example.com"), "web", backend.addr, traced(collector.addr, true, None))
        .build();
    let proxy = Harness::start(table).await;

    let incoming = format!("traceparent: 00-{INCOMING_TRACE}-{INCOMING_SPAN}-01\r\ntracestate: vendor=1\r\n");
    let answer = get_with(proxy.http, "/cart?id=7", &incoming).await;
    assert_eq!(answer.status, 200);
    let (trace_id, parent, flags) = upstream_traceparent(&answer);
    assert_eq!(trace_id, INCOMING_TRACE, "same trace");
    assert_ne!(parent, INCOMING_SPAN, "a new span is the endpoint's parent");
    assert_eq!(flags, "01");
    assert_eq!(echoed_header(&answer.body, "tracestate"), ["vendor=1"]);

    let (resource, span) = collector.span().await;
    assert_eq!(resource.attribute(1, "service.name").as_deref(), Some("edge"));
    assert_eq!(span.hex(1).unwrap(), INCOMING_TRACE);
    assert_eq!(span.hex(2).unwrap(), parent, "the span the endpoint was told of");
    assert_eq!(span.hex(4).as_deref(), Some(INCOMING_SPAN));
    assert_eq!(span.text(5), "HTTP GET");
    assert_eq!(span.number(6), 2, "a server span");
    assert!(span.number(7) <= span.number(8) && span.number(7) > 0);
    for (key, value) in [
        ("ostium.ingress", "default/web".to_owned()),
        ("ostium.service", "default/web".to_owned()),
        ("ostium.upstream", backend.addr.to_string()),
        ("http.request.method", "GET".to_owned()),
        ("url.path", "/cart".to_owned()),
        ("server.address", "a.example.com".to_owned()),
        ("http.response.status_code", "200".to_owned()),
        ("client.address", "127.0.0.1".to_owned()),
    ] {
        assert_eq!(span.attribute(9, key).as_deref(), Some(value.as_str()), "{key}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_incoming_span_is_ignored_and_a_new_trace_starts() {
    let mut collector = Collector::start().await;
    let backend = EchoBackend::start("web").await;
    let policy = traced(collector.addr, false, Some("checkout"));
    let table = TableBuilder::new().site(Some("a.example.com"), "web", backend.addr, policy).build();
    let proxy = Harness::start(table).await;

    let incoming = format!("traceparent: 00-{INCOMING_TRACE}-{INCOMING_SPAN}-01\r\ntracestate: vendor=1\r\n");
    let answer = get_with(proxy.http, "/", &incoming).await;
    let (trace_id, parent, _) = upstream_traceparent(&answer);
    assert_ne!(trace_id, INCOMING_TRACE);
    assert!(echoed_header(&answer.body, "tracestate").is_empty(), "the untrusted trace's state goes too");

    let (_, span) = collector.span().await;
    assert_eq!(span.hex(1).unwrap(), trace_id);
    assert_eq!(span.hex(2).unwrap(), parent);
    assert_eq!(span.hex(4), None, "no parent");
    assert_eq!(span.text(5), "checkout");

    // Without an incoming span, the same: a new trace, told to the endpoint.
    let answer = get_with(proxy.http, "/", "").await;
    let (trace_id, _, _) = upstream_traceparent(&answer);
    let (_, span) = collector.span().await;
    assert_eq!(span.hex(1).unwrap(), trace_id);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_route_that_is_not_traced_leaves_trace_headers_alone() {
    let backend = EchoBackend::start("web").await;
    let table =
        TableBuilder::new().site(Some("a.example.com"), "web", backend.addr, Policy::default()).build();
    let proxy = Harness::start(table).await;

    let answer = get_with(proxy.http, "/", "").await;
    assert_eq!(answer.status, 200);
    assert!(echoed_header(&answer.body, "traceparent").is_empty(), "no traceparent added");

    let incoming = format!("traceparent: 00-{INCOMING_TRACE}-{INCOMING_SPAN}-01\r\n");
    let answer = get_with(proxy.http, "/", &incoming).await;
    assert_eq!(
        echoed_header(&answer.body, "traceparent"),
        [format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01")],
        "passed on as it came"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_is_gone_costs_requests_nothing() {
    let backend = EchoBackend::start("web").await;
    let policy = traced(closed_port().await, true, None);
    let table = TableBuilder::new().site(Some("a.example.com"), "web", backend.addr, policy).build();
    let proxy = Harness::start(table).await;
    for _ in 0..3 {
        let answer = get_with(proxy.http, "/", "").await;
        assert_eq!(answer.status, 200);
        upstream_traceparent(&answer);
    }
    proxy.shutdown().await;
}
