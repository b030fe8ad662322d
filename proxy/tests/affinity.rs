//! Session affinity and consistent hashing on loopback, as ingress-nginx's Lua balancer does
//! them (rootfs/etc/nginx/lua/balancer/sticky.lua, sticky_balanced.lua, sticky_persistent.lua,
//! chash.lua, chashsubset.lua; test/e2e/annotations/affinity.go, affinitymode.go,
//! upstreamhashby.go).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use ostium_model::{
    Affinity, AffinityMode, Endpoint, EndpointKey, EndpointSet, NamespacedName, PathRule, Policy, SameSite,
    SessionCookie, Table, Target, Template, TemplatePart, UpstreamHash, Variable,
};
use ostium_test_support::{EchoBackend, echoed};
use support::{Answer, Harness, TableBuilder, closed_port, raw};

fn cookie(mode: AffinityMode) -> Affinity {
    Affinity {
        mode,
        cookie: SessionCookie {
            name: "INGRESSCOOKIE".into(),
            path: "/".into(),
            domain: None,
            expires: None,
            max_age: None,
            same_site: None,
            conditional_same_site_none: false,
            secure: false,
        },
        change_on_failure: false,
    }
}

fn with_affinity(affinity: Affinity) -> Policy {
    Policy { affinity: Some(Arc::new(affinity)), ..Policy::default() }
}

fn hashed_by(variable: Variable, subset: Option<u32>) -> Policy {
    let key = Template::new(vec![TemplatePart::Variable(variable)]);
    let subset_size = subset.and_then(NonZeroU32::new);
    Policy { upstream_hash: Some(Arc::new(UpstreamHash { key, subset_size })), ..Policy::default() }
}

/// An endpoint set the test can move, and a table routing `/` to it with `policy`.
fn site(addrs: &[SocketAddr], policy: Policy) -> (Arc<EndpointSet>, Table) {
    let key = EndpointKey {
        service: NamespacedName::new("default", "web"),
        port: 80,
        protocol: ostium_model::Transport::Tcp,
    };
    let set = Arc::new(EndpointSet::new(key, addrs.iter().copied()));
    let table = TableBuilder::new()
        .route_with(None, PathRule::prefix("/").unwrap(), "web", Target::Endpoints(set.clone()), policy)
        .build();
    (set, table)
}

async fn backends(n: usize) -> Vec<EchoBackend> {
    let mut backends = Vec::new();
    for i in 0..n {
        backends.push(EchoBackend::start(&format!("b{i}")).await);
    }
    backends
}

fn addrs(backends: &[EchoBackend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// `GET path` with extra header lines (each ending in CRLF).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{headers}Connection: close\r\n\r\n");
    raw(addr, request.as_bytes()).await
}

fn backend(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{}", answer.head);
    echoed(&answer.body, "backend").expect("an echo answer").to_owned()
}

/// The `NAME=value` pair of the answer's session cookie.
fn session(answer: &Answer) -> Option<String> {
    answer.header("set-cookie").map(|c| c.split(';').next().unwrap().to_owned())
}

// --- cookie affinity ---

/// sticky.lua: a request without the cookie gets an endpoint and a cookie; with it, the same
/// endpoint every time and no new cookie. The value is no address.
#[tokio::test]
async fn a_session_sticks_to_one_of_three_endpoints() {
    let backends = backends(3).await;
    let (_set, table) = site(&addrs(&backends), with_affinity(cookie(AffinityMode::Balanced)));
    let proxy = Harness::start(table).await;

    let first = get(proxy.http, "/", "").await;
    let pair = session(&first).expect("a new session gets a cookie");
    let value = pair.strip_prefix("INGRESSCOOKIE=").unwrap();
    assert!(!value.is_empty() && !value.contains("127.0.0.1"), "{value}");
    for b in &backends {
        assert!(!value.contains(&b.addr.port().to_string()), "{value} shows a port");
    }
    let chosen = backend(&first);
    for _ in 0..20 {
        let again = get(proxy.http, "/", &format!("Cookie: other=1; {pair}\r\n")).await;
        assert_eq!(backend(&again), chosen);
        assert_eq!(again.header("set-cookie"), None, "a known session keeps its cookie");
    }
    // New sessions spread over the endpoints.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(backend(&get(proxy.http, "/", "").await));
    }
    assert!(seen.len() >= 2, "30 new sessions all went to {seen:?}");
}

