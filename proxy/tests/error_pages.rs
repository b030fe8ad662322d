//! `custom-http-errors`, `disable-proxy-intercept-errors`, `default-backend` and
//! `service-upstream` on loopback, as ingress-nginx behaves: nginx.tmpl's `CUSTOM_ERRORS`
//! locations (`proxy_set_header X-Code …`, `rewrite (.*) / break;`), the
//! `custom-default-backend-` upstream headers, test/e2e/annotations/{customhttperrors,
//! default_backend,disableproxyintercepterrors,serviceupstream}.go.

mod support;

use ostium_model::{ErrorPages, PathRule, Policy, Target};
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;

fn pages(codes: &[u16], intercept_upstream: bool) -> Option<ErrorPages> {
    Some(ErrorPages { codes: codes.into(), intercept_upstream })
}

async fn get_with(addr: std::net::SocketAddr, host: &str, path: &str, extra: &str) -> Answer {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").as_bytes())
        .await
}

/// The e2e test's checks: the default backend gets `/` (arguments kept) with X-Code and the
/// route's details, and its answer (status included) is what the client gets.
#[tokio::test]
async fn an_endpoint_answer_with_a_listed_code_is_replaced_by_the_default_backends() {
    let app = EchoBackend::start("app").await;
    let errors = EchoBackend::start("errors").await;
    let mut builder = TableBuilder::new();
    let fallback = builder.backend("errors", endpoints("errors", &[errors.addr]));
    let policy = Policy { error_pages: pages(&[404, 503], true), ..Policy::default() };
    let table = builder
        .default_backend(fallback)
        .route_with(
            Some("a.test"),
            PathRule::prefix("/").unwrap(),
            "app",
            endpoints("app", &[app.addr]),
            policy,
        )
        .build();
    let proxy = Harness::start(table).await;

    let extra = "Accept: text/html\r\nX-Request-ID: 0123456789abcdef0123456789abcdef\r\n";
    let answer = get_with(proxy.http, "a.test", "/status/404?lang=en", extra).await;
    assert_eq!(answer.status, 200, "the default backend's status: {}", answer.body);
    assert_eq!(echoed(&answer.body, "backend"), Some("errors"));
    assert_eq!(echoed(&answer.body, "target"), Some("/?lang=en"));
    let header = |name| echoed_header(&answer.body, name).first().copied();
    assert_eq!(header("x-code"), Some("404"));
    assert_eq!(header("x-format"), Some("text/html"));
    assert_eq!(header("x-original-uri"), Some("/status/404?lang=en"));
    assert_eq!(header("x-namespace"), Some("default"));
    assert_eq!(header("x-ingress-name"), Some("app"));
    assert_eq!(header("x-service-name"), Some("app"));
    assert_eq!(header("x-service-port"), Some("80"));
    assert_eq!(header("x-request-id"), Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(header("host"), Some("a.test"));
    assert_eq!(header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(app.requests(), 1, "the endpoint was asked first");

    // A code that is not listed passes through, and so does a success.
    assert_eq!(get_with(proxy.http, "a.test", "/status/500", "").await.status, 500);
    let ok = get_with(proxy.http, "a.test", "/fine", "").await;
    assert_eq!((ok.status, echoed(&ok.body, "backend")), (200, Some("app")));

    // The default backend's own answer is passed on as it is, never intercepted again.
    let answer = get_with(proxy.http, "a.test", "/status/503", "").await;
    assert_eq!(echoed(&answer.body, "backend"), Some("errors"));
}

/// With `disable-proxy-intercept-errors`, the endpoint's answers pass; the proxy's own errors
/// (here 503: no endpoints) still get the error page (nginx's `error_page` without
/// `proxy_intercept_errors`).
#[tokio::test]
async fn without_interception_only_the_proxys_own_errors_get_the_page() {
    let app = EchoBackend::start("app").await;
    let errors = EchoBackend::start("errors").await;
    let mut builder = TableBuilder::new();
    let fallback = builder.backend("errors", endpoints("errors", &[errors.addr]));
    let policy = Policy { error_pages: pages(&[404, 503], false), ..Policy::default() };
    let table = builder
        .default_backend(fallback)
        .route_with(
            Some("a.test"),
            PathRule::prefix("/").unwrap(),
            "app",
            endpoints("app", &[app.addr]),
            policy.clone(),
        )
        .route_with(Some("b.test"), PathRule::prefix("/").unwrap(), "empty", endpoints("empty", &[]), policy)
        .build();
    let proxy = Harness::start(table).await;

    let answer = get_with(proxy.http, "a.test", "/status/404", "").await;
    assert_eq!((answer.status, echoed(&answer.body, "backend")), (404, Some("app")));
    let answer = get_with(proxy.http, "b.test", "/x", "").await;
    assert_eq!(echoed(&answer.body, "backend"), Some("errors"), "{}", answer.body);
    assert_eq!(echoed_header(&answer.body, "x-code"), ["503"]);
    assert_eq!(echoed_header(&answer.body, "x-original-uri"), ["/x"]);
}

/// No default backend anywhere: ingress-nginx's is its built-in server, which answers 404.
#[tokio::test]
async fn without_a_default_backend_the_page_is_the_built_in_404() {
    let app = EchoBackend::start("app").await;
    let policy = Policy { error_pages: pages(&[500], true), ..Policy::default() };
    let table = TableBuilder::new()
        .route_with(None, PathRule::prefix("/").unwrap(), "app", endpoints("app", &[app.addr]), policy)
        .build();
    let proxy = Harness::start(table).await;
    let answer = get_with(proxy.http, "a.test", "/status/500", "").await;
    assert_eq!(answer.status, 404);
    assert!(!answer.body.contains("backend: app"), "{}", answer.body);
}

/// `default-backend`: while the route's Service has no endpoints its requests go to the
/// default backend, path kept, told `X-Code: 503` (nginx.tmpl, `custom-default-backend-`), and
/// error pages come from it instead of `--default-backend-service`.
#[tokio::test]
async fn a_route_without_endpoints_goes_to_its_own_default_backend() {
    let own = EchoBackend::start("own").await;
    let global = EchoBackend::start("global").await;
    let app = EchoBackend::start("app").await;
    let mut builder = TableBuilder::new();
    let global_id = builder.backend("global", endpoints("global", &[global.addr]));
    let own_id = builder.backend("own", endpoints("own", &[own.addr]));
    let policy = |codes: &[u16]| Policy {
        default_backend: Some(own_id.clone()),
        error_pages: if codes.is_empty() { None } else { pages(codes, true) },
        ..Policy::default()
    };
    let table = builder
        .default_backend(global_id)
        .route_with(
            Some("empty.test"),
            PathRule::prefix("/").unwrap(),
            "empty",
            endpoints("empty", &[]),
            policy(&[]),
        )
        .route_with(
            Some("gone.test"),
            PathRule::prefix("/").unwrap(),
            "gone",
            Target::Unavailable,
            policy(&[]),
        )
        .route_with(
            Some("app.test"),
            PathRule::prefix("/").unwrap(),
            "app",
            endpoints("app", &[app.addr]),
            policy(&[404]),
        )
        .build();
    let proxy = Harness::start(table).await;

    for host in ["empty.test", "gone.test"] {
        let answer = get_with(proxy.http, host, "/alma/armud", "X-Request-ID: something-unique\r\n").await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        assert_eq!(echoed(&answer.body, "backend"), Some("own"), "{host}");
        assert_eq!(echoed(&answer.body, "target"), Some("/alma/armud"), "{host}");
        assert_eq!(echoed_header(&answer.body, "x-code"), ["503"], "{host}");
        assert_eq!(echoed_header(&answer.body, "x-request-id"), ["something-unique"], "{host}");
        assert_eq!(echoed_header(&answer.body, "x-service-name"), [host.split('.').next().unwrap()]);
    }
    let answer = get_with(proxy.http, "app.test", "/ok", "").await;
    assert_eq!(echoed(&answer.body, "backend"), Some("app"), "a Service with endpoints keeps them");
    let answer = get_with(proxy.http, "app.test", "/status/404", "").await;
    assert_eq!(echoed(&answer.body, "backend"), Some("own"), "error pages from the route's own");
    assert_eq!(global.requests(), 0);
}

/// A `default-backend` without endpoints is not used (ingress-nginx creates its upstream only
/// with endpoints): the route answers 503 as before.
#[tokio::test]
async fn a_default_backend_without_endpoints_is_not_used() {
    let mut builder = TableBuilder::new();
    let own_id = builder.backend("own", endpoints("own", &[]));
    let policy = Policy { default_backend: Some(own_id), ..Policy::default() };
    let table = builder
        .route_with(None, PathRule::prefix("/").unwrap(), "empty", endpoints("empty", &[]), policy)
        .build();
    let proxy = Harness::start(table).await;
    assert_eq!(get(proxy.http, "a.test", "/").await.status, 503);
}

/// `service-upstream`: the one address is the Service's cluster IP (a loopback address here).
#[tokio::test]
async fn service_upstream_sends_to_the_cluster_ip() {
    let service = EchoBackend::start("cluster-ip").await;
    let key = ostium_model::EndpointKey {
        service: ostium_model::NamespacedName::new("default", "web"),
        port: 80,
        protocol: ostium_model::Transport::Tcp,
    };
    let set = std::sync::Arc::new(ostium_model::EndpointSet::new(key, [service.addr]));
    let table = TableBuilder::new().route(None, "/", "web", Target::ClusterIp(set)).build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "a.test", "/").await;
    assert_eq!((answer.status, echoed(&answer.body, "backend")), (200, Some("cluster-ip")));
}

/// A request whose body framing is broken keeps the proxy's own 400, which closes the
/// connection: what follows on it cannot be trusted to be a request, error page or not.
#[tokio::test]
async fn a_broken_request_keeps_its_answer_that_closes_the_connection() {
    let app = EchoBackend::start("app").await;
    let errors = EchoBackend::start("errors").await;
    let mut builder = TableBuilder::new();
    let fallback = builder.backend("errors", endpoints("errors", &[errors.addr]));
    let policy = Policy { error_pages: pages(&[400, 404], true), ..Policy::default() };
    let table = builder.default_backend(fallback).site(None, "app", app.addr, policy).build();
    let proxy = Harness::start(table).await;
    let broken =
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let answer = raw(proxy.http, broken.as_bytes()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(errors.requests(), 0, "no error page for it");
    assert_eq!(get_with(proxy.http, "a.test", "/status/404", "").await.status, 200, "others still get one");
}
