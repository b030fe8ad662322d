//! The access log, and `enable-access-log: "false"` turning it off for one route (nginx.tmpl:
//! `{{ if not $location.Logs.Access }} access_log off; {{ end }}`); a request no route takes is
//! not logged (ingress-nginx's controller.go: the catch-all server's location logs only with
//! `enable-access-log-for-default-backend`). (Its own test binary: the log subscriber is
//! process-wide.)

mod support;

use ostium_model::Policy;
use ostium_proxy::ProxyConfig;
use ostium_test_support::EchoBackend;
use ostium_test_support::log::LogBuffer;
use support::*;

#[tokio::test]
async fn a_route_can_turn_its_access_log_off() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).init();

    let backend = EchoBackend::start("a").await;
    let quiet = Policy { access_log: false, ..Policy::default() };
    let table = TableBuilder::new()
        .site(Some("logged.example"), "a", backend.addr, Policy::default())
        .site(Some("quiet.example"), "a", backend.addr, quiet)
        .build();
    let proxy = Harness::start_with(table, ProxyConfig::default()).await;
    assert_eq!(get(proxy.http, "logged.example", "/seen").await.status, 200);
    assert_eq!(get(proxy.http, "quiet.example", "/unseen").await.status, 200);
    assert_eq!(get(proxy.http, "nobody.example", "/refused").await.status, 404);
    // The requests go one after another: once the last one's line is in, the others' would be.
    assert_eq!(get(proxy.http, "logged.example", "/last").await.status, 200);

    // A line is written once its response body is done with, which can trail the client a little.
    let logged = |log: &str, path: &str, status: &str| {
        log.lines().any(|l| l.contains("ostium::access") && l.contains(path) && l.contains(status))
    };
    let mut log = String::new();
    for _ in 0..100 {
        log = buffer.text();
        if logged(&log, "/seen", "\"status\":200") && logged(&log, "/last", "\"status\":200") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logged(&log, "/seen", "\"status\":200"), "{log}");
    assert!(!log.contains("/unseen"), "{log}");
    assert!(!log.contains("/refused"), "{log}");
}
