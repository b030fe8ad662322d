//! Loopback backends for ostium's tests and quickstart.
//!
//! An [`EchoBackend`] answers every request with what it saw, one fact a line:
//!
//! ```text
//! backend: <name>
//! method: GET
//! target: /path?query
//! version: HTTP/1.1
//! header: host: example.com
//! ```
//!
//! and names itself in an `X-Backend` header. Special paths: `/status/<code>` answers that code,
//! `/delay/<ms>` waits first, `/upload` reads the whole body and answers its length, and a
//! request with `Connection: upgrade` is switched (101) and then echoes raw bytes.

pub mod fuzz;
pub mod kube_api;
pub mod log;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A running echo backend. Dropping it stops it; if any of its tasks panicked, the drop panics,
/// so a broken backend fails the test that used it.
#[derive(Debug)]
pub struct EchoBackend {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    panicked: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    /// Starts a backend on `127.0.0.1:0`.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().expect("an address")).await.expect("bind 127.0.0.1:0")
    }

    /// Starts a backend on a given address.
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_inner(name, addr, None).await
    }

    /// Starts a backend on `127.0.0.1:0` that speaks TLS (HTTP/1.1 or HTTP/2 by ALPN).
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        let addr = "127.0.0.1:0".parse().expect("an address");
        Self::start_inner(name, addr, Some(tokio_rustls::TlsAcceptor::from(tls)))
            .await
            .expect("bind 127.0.0.1:0")
    }

    async fn start_inner(
        name: &str,
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let panicked = Arc::new(AtomicBool::new(false));
        let name: Arc<str> = name.into();
        let counters = (requests.clone(), connections.clone());
        let accept = tokio::spawn(accept(listener, tls, name, counters, panicked.clone()));
        Ok(Self { addr, requests, connections, panicked, accept })
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.accept.abort();
        if self.panicked.load(Ordering::Relaxed) && !std::thread::panicking() {
            panic!("a task of echo backend {} panicked", self.addr);
        }
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: Arc<str>,
    (requests, accepted_count): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    panicked: Arc<AtomicBool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                accepted_count.fetch_add(1, Ordering::Relaxed);
                let (name, requests, tls) = (name.clone(), requests.clone(), tls.clone());
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        requests.fetch_add(1, Ordering::Relaxed);
                        respond(name.clone(), request)
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if done.is_err_and(|e| e.is_panic()) {
                    panicked.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn respond(
    name: Arc<str>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let mut status = StatusCode::OK;
    let mut text = String::new();
    let _ = writeln!(text, "backend: {name}");
    let _ = writeln!(text, "method: {}", request.method());
    let _ = writeln!(text, "target: {}", request.uri().path_and_query().map_or("", |p| p.as_str()));
    let _ = writeln!(text, "version: {:?}", request.version());
    for (k, v) in request.headers() {
        let _ = writeln!(text, "header: {k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }

    if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    } else if path == "/upload" {
        let mut received = 0u64;
        let body = request.body_mut();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        let _ = writeln!(text, "received: {received}");
    } else if request.headers().get(header::UPGRADE).is_some() {
        let protocol = request.headers()[header::UPGRADE].clone();
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(request).await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 4096];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert(header::UPGRADE, protocol);
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Ok(response);
    }

    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("?")));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

/// A fresh self-signed certificate for `names`, ready to serve (its `source` is the names).
pub fn certificate(names: &[&str]) -> ostium_model::Certificate {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("rcgen generates a certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let key = rustls::crypto::ring::sign::any_supported_type(&key).expect("rcgen keys are supported");
    let key = rustls::sign::CertifiedKey::new(vec![generated.cert.der().clone()], key);
    ostium_model::Certificate { key: Arc::new(key), source: names.join(",").into() }
}

/// The certificate the controller serves when it has no other (`ostium.invalid`, reported as
/// `self-signed`), as translation tests expect it.
pub fn fallback_certificate() -> ostium_model::Certificate {
    ostium_model::Certificate { source: "self-signed".into(), ..certificate(&["ostium.invalid"]) }
}

/// The value of an `echo` line (`backend`, `method`, `target`, `version`), or of a header the
/// backend saw (`header: name`), from an echo response body.
pub fn echoed<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
}

/// Every value of a header the backend saw, in order.
pub fn echoed_header<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("header: {}: ", name.to_ascii_lowercase());
    body.lines().filter_map(|line| line.strip_prefix(prefix.as_str())).collect()
}
