//! Canary releases on loopback: which backend a request of a route with a canary reaches, as
//! ingress-nginx's balancer decides it (`route_to_alternative_balancer` in
//! rootfs/etc/nginx/lua/balancer.lua; cases from test/e2e/annotations/canary.go): a session of
//! the main backend, a session of the canary (unless `legacy`), `canary-by-header` (`always`,
//! `never`, a value, a pattern), `canary-by-cookie`, then `canary-weight` out of the total.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use ostium_model::{
    Affinity, AffinityMode, Canary, CanaryAffinity, CanaryHeader, CanarySessions, DEFAULT_WEIGHT_TOTAL,
    HeaderRule, LoadBalance, NamespacedName, Policy, SessionCookie, Target, Template, TemplatePart,
    UpstreamHash, Variable,
};
use ostium_test_support::EchoBackend;
use support::*;

const HOST: &str = "shop.example.com";

/// Rules with nothing set: the weight is 0.
fn rules() -> Canary {
    Canary {
        // Replaced by `site`.
        backend: Arc::new(ostium_model::Backend {
            service: Arc::new(NamespacedName::new("default", "shop-canary")),
            port: ostium_model::PortRef::Number(80),
            protocol: ostium_model::Protocol::Http,
            target: ostium_model::Target::Unavailable,
        }),
        ingress: Arc::new(NamespacedName::new("default", "shop-canary")),
        header: None,
        cookie: None,
        weight: 0,
        weight_total: DEFAULT_WEIGHT_TOTAL,
        affinity: CanaryAffinity::Sticky,
        sessions: None,
        load_balance: LoadBalance::RoundRobin,
        upstream_hash: None,
        own_affinity: None,
    }
}

fn by_header(rule: HeaderRule) -> Canary {
    Canary {
        header: Some(CanaryHeader { name: HeaderName::from_static("x-canary"), rule }),
        cookie: Some("canary".into()),
        ..rules()
    }
}

/// A proxy serving `HOST` from `main`, with `canary` lending `canary_target`.
async fn site(main: Target, canary_target: Target, canary: Canary) -> Harness {
    site_with(main, canary_target, canary, Policy::default()).await
}

/// The same, the route having `policy` besides its canary.
async fn site_with(main: Target, canary_target: Target, mut canary: Canary, policy: Policy) -> Harness {
    let mut table = TableBuilder::new();
    canary.backend = table.backend("shop-canary", canary_target);
    let policy = Policy { canary: Some(Arc::new(canary)), ..policy };
    let rule = ostium_model::PathRule::prefix("/").unwrap();
    Harness::start(table.route_with(Some(HOST), rule, "shop", main, policy).build()).await
}

/// Two echo backends, `main` and `canary`, and a proxy serving them with `canary`'s rules.
async fn shop(canary: Canary) -> (Harness, EchoBackend, EchoBackend) {
    let (main, alternative) = (EchoBackend::start("main").await, EchoBackend::start("canary").await);
    let proxy =
        site(endpoints("shop", &[main.addr]), endpoints("shop-canary", &[alternative.addr]), canary).await;
    (proxy, main, alternative)
}

/// The backend that answered a request with these extra header lines.
async fn served_by(proxy: SocketAddr, extra: &str) -> String {
    let request = format!("GET /info HTTP/1.1\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n");
    let answer = raw(proxy, request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.header("x-backend").unwrap_or("none").to_owned()
}

#[tokio::test]
async fn by_header_always_and_never() {
    let (proxy, _main, _canary) = shop(by_header(HeaderRule::AlwaysOrNever)).await;
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "x-canary: never\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: Always\r\n").await, "main", "values are compared exactly");
    assert_eq!(served_by(proxy.http, "").await, "main");
}

#[tokio::test]
async fn by_header_value_instead_of_always() {
    let (proxy, _main, _canary) =
        shop(by_header(HeaderRule::Value(HeaderValue::from_static("DoCanary")))).await;
    assert_eq!(served_by(proxy.http, "X-Canary: DoCanary\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: DoCananry\r\n").await, "main");
}