/// sticky_balanced.lua: the cookie holds a key on the endpoints' ring. When an endpoint leaves,
/// its sessions move to others with the same cookie; every other session stays.
#[tokio::test]
async fn balanced_sessions_move_only_when_their_endpoint_leaves() {
    let backends = backends(3).await;
    let (set, table) = site(&addrs(&backends), with_affinity(cookie(AffinityMode::Balanced)));
    let proxy = Harness::start(table).await;
    let mut sessions = Vec::new();
    for _ in 0..45 {
        let answer = get(proxy.http, "/", "").await;
        sessions.push((session(&answer).unwrap(), backend(&answer)));
    }
    let leaving = sessions[0].1.clone();
    let index: usize = leaving.trim_start_matches('b').parse().unwrap();
    let staying: Vec<SocketAddr> =
        backends.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, b)| b.addr).collect();
    assert!(set.replace(staying));

    for (pair, before) in &sessions {
        let answer = get(proxy.http, "/", &format!("Cookie: {pair}\r\n")).await;
        let now = backend(&answer);
        assert_eq!(answer.header("set-cookie"), None, "balanced keeps the cookie");
        if *before == leaving {
            assert_ne!(now, leaving);
        } else {
            assert_eq!(now, *before, "a session whose endpoint stayed moved");
        }
    }
}

/// sticky_persistent.lua (and affinitymode.go): new endpoints take no existing session; once a
/// session's endpoint is gone, another is picked and a new cookie names it.
#[tokio::test]
async fn persistent_sessions_stay_until_their_endpoint_leaves_then_get_a_new_cookie() {
    let backends = backends(5).await;
    let all = addrs(&backends);
    let (set, table) = site(&all[..3], with_affinity(cookie(AffinityMode::Persistent)));
    let proxy = Harness::start(table).await;
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let answer = get(proxy.http, "/", "").await;
        sessions.push((session(&answer).unwrap(), backend(&answer)));
    }
    assert!(set.replace(all.clone()), "scaled up");
    for (pair, before) in &sessions {
        let answer = get(proxy.http, "/", &format!("Cookie: {pair}\r\n")).await;
        assert_eq!(backend(&answer), *before, "persistent sessions are not rebalanced");
    }

    let (pair, gone) = sessions[0].clone();
    let index: usize = gone.trim_start_matches('b').parse().unwrap();
    assert!(set.replace(all.iter().copied().filter(|a| *a != all[index])));
    let moved = get(proxy.http, "/", &format!("Cookie: {pair}\r\n")).await;
    let now = backend(&moved);
    assert_ne!(now, gone);
    let new_pair = session(&moved).expect("a new cookie names the new endpoint");
    assert_ne!(new_pair, pair);
    for _ in 0..5 {
        let answer = get(proxy.http, "/", &format!("Cookie: {new_pair}\r\n")).await;
        assert_eq!(backend(&answer), now);
        assert_eq!(answer.header("set-cookie"), None);
    }
}

/// The cookie as sticky.lua's set_cookie writes it through resty.cookie (affinity.go checks
/// `Path=/something`, `Domain=`, `Expires=`, `Max-Age=` and `; Secure`).
#[tokio::test]
async fn the_cookie_carries_ingress_nginxs_attributes() {
    let backend = EchoBackend::start("b").await;
    let mut plain = cookie(AffinityMode::Balanced);
    plain.cookie.path = "/app".into();
    let (_set, table) = site(&[backend.addr], with_affinity(plain));
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "/app/x", "").await;
    let set_cookie = answer.header("set-cookie").unwrap();
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    assert!(pair.starts_with("INGRESSCOOKIE="));
    assert_eq!(attributes, "Path=/app; HttpOnly", "no Secure on plain HTTP by default");

    let mut full = cookie(AffinityMode::Persistent);
    full.cookie = SessionCookie {
        name: "SERVERID".into(),
        path: "/shop".into(),
        domain: Some(".example.com".into()),
        expires: Some(172_800),
        max_age: Some(259_200),
        same_site: Some(SameSite::None),
        conditional_same_site_none: true,
        secure: true,
    };
    let (_set, table) = site(&[backend.addr], with_affinity(full));
    proxy.publish(table);
    let modern = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36\r\n";
    let answer = get(proxy.http, "/", modern).await;
    let set_cookie = answer.header("set-cookie").unwrap();
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert!(attributes[0].starts_with("SERVERID="), "{set_cookie}");
    let expires = attributes[1].strip_prefix("Expires=").expect(set_cookie);
    // `ngx.cookie_time`: `Sat, 28-Nov-26 16:00:00 GMT`.
    let shape =
        regex::Regex::new(r"^[A-Z][a-z]{2}, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$").unwrap();
    assert!(shape.is_match(expires), "{expires}");
    assert_eq!(
        attributes[2..],
        ["Max-Age=259200", "Domain=.example.com", "Path=/shop", "Secure", "HttpOnly", "SameSite=None"]
    );
    // A user agent that rejects SameSite=None gets none (util/same_site.lua).
    let old = "User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15\r\n";
    let answer = get(proxy.http, "/", old).await;
    let set_cookie = answer.header("set-cookie").unwrap();
    assert!(set_cookie.ends_with("; Secure; HttpOnly"), "{set_cookie}");
}

