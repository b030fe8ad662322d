//! `enable-rewrite-log`: a debug line on `ostium::rewrite` for each rewrite of a route that asks
//! for it (ingress-nginx: internal/ingress/annotations/log/main.go, nginx.tmpl
//! `{{ if $location.Logs.Rewrite }} rewrite_log on; {{ end }}`). (Its own test binary: the log
//! subscriber is process-wide.)

mod support;

use ostium_model::{PathRule, Policy, Rewrite, Shaping};
use ostium_test_support::log::LogBuffer;
use ostium_test_support::{EchoBackend, echoed};
use support::*;

fn rewriting(rule: &PathRule, rewrite_log: bool) -> Policy {
    let PathRule::Regex(pattern) = rule.clone() else { unreachable!("a regex rule") };
    let rewrite = Rewrite { pattern, target: "/${2}".into(), forwarded_prefix: None };
    Policy {
        rewrite: Some(rewrite),
        shaping: Shaping { rewrite_log, ..Shaping::default() },
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_route_can_log_its_rewrites() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let backend = EchoBackend::start("a").await;
    let logged = PathRule::regex("/logged(/|$)(.*)").unwrap();
    let quiet = PathRule::regex("/quiet(/|$)(.*)").unwrap();
    let table = TableBuilder::new()
        .route_with(None, logged.clone(), "a", endpoints("a", &[backend.addr]), rewriting(&logged, true))
        .route_with(None, quiet.clone(), "b", endpoints("b", &[backend.addr]), rewriting(&quiet, false))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "shop.example", "/logged/new/x?y=1").await;
    assert_eq!(echoed(&answer.body, "target"), Some("/new/x?y=1"));
    let answer = get(proxy.http, "shop.example", "/quiet/other").await;
    assert_eq!(echoed(&answer.body, "target"), Some("/other"));

    let log = buffer.text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ostium::rewrite")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    for part in
        ["host=\"shop.example\"", "route=\"/logged(/|$)(.*)\"", "from=/logged/new/x?y=1", "to=/new/x?y=1"]
    {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
}
