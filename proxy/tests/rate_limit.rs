//! Rate limits on loopback, clients binding chosen 127.0.0.x source addresses to be different
//! clients. Semantics as ingress-nginx renders `limit-rps`/`limit-rpm` (`limit_req zone=…
//! burst=<n × multiplier> nodelay`), `limit-connections` (`limit_conn`), `limit-allowlist` (a
//! `geo` giving allowlisted addresses an empty key, which nginx does not limit) and `limit-rate`
//! (`limit_rate <n>k`, `limit_rate_after <n>k`): internal/ingress/annotations/ratelimit/main.go,
//! internal/ingress/controller/template/template.go (buildRateLimit) and nginx.tmpl; 503 is the
//! default `limit-req-status-code` and `limit-conn-status-code` (internal/ingress/controller/
//! config/config.go). nginx's preaccess phase (limit_req, then limit_conn) runs after the
//! rewrite phase (`return` of redirects) and before the access phase (allow/deny, auth_basic);
//! test/e2e/annotations/limitconnections.go checks that exactly the limit's worth of slow
//! requests succeed.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Empty, Full};
use ostium_model::{
    BasicAuth, Credentials, NamespacedName, Policy, RateLimit, RateLimitZone, Redirect, RequestRate,
    ResponseRate,
};
use ostium_test_support::EchoBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A new connection from `source` to the proxy.
async fn connect_from(source: &str, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(proxy).await.unwrap()
}

/// `GET /` from `source`: the answer.
async fn get_from(source: &str, proxy: SocketAddr) -> Answer {
    let mut stream = connect_from(source, proxy).await;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    parse(&bytes)
}

/// Statuses of `n` requests from `source`, one after the other.
async fn statuses(source: &str, proxy: SocketAddr, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(get_from(source, proxy).await.status);
    }
    statuses
}

fn limit(change: impl FnOnce(&mut RateLimit)) -> Option<RateLimit> {
    let zone = Arc::new(RateLimitZone::new(NamespacedName::new("default", "web"), "uid"));
    let mut limit = RateLimit {
        per_second: None,
        per_minute: None,
        connections: None,
        allowlist: None,
        zone,
        statuses: Default::default(),
    };
    change(&mut limit);
    Some(limit)
}

/// `limit-rpm: 1` with `limit-burst-multiplier: 4`. A minute drains one request, so the test
/// does not race the bucket.
fn one_a_minute_burst_four() -> Option<RateLimit> {
    limit(|l| l.per_minute = Some(RequestRate::per_minute(1, 4)))
}