/// sticky.lua's balance: after a failed try, `session-cookie-change-on-failure` picks another
/// endpoint and changes the cookie; without it the cookie's endpoint is tried again.
#[tokio::test]
async fn change_on_failure_moves_the_session_on_a_retry() {
    let good = EchoBackend::start("good").await;
    let refused = closed_port().await;
    // A persistent cookie naming the refusing endpoint.
    let pair = format!("INGRESSCOOKIE={:016x}", Endpoint::new(refused).session_id);
    let header = format!("Cookie: {pair}\r\n");

    let (_set, table) = site(&[refused, good.addr], with_affinity(cookie(AffinityMode::Persistent)));
    let proxy = Harness::start(table).await;
    let stuck = get(proxy.http, "/", &header).await;
    assert_eq!(stuck.status, 502, "every try goes to the cookie's endpoint");
    assert_eq!(good.requests(), 0);

    let mut changing = cookie(AffinityMode::Persistent);
    changing.change_on_failure = true;
    let (_set, table) = site(&[refused, good.addr], with_affinity(changing));
    proxy.publish(table);
    let moved = get(proxy.http, "/", &header).await;
    assert_eq!(backend(&moved), "good");
    let expected = format!("INGRESSCOOKIE={:016x}", Endpoint::new(good.addr).session_id);
    assert_eq!(session(&moved), Some(expected));
}

// --- upstream-hash-by ---

/// chash.lua (upstreamhashby.go "should connect to the same pod"): one key, one endpoint; the
/// keys spread, and removing one endpoint of ten moves only the keys it held.
#[tokio::test]
async fn hashed_requests_keep_their_endpoint_and_few_move_when_one_leaves() {
    let backends = backends(10).await;
    let (set, table) = site(&addrs(&backends), hashed_by(Variable::RequestUri, None));
    let proxy = Harness::start(table).await;
    let mut owners = BTreeMap::new();
    for k in 0..1000 {
        let path = format!("/item/{k}");
        let first = backend(&get(proxy.http, &path, "").await);
        if k < 100 {
            assert_eq!(backend(&get(proxy.http, &path, "").await), first, "{path}");
        }
        owners.insert(path, first);
    }
    let used: BTreeSet<&String> = owners.values().collect();
    assert_eq!(used.len(), 10, "1000 keys on {} of 10 endpoints", used.len());

    assert!(set.replace(addrs(&backends[1..])));
    let mut moved = 0;
    for (path, before) in &owners {
        let now = backend(&get(proxy.http, path, "").await);
        match before.as_str() {
            "b0" => assert_ne!(now, "b0"),
            _ => assert_eq!(now, *before, "{path} moved though its endpoint stayed"),
        }
        moved += usize::from(now != *before);
    }
    assert!(moved <= 150, "{moved} of 1000 keys moved (at most 15%)");
}

/// A key from a header: the same value, the same endpoint, whatever the path.
#[tokio::test]
async fn a_header_key_ties_a_client_to_an_endpoint() {
    let backends = backends(4).await;
    let header = Variable::Header(http::HeaderName::from_static("x-user"));
    let (_set, table) = site(&addrs(&backends), hashed_by(header, None));
    let proxy = Harness::start(table).await;
    let mut seen = BTreeSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let line = format!("X-User: {user}\r\n");
        let first = backend(&get(proxy.http, "/a", &line).await);
        for path in ["/b", "/c?x=1", "/d/e"] {
            assert_eq!(backend(&get(proxy.http, path, &line).await), first, "{user} {path}");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "six users on {seen:?}");
}

/// chashsubset.lua (upstreamhashby.go "should connect to the same subset of pods"): a key maps
/// to a subset of 3 of 6 endpoints, each of which serves it.
#[tokio::test]
async fn a_subset_key_is_served_by_its_three_endpoints() {
    let backends = backends(6).await;
    let (_set, table) = site(&addrs(&backends), hashed_by(Variable::RequestUri, Some(3)));
    let proxy = Harness::start(table).await;
    for path in ["/", "/other"] {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            seen.insert(backend(&get(proxy.http, path, "").await));
        }
        assert_eq!(seen.len(), 3, "{path}: {seen:?}");
    }
}
