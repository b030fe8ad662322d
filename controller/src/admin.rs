//! The admin server: `/healthz`, `/readyz`, `/metrics`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use ostium_model::TableReader;
use ostium_proxy::ConnectionLimits;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Serves the admin endpoints under the proxy's connection timeouts, with a connection cap of
/// their own, until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    reader: TableReader,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = move |request: &Request<Incoming>| respond(request, &reader, &metrics);
    ostium_proxy::serve_admin(listener, limits, handler, shutdown).await;
}

fn respond(request: &Request<Incoming>, reader: &TableReader, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if reader.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n"),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