#[tokio::test]
async fn requests_over_the_rate_get_503_once_the_burst_is_spent() {
    let backend = EchoBackend::start("a").await;
    let policy = Policy { rate_limit: one_a_minute_burst_four(), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;

    // nginx: a client's first request, then `burst` more, then refusals.
    assert_eq!(statuses("127.0.0.2", proxy.http, 7).await, [200, 200, 200, 200, 200, 503, 503]);
    let refused = get_from("127.0.0.2", proxy.http).await;
    assert_eq!((refused.status, refused.body.as_str()), (503, "503 Service Temporarily Unavailable\n"));
    assert_eq!(statuses("127.0.0.3", proxy.http, 6).await, [200, 200, 200, 200, 200, 503], "own bucket");
    assert_eq!(backend.requests(), 10, "refused requests never reach the backend");
}

/// The ConfigMap's `limit-req-status-code` (nginx's `limit_req_status`, the page text nginx
/// sends with it).
#[tokio::test]
async fn the_configmap_status_answers_requests_over_the_rate() {
    let backend = EchoBackend::start("a").await;
    let rate_limit = limit(|l| {
        l.per_minute = Some(RequestRate::per_minute(1, 0));
        l.statuses.requests = 429;
    });
    let policy = Policy { rate_limit, ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(statuses("127.0.0.2", proxy.http, 1).await, [200]);
    let refused = get_from("127.0.0.2", proxy.http).await;
    assert_eq!((refused.status, refused.body.as_str()), (429, "429 Too Many Requests\n"));
}

#[tokio::test]
async fn allowlisted_clients_are_not_limited() {
    let backend = EchoBackend::start("a").await;
    let rate_limit = limit(|l| {
        l.per_minute = Some(RequestRate::per_minute(1, 0));
        l.allowlist = Some("127.0.0.5/32, 10.0.0.0/8".parse().unwrap());
    });
    let policy = Policy { rate_limit, ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(statuses("127.0.0.5", proxy.http, 8).await, [200; 8]);
    assert_eq!(statuses("127.0.0.6", proxy.http, 2).await, [200, 503]);
}

/// Redirects (nginx's rewrite phase) are answered before the limit counts; authentication
/// (the access phase) comes after it, so unauthenticated requests count and get 503 once over.
#[tokio::test]
async fn the_limit_runs_after_redirects_and_before_authentication() {
    let backend = EchoBackend::start("a").await;
    let redirect = Redirect { status: 301, location: HeaderValue::from_static("https://example.com/") };
    let redirecting =
        Policy { redirect: Some(redirect), rate_limit: one_a_minute_burst_four(), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, redirecting).build()).await;
    assert_eq!(statuses("127.0.0.2", proxy.http, 7).await, [301; 7]);

    let users = HashMap::new();
    let auth =
        Arc::new(BasicAuth::new(HeaderValue::from_static("Basic realm=\"r\""), Credentials::Users(users)));
    let authenticated =
        Policy { auth: Some(auth), rate_limit: one_a_minute_burst_four(), ..Policy::default() };
    let proxy =
        Harness::start(TableBuilder::new().site(None, "a", backend.addr, authenticated).build()).await;
    assert_eq!(statuses("127.0.0.2", proxy.http, 6).await, [401, 401, 401, 401, 401, 503]);
}

/// A backend whose answers wait until the test opens the gate; it counts the requests waiting.
struct GatedBackend {
    addr: SocketAddr,
    waiting: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

impl GatedBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let counter = waiting.clone();
        serve(listener, move || {
            let (waiting, mut gate) = (counter.clone(), gate.clone());
            async move {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        });
        Self { addr, waiting, open }
    }

    /// Waits until `n` requests are waiting at the gate.
    async fn until_waiting(&self, n: usize) {
        for _ in 0..1000 {
            if self.waiting.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} requests never arrived");
    }
}

/// Serves HTTP/1.1 on `listener`, every request answered by `respond`.
fn serve<F, R>(listener: TcpListener, respond: F)
where
    F: Fn() -> R + Clone + Send + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let respond = respond.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let answer = respond();
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
}

/// `GET /` from `source`, sent now and answered later.
fn spawn_get(source: &'static str, proxy: SocketAddr) -> tokio::task::JoinHandle<u16> {
    tokio::spawn(async move { get_from(source, proxy).await.status })
}

#[tokio::test]
async fn limit_connections_counts_a_client_s_requests_in_flight() {
    let backend = GatedBackend::start().await;
    let policy = Policy { rate_limit: limit(|l| l.connections = Some(2)), ..Policy::default() };
    let target = endpoints("a", &[backend.addr]);
    let table = TableBuilder::new().route_with(
        None,
        ostium_model::PathRule::prefix("/").unwrap(),
        "a",
        target,
        policy,
    );
    let proxy = Harness::start(table.build()).await;

    let held = [spawn_get("127.0.0.2", proxy.http), spawn_get("127.0.0.2", proxy.http)];
    backend.until_waiting(2).await;
    assert_eq!(get_from("127.0.0.2", proxy.http).await.status, 503, "a third at once");
    let other = spawn_get("127.0.0.3", proxy.http);
    backend.until_waiting(3).await;

    backend.open.send(true).unwrap();
    for request in held {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(other.await.unwrap(), 200);
    assert_eq!(statuses("127.0.0.2", proxy.http, 3).await, [200; 3], "done requests count no more");
}

/// nginx's `limit_conn` counts requests, so each HTTP/2 stream counts.
#[tokio::test]
async fn each_http2_stream_counts_as_a_connection() {
    let backend = GatedBackend::start().await;
    let policy = Policy { rate_limit: limit(|l| l.connections = Some(1)), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    let (sender, _connection) = h2c(proxy.http).await;
    let request = || http::Request::get("http://h/").body(Empty::<Bytes>::new()).unwrap();
    let first = tokio::spawn(sender.clone().send_request(request()));
    backend.until_waiting(1).await;
    let second = tokio::time::timeout(Duration::from_secs(10), sender.clone().send_request(request()));
    assert_eq!(second.await.expect("answered at once").unwrap().status(), 503);
    backend.open.send(true).unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(sender.clone().send_request(request()).await.unwrap().status(), 200);
}

/// An upgraded request lasts as long as its tunnel, as nginx's does.
#[tokio::test]
async fn a_websocket_tunnel_counts_until_it_closes() {
    let backend = EchoBackend::start("ws").await;
    let policy = Policy { rate_limit: limit(|l| l.connections = Some(1)), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "ws", backend.addr, policy).build()).await;
    let mut tunnel = connect_from("127.0.0.2", proxy.http).await;
    tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tunnel.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    assert_eq!(get_from("127.0.0.2", proxy.http).await.status, 503, "the tunnel is in flight");

    drop(tunnel);
    for _ in 0..1000 {
        if get_from("127.0.0.2", proxy.http).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the closed tunnel still counts");
}

/// nginx's write filter lets `limit_rate × (seconds since the request + 1) + limit_rate_after`
/// bytes out at most. Only bounds that a slow machine cannot break are asserted: no more than
/// that many bytes early on, and no less than the time that many bytes need.
#[tokio::test]
async fn limit_rate_paces_the_response_body() {
    const KIB: usize = 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, || async { Response::new(Full::new(Bytes::from(vec![b'x'; 160 * KIB]))) });
    let rate = ResponseRate { bytes_per_second: 64 * KIB as u64, after: 32 * KIB as u64 };
    let policy = Policy { response_rate: Some(rate), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", addr, policy).build()).await;

    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0; 64 * KIB];
    let early = Duration::from_millis(250);
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout_at((started + early).into(), stream.read(&mut buf)).await
    {
        received.extend_from_slice(&buf[..n]);
    }
    // 32 KiB + 64 KiB × 1.25 s, and the response head.
    assert!(received.len() < 113 * KIB + 512, "{} bytes in a quarter of a second", received.len());

    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received)).await.unwrap().unwrap();
    let answer = parse(&received);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 160 * KIB, "the whole body arrives");
    // 160 KiB need (160 − 32) / 64 − 1 = 1 s.
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
}
