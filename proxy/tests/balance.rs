//! `load-balance` on loopback: `ewma` steers requests away from a slow endpoint, as
//! ingress-nginx's rootfs/etc/nginx/lua/balancer/ewma.lua does (the lower decayed latency average
//! of two candidates wins; test/e2e/loadbalance/ewma.go checks that no request fails), while
//! round robin (the default) shares them evenly. Assertions count requests; the slow endpoint is
//! slow by holding each answer, and nothing times the proxy.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ostium_model::{LoadBalance, PathRule, Policy};
use support::*;
use tokio::net::TcpListener;

/// A backend that answers 200 after `delay`, and counts its requests.
async fn backend(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from(
                            "ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

/// Requests to the slow endpoint of two (one fast, one answering after 200 ms) out of 30 sent
/// one after the other with `balance`.
async fn slow_share(balance: LoadBalance) -> usize {
    let (fast, _) = backend(Duration::ZERO).await;
    let (slow, slow_count) = backend(Duration::from_millis(200)).await;
    let policy = Policy { load_balance: balance, ..Policy::default() };
    let target = endpoints("web", &[fast, slow]);
    let table = TableBuilder::new().route_with(None, PathRule::prefix("/").unwrap(), "web", target, policy);
    let harness = Harness::start(table.build()).await;
    for _ in 0..30 {
        assert_eq!(get(harness.http, "balance.test", "/").await.status, 200);
    }
    slow_count.load(Ordering::Relaxed)
}

#[tokio::test]
async fn ewma_steers_away_from_a_slow_endpoint() {
    // Before either answered, both score 0 and the first drawn may be the slow one; once it has
    // answered, the fast one scores lower for the rest of the test.
    let slow = slow_share(LoadBalance::Ewma).await;
    assert!(slow <= 2, "the slow endpoint got {slow} of 30 requests");
}

#[tokio::test]
async fn round_robin_shares_evenly_whatever_the_latency() {
    assert_eq!(slow_share(LoadBalance::RoundRobin).await, 15);
}