/// The e2e cases "when canaried by header with value and pattern" and "should routes to
/// mainline upstream when the given Regex causes error".
#[tokio::test]
async fn by_header_pattern_and_a_broken_pattern() {
    let pattern = regex::bytes::Regex::new("^Do[A-Z][a-z]+y$").unwrap();
    let (proxy, _main, _canary) = shop(by_header(HeaderRule::Pattern(pattern))).await;
    assert_eq!(served_by(proxy.http, "X-Canary: DoCanary\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "X-Canary: Docanary\r\n").await, "main");

    let (proxy, _main, _canary) = shop(by_header(HeaderRule::BrokenPattern)).await;
    assert_eq!(served_by(proxy.http, "X-Canary: DoCanary\r\nCookie: canary=always\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "Cookie: canary=always\r\n").await, "canary");
}

/// The e2e case "when canaried by cookie": `always` and `never`, anything else ignored.
#[tokio::test]
async fn by_cookie_always_and_never() {
    let (proxy, _main, _canary) = shop(Canary { cookie: Some("Canary-By-Cookie".into()), ..rules() }).await;
    assert_eq!(served_by(proxy.http, "Cookie: a=1; Canary-By-Cookie=always\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "Cookie: canary-by-cookie=always\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "Cookie: Canary-By-Cookie=never\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "Cookie: Canary-By-Cookie=badcookievalue\r\n").await, "main");
}

/// The header decides before the cookie, the cookie before the weight.
#[tokio::test]
async fn header_then_cookie_then_weight() {
    let canary = Canary { weight: 100, ..by_header(HeaderRule::AlwaysOrNever) };
    let (proxy, _main, _canary) = shop(canary).await;
    assert_eq!(served_by(proxy.http, "X-Canary: never\r\nCookie: canary=always\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: other\r\nCookie: canary=never\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: other\r\nCookie: canary=other\r\n").await, "canary");
    assert_eq!(served_by(proxy.http, "Cookie: canary=always\r\n").await, "canary");
}

#[tokio::test]
async fn weight_0_sends_nothing_and_weight_100_everything() {
    let (proxy, main, canary) = shop(rules()).await;
    for _ in 0..50 {
        assert_eq!(served_by(proxy.http, "").await, "main");
    }
    assert_eq!((main.requests(), canary.requests()), (50, 0));

    let (proxy, main, canary) = shop(Canary { weight: 100, ..rules() }).await;
    for _ in 0..50 {
        assert_eq!(served_by(proxy.http, "").await, "canary");
    }
    assert_eq!((main.requests(), canary.requests()), (0, 50));

    // The e2e case "canary weight is equal to canary weight total".
    let (proxy, _main, _canary) = shop(Canary { weight: 1000, weight_total: 1000, ..rules() }).await;
    for _ in 0..20 {
        assert_eq!(served_by(proxy.http, "").await, "canary");
    }
}

/// Drawn per request: 30% of 2 000 requests within ±5 points (the binomial's standard
/// deviation is about one point, so this fails only when the draw is not per request or not
/// the weight's share).
#[tokio::test]
async fn weight_30_sends_about_30_percent() {
    let (proxy, main, canary) = shop(Canary { weight: 30, ..rules() }).await;
    let requests = 2000;
    for _ in 0..requests {
        served_by(proxy.http, "").await;
    }
    assert_eq!(main.requests() + canary.requests(), requests);
    let percent = canary.requests() * 100 / requests;
    assert!((25..=35).contains(&percent), "{} of {requests} to the canary", canary.requests());
}

/// ingress-nginx has no balancer for a backend without endpoints: a canary without endpoints is
/// skipped, and a main backend without endpoints answers 503 whatever the canary's rules say.
#[tokio::test]
async fn the_canary_needs_endpoints_and_so_does_the_main_backend() {
    let main = EchoBackend::start("main").await;
    let always = || Canary { weight: 100, ..by_header(HeaderRule::AlwaysOrNever) };
    let proxy = site(endpoints("shop", &[main.addr]), endpoints("shop-canary", &[]), always()).await;
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\n").await, "main");

    let canary = EchoBackend::start("canary").await;
    let proxy = site(endpoints("shop", &[]), endpoints("shop-canary", &[canary.addr]), always()).await;
    let answer = get(proxy.http, HOST, "/").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(canary.requests(), 0);
}

/// balancer.lua's `is_affinitized` checks: a session cookie (`<endpoint>|<backend key>`) naming
/// the main backend keeps the request there even with `always`; one naming the canary keeps it
/// on the canary with `sticky` (the e2e "canary affinity behavior" cases), not with `legacy`.
#[tokio::test]
async fn sessions_stay_with_their_backend_unless_legacy() {
    let sessions =
        CanarySessions { cookie: "aff".into(), main_key: "mainkey".into(), canary_key: "canarykey".into() };
    let sticky = Canary { sessions: Some(sessions), ..by_header(HeaderRule::AlwaysOrNever) };
    let (proxy, _main, _canary) = shop(sticky.clone()).await;
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\nCookie: aff=e1|mainkey\r\n").await, "main");
    for _ in 0..10 {
        assert_eq!(served_by(proxy.http, "Cookie: aff=e2|canarykey\r\n").await, "canary");
    }
    assert_eq!(served_by(proxy.http, "Cookie: aff=e2|otherkey\r\n").await, "main");

    let (proxy, _main, _canary) = shop(Canary { affinity: CanaryAffinity::Legacy, ..sticky }).await;
    assert_eq!(served_by(proxy.http, "Cookie: aff=e2|canarykey\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\nCookie: aff=e1|mainkey\r\n").await, "main");
    assert_eq!(served_by(proxy.http, "X-Canary: always\r\nCookie: aff=e2|canarykey\r\n").await, "canary");
}

/// The route's `affinity: cookie`, balanced, as its Ingress would have it.
fn route_affinity() -> Policy {
    let cookie = SessionCookie {
        name: "INGRESSCOOKIE".into(),
        path: "/".into(),
        domain: None,
        expires: None,
        max_age: None,
        same_site: None,
        conditional_same_site_none: false,
        secure: false,
    };
    let affinity = Affinity { mode: AffinityMode::Balanced, cookie, change_on_failure: false };
    Policy { affinity: Some(Arc::new(affinity)), ..Policy::default() }
}

fn sessions() -> CanarySessions {
    CanarySessions {
        cookie: "INGRESSCOOKIE".into(),
        main_key: "mainkey".into(),
        canary_key: "canarykey".into(),
    }
}

/// The value of the session cookie an answer sets.
fn session_cookie(answer: &support::Answer) -> Option<String> {
    let value = answer.header("set-cookie")?.strip_prefix("INGRESSCOOKIE=")?;
    Some(value.split(';').next().unwrap().to_owned())
}

/// With the route's cookie affinity, a new session's cookie names the backend that answered
/// (`<key>|<backend key>`, as ingress-nginx's sticky balancer writes it), and sending it back
/// keeps the requests with that backend, whatever the weight draws.
#[tokio::test]
async fn new_sessions_name_the_backend_that_answered() {
    let canary = Canary { sessions: Some(sessions()), weight: 50, ..rules() };
    let (main, alternative) = (EchoBackend::start("main").await, EchoBackend::start("canary").await);
    let (main_target, canary_target) =
        (endpoints("shop", &[main.addr]), endpoints("shop-canary", &[alternative.addr]));
    let proxy = site_with(main_target, canary_target, canary, route_affinity()).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let request = format!("GET /info HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.http, request.as_bytes()).await;
        let backend = answer.header("x-backend").unwrap().to_owned();
        let value = session_cookie(&answer).unwrap_or_else(|| panic!("no session cookie: {answer:?}"));
        let suffix = if backend == "canary" { "|canarykey" } else { "|mainkey" };
        assert!(value.ends_with(suffix), "{backend} set {value}");
        for _ in 0..5 {
            assert_eq!(served_by(proxy.http, &format!("Cookie: INGRESSCOOKIE={value}\r\n")).await, backend);
        }
        seen.insert(backend);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both backends drawn at weight 50");
}

/// `legacy`: the canary's answers carry no session of the route's (only one of the canary
/// Ingress's own affinity, when it has one); the main backend's still do.
#[tokio::test]
async fn legacy_canaries_keep_their_own_sessions() {
    let request = format!("GET /info HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    for (weight, backend, sets_cookie) in [(100, "canary", false), (0, "main", true)] {
        let canary =
            Canary { sessions: Some(sessions()), weight, affinity: CanaryAffinity::Legacy, ..rules() };
        let (main, alternative) = (EchoBackend::start("main").await, EchoBackend::start("canary").await);
        let targets = (endpoints("shop", &[main.addr]), endpoints("shop-canary", &[alternative.addr]));
        let proxy = site_with(targets.0, targets.1, canary, route_affinity()).await;
        let answer = raw(proxy.http, request.as_bytes()).await;
        assert_eq!(answer.header("x-backend"), Some(backend));
        assert_eq!(session_cookie(&answer).is_some(), sets_cookie, "{answer:?}");
    }
    let own = route_affinity().affinity.map(|a| {
        Arc::new(Affinity {
            cookie: SessionCookie { name: "CANARY".into(), ..a.cookie.clone() },
            ..(*a).clone()
        })
    });
    let canary = Canary {
        sessions: Some(sessions()),
        weight: 100,
        affinity: CanaryAffinity::Legacy,
        own_affinity: own,
        ..rules()
    };
    let (main, alternative) = (EchoBackend::start("main").await, EchoBackend::start("canary").await);
    let targets = (endpoints("shop", &[main.addr]), endpoints("shop-canary", &[alternative.addr]));
    let proxy = site_with(targets.0, targets.1, canary, route_affinity()).await;
    let answer = raw(proxy.http, request.as_bytes()).await;
    assert_eq!(answer.header("x-backend"), Some("canary"));
    let cookie = answer.header("set-cookie").unwrap_or_default();
    assert!(cookie.starts_with("CANARY=") && cookie.contains("|canarykey;"), "{answer:?}");
}

/// The canary's endpoints are picked with the canary Ingress's own `upstream-hash-by`, as
/// ingress-nginx builds the canary's upstream with it: one key, one endpoint.
#[tokio::test]
async fn the_canary_balances_with_its_own_upstream_hash() {
    let key =
        Template::new(vec![TemplatePart::Variable(Variable::Header(HeaderName::from_static("x-user")))]);
    let upstream_hash = Some(Arc::new(UpstreamHash { key, subset_size: None }));
    let canary = Canary { weight: 100, upstream_hash, ..rules() };
    let main = EchoBackend::start("main").await;
    let mut canaries = Vec::new();
    for i in 0..3 {
        canaries.push(EchoBackend::start(&format!("canary{i}")).await);
    }
    let addrs: Vec<SocketAddr> = canaries.iter().map(|c| c.addr).collect();
    let proxy = site(endpoints("shop", &[main.addr]), endpoints("shop-canary", &addrs), canary).await;
    let mut used = std::collections::BTreeSet::new();
    for user in 0..12 {
        let first = served_by(proxy.http, &format!("X-User: u{user}\r\n")).await;
        for _ in 0..3 {
            assert_eq!(served_by(proxy.http, &format!("X-User: u{user}\r\n")).await, first, "user u{user}");
        }
        used.insert(first);
    }
    assert!(used.len() > 1, "12 keys all on one of 3 endpoints: {used:?}");
}
