use std::net::SocketAddr;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::*;
use crate::backend::{EndpointSet, PortRef, Protocol};
use crate::{Certificate, HostRule, PathRule};

fn test_certificate(name: &str) -> Certificate {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let key = any_supported_type(&key).unwrap();
    Certificate { key: Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], key)), source: name.into() }
}

fn empty_table() -> TableBuilder {
    TableBuilder::new(TlsTable::new(test_certificate("default.invalid")))
}

fn unavailable(service: &str) -> Backend {
    Backend {
        service: Arc::new(NamespacedName::new("default", service)),
        port: PortRef::Number(80),
        protocol: Protocol::Http,
        target: Target::Unavailable,
    }
}

fn route(rule: PathRule, ingress: Option<&str>, backend: BackendRef) -> Route {
    Route {
        rule,
        ingress: ingress.map(|n| Arc::new(NamespacedName::new("default", n))),
        action: RouteAction::Forward(backend),
        policy: Arc::default(),
    }
}

/// A table whose routes each have their own backend, named after the service, so tests can say
/// which rule won by name.
struct Builder {
    table: TableBuilder,
}

impl Builder {
    fn new() -> Self {
        Self { table: empty_table() }
    }

    fn route(mut self, host: Option<&str>, rule: PathRule, service: &str) -> Self {
        let backend = self.table.add_backend(unavailable(service));
        let host = host.map(|h| h.parse::<HostRule>().unwrap());
        self.table.virtual_host_mut(host.as_ref()).add_route(route(rule, Some(service), backend)).unwrap();
        self
    }

    fn prefix(self, host: Option<&str>, path: &str, service: &str) -> Self {
        self.route(host, PathRule::prefix(path).unwrap(), service)
    }

    fn exact(self, host: Option<&str>, path: &str, service: &str) -> Self {
        self.route(host, PathRule::exact(path).unwrap(), service)
    }

    fn build(self) -> Table {
        self.table.build()
    }

    /// The table still open, for a test to add to.
    fn open(self) -> TableBuilder {
        self.table
    }
}

/// The name of the service a request is routed to, or `None` for the built-in 404.
fn served_by(table: &Table, host: Option<&str>, path: &str) -> Option<String> {
    let m = table.route(host, path)?;
    let RouteAction::Forward(backend) = &m.route.action else { return Some("redirect".into()) };
    Some(backend.service.name.to_string())
}

fn prefix_table(paths: &[&str]) -> Table {
    paths.iter().fold(Builder::new(), |b, p| b.prefix(None, p, p)).build()
}

fn exact_table(path: &str) -> Table {
    Builder::new().exact(None, path, path).build()
}

// --- The "Examples" table of the Ingress concept page, row by row. ---
// https://kubernetes.io/docs/concepts/services-networking/ingress/#examples

#[test]
fn row_01_prefix_root_matches_all_paths() {
    let t = prefix_table(&["/"]);
    for p in ["/", "/foo", "/foo/bar/", "/a.b"] {
        assert_eq!(served_by(&t, None, p).as_deref(), Some("/"), "{p}");
    }
}

#[test]
fn row_02_exact_matches_same_path() {
    assert_eq!(served_by(&exact_table("/foo"), None, "/foo").as_deref(), Some("/foo"));
}

#[test]
fn row_03_exact_does_not_match_other_path() {
    assert_eq!(served_by(&exact_table("/foo"), None, "/bar"), None);
}

#[test]
fn row_04_exact_does_not_match_added_trailing_slash() {
    assert_eq!(served_by(&exact_table("/foo"), None, "/foo/"), None);
}

#[test]
fn row_05_exact_with_trailing_slash_does_not_match_without() {
    assert_eq!(served_by(&exact_table("/foo/"), None, "/foo"), None);
}

#[test]
fn row_06_prefix_matches_with_and_without_trailing_slash() {
    let t = prefix_table(&["/foo"]);
    assert_eq!(served_by(&t, None, "/foo").as_deref(), Some("/foo"));
    assert_eq!(served_by(&t, None, "/foo/").as_deref(), Some("/foo"));
}

#[test]
fn row_07_prefix_with_trailing_slash_matches_with_and_without() {
    let t = prefix_table(&["/foo/"]);
    assert_eq!(served_by(&t, None, "/foo").as_deref(), Some("/foo/"));
    assert_eq!(served_by(&t, None, "/foo/").as_deref(), Some("/foo/"));
}

#[test]
fn row_08_prefix_does_not_match_partial_last_element() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bb"]), None, "/aaa/bbb"), None);
}

#[test]
fn row_09_prefix_matches_equal_path() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bbb"]), None, "/aaa/bbb").as_deref(), Some("/aaa/bbb"));
}

#[test]
fn row_10_prefix_ignores_trailing_slash_of_rule() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bbb/"]), None, "/aaa/bbb").as_deref(), Some("/aaa/bbb/"));
}

#[test]
fn row_11_prefix_matches_request_with_trailing_slash() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bbb"]), None, "/aaa/bbb/").as_deref(), Some("/aaa/bbb"));
}

#[test]
fn row_12_prefix_matches_sub_path() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bbb"]), None, "/aaa/bbb/ccc").as_deref(), Some("/aaa/bbb"));
}

#[test]
fn row_13_prefix_is_not_a_string_prefix() {
    assert_eq!(served_by(&prefix_table(&["/aaa/bbb"]), None, "/aaa/bbbxyz"), None);
}

#[test]
fn row_14_longest_prefix_wins_over_root() {
    assert_eq!(served_by(&prefix_table(&["/", "/aaa"]), None, "/aaa/ccc").as_deref(), Some("/aaa"));
}

#[test]
fn row_15_longest_of_three_prefixes_wins() {
    let t = prefix_table(&["/", "/aaa", "/aaa/bbb"]);
    assert_eq!(served_by(&t, None, "/aaa/bbb").as_deref(), Some("/aaa/bbb"));
}

#[test]
fn row_16_root_prefix_catches_the_rest() {
    let t = prefix_table(&["/", "/aaa", "/aaa/bbb"]);
    assert_eq!(served_by(&t, None, "/ccc").as_deref(), Some("/"));
}

#[test]
fn row_17_no_match_goes_to_default_backend() {
    assert_eq!(served_by(&prefix_table(&["/aaa"]), None, "/ccc"), None);
}

#[test]
fn row_18_exact_beats_prefix_on_same_path() {
    let t = Builder::new().prefix(None, "/foo", "prefix").exact(None, "/foo", "exact").build();
    assert_eq!(served_by(&t, None, "/foo").as_deref(), Some("exact"));
    assert_eq!(served_by(&t, None, "/foo/").as_deref(), Some("prefix"));
}

// --- Precedence and the rest of the lookup. ---

#[test]
fn paths_match_case_sensitively() {
    assert_eq!(served_by(&prefix_table(&["/foo"]), None, "/FOO"), None);
}

#[test]
fn exact_host_beats_wildcard_beats_hostless() {
    let t = Builder::new()
        .prefix(Some("foo.bar.com"), "/", "exact")
        .prefix(Some("*.bar.com"), "/", "wildcard")
        .prefix(None, "/", "any")
        .build();
    assert_eq!(served_by(&t, Some("foo.bar.com"), "/").as_deref(), Some("exact"));
    assert_eq!(served_by(&t, Some("baz.bar.com"), "/").as_deref(), Some("wildcard"));
    assert_eq!(served_by(&t, Some("x.y.bar.com"), "/").as_deref(), Some("any"));
    assert_eq!(served_by(&t, Some("other.com"), "/").as_deref(), Some("any"));
    assert_eq!(served_by(&t, None, "/").as_deref(), Some("any"));
    assert_eq!(t.route(Some("FOO.bar.com:8443"), "/").unwrap().host, HostMatch::Exact);
}

/// The host_rules conformance feature: unknown hosts get 404 when no host-less rule exists.
#[test]
fn unknown_hosts_get_not_found_without_hostless_rules() {
    let t = Builder::new()
        .prefix(Some("*.foo.com"), "/", "wildcard")
        .prefix(Some("foo.bar.com"), "/", "exact")
        .build();
    assert_eq!(served_by(&t, Some("subdomain.bar.com"), "/"), None);
    assert_eq!(served_by(&t, Some("baz.bar.foo.com"), "/"), None);
    assert_eq!(served_by(&t, Some("foo.com"), "/"), None);
    assert_eq!(served_by(&t, Some("bar.foo.com"), "/").as_deref(), Some("wildcard"));
}

#[test]
fn chosen_host_without_matching_path_does_not_fall_through_to_less_specific_host() {
    let t = Builder::new().prefix(Some("foo.com"), "/api", "api").prefix(None, "/", "any").build();
    assert_eq!(served_by(&t, Some("foo.com"), "/other"), None);
}

#[test]
fn host_fallback_then_default_route_catch_unmatched_paths() {
    let mut t =
        Builder::new().prefix(Some("foo.com"), "/api", "api").prefix(Some("bar.com"), "/api", "api2").open();
    let fb = t.add_backend(unavailable("fallback"));
    let df = t.add_backend(unavailable("default"));
    let root = || PathRule::prefix("/").unwrap();
    t.virtual_host_mut(Some(&"foo.com".parse().unwrap())).set_fallback(route(root(), None, fb)).unwrap();
    t.set_default_route(route(root(), None, df.clone())).unwrap();
    assert_eq!(
        t.set_default_route(route(root(), None, df)),
        Err(RouteConflict { existing: None, rule: root() })
    );
    let t = t.build();

    assert_eq!(served_by(&t, Some("foo.com"), "/api/x").as_deref(), Some("api"));
    assert_eq!(served_by(&t, Some("foo.com"), "/other").as_deref(), Some("fallback"));
    assert_eq!(served_by(&t, Some("bar.com"), "/other").as_deref(), Some("default"));
    assert_eq!(served_by(&t, Some("unknown.com"), "/").as_deref(), Some("default"));
    assert!(t.route(Some("foo.com"), "/other").unwrap().path.is_none());
}

#[test]
fn a_real_root_rule_beats_the_host_fallback() {
    let mut t = Builder::new().prefix(Some("foo.com"), "/", "root").open();
    let fb = t.add_backend(unavailable("fallback"));
    let fallback = route(PathRule::prefix("/").unwrap(), None, fb);
    t.virtual_host_mut(Some(&"foo.com".parse().unwrap())).set_fallback(fallback).unwrap();
    let t = t.build();
    assert_eq!(served_by(&t, Some("foo.com"), "/x").as_deref(), Some("root"));
}

#[test]
fn the_same_rule_twice_on_a_host_is_a_conflict_and_the_first_stays() {
    let mut t = Builder::new().prefix(Some("foo.com"), "/a/", "first").open();
    let second = t.add_backend(unavailable("second"));
    let err = t
        .virtual_host_mut(Some(&"foo.com".parse().unwrap()))
        .add_route(route(PathRule::prefix("/a").unwrap(), Some("second"), second))
        .unwrap_err();
    assert_eq!(err.existing.as_deref(), Some(&NamespacedName::new("default", "first")));
    assert_eq!(served_by(&t.build(), Some("foo.com"), "/a").as_deref(), Some("first"));
}

#[test]
fn rule_paths_with_router_syntax_characters_match_literally() {
    let t = Builder::new()
        .prefix(None, "/{id}", "braces")
        .exact(None, "/files/*", "star")
        .prefix(None, "/a:b", "colon")
        .prefix(None, "/caf%C3%A9", "escaped")
        .build();
    assert_eq!(served_by(&t, None, "/{id}/x").as_deref(), Some("braces"));
    assert_eq!(served_by(&t, None, "/123"), None);
    assert_eq!(served_by(&t, None, "/files/*").as_deref(), Some("star"));
    assert_eq!(served_by(&t, None, "/files/x"), None);
    assert_eq!(served_by(&t, None, "/a:b/c").as_deref(), Some("colon"));
    // Requests are normalised (decoded) before routing, and so are rule paths.
    let request = crate::normalize_path("/caf%c3%a9/x").unwrap();
    assert_eq!(served_by(&t, None, &request).as_deref(), Some("escaped"));
}

/// The hash lookup must agree with the definition: the maximum `PathMatch` over all rules.
#[test]
fn lookup_agrees_with_best_path_match_over_all_rules() {
    let rules: Vec<PathRule> =
        ["/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/a/b/c", "/b", "/b/a", "/a/b/c/d/"]
            .iter()
            .flat_map(|p| [PathRule::prefix(p).unwrap(), PathRule::exact(p).unwrap()])
            .collect();
    let segments = ["a", "b", "c", "d", "ab", "bc", ""];
    let mut requests = vec!["/".to_owned()];
    for a in segments {
        for b in segments {
            for c in ["", "/", "/c", "/c/d", "/c/d/"] {
                requests.push(format!("/{a}/{b}{c}").replace("//", "/"));
                requests.push(format!("/{a}{c}").replace("//", "/"));
            }
        }
    }
    // Every contiguous window of the rule list, as rule sets.
    for window in 1..=rules.len() {
        for start in 0..=(rules.len() - window) {
            let subset = &rules[start..start + window];
            let mut vhost = VirtualHost::new(None);
            for (i, rule) in subset.iter().enumerate() {
                let _ = vhost.add_route(route(
                    rule.clone(),
                    None,
                    Backend::unavailable_for_tests(&i.to_string()),
                ));
            }
            for req in &requests {
                let expected = subset.iter().filter_map(|r| r.matches(req)).max();
                let got = vhost.route(req).map(|(_, m)| m);
                assert_eq!(got, expected, "rules {subset:?} request {req}");
            }
        }
    }
}

#[test]
fn sharing_endpoint_sets_keeps_previous_sets_and_moves_their_endpoints() {
    let key = EndpointKey {
        service: NamespacedName::new("default", "web"),
        port: 80,
        protocol: crate::Transport::Tcp,
    };
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let backend = |addrs: [SocketAddr; 1]| Backend {
        target: Target::Endpoints(Arc::new(EndpointSet::new(key.clone(), addrs))),
        ..unavailable("web")
    };

    let tls = TlsTable::new(test_certificate("default.invalid"));
    let table = |builder: &mut TableBuilder, addr: SocketAddr| {
        let backend = builder.add_backend(backend([addr]));
        builder
            .virtual_host_mut(None)
            .add_route(route(PathRule::prefix("/").unwrap(), None, backend.clone()))
            .unwrap();
        backend
    };
    let mut old = TableBuilder::new(tls.clone());
    table(&mut old, addr("10.0.0.1:8080"));
    let old = old.build();
    let old_set = old.endpoint_set(&key).unwrap().clone();

    let mut new = TableBuilder::new(tls);
    new.share_endpoint_sets(&old);
    let backend = table(&mut new, addr("10.0.0.2:8080"));
    assert_eq!(new.endpoints_moved(), 1);
    let new = new.build();

    assert!(Arc::ptr_eq(new.endpoint_set(&key).unwrap(), &old_set));
    assert!(Arc::ptr_eq(backend.endpoint_set().unwrap(), &old_set));
    assert_eq!(old_set.addrs(), vec![addr("10.0.0.2:8080")]);
    assert_eq!(old, new, "tables compare without their endpoints");
}

#[test]
fn a_stream_shares_its_service_ports_endpoint_set_and_adopts_the_previous_one() {
    let key = EndpointKey {
        service: NamespacedName::new("default", "web"),
        port: 80,
        protocol: crate::Transport::Tcp,
    };
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let tls = TlsTable::new(test_certificate("default.invalid"));
    let table = |endpoint: SocketAddr, previous: Option<&Table>| {
        let set = || Arc::new(EndpointSet::new(key.clone(), [endpoint]));
        let mut t = TableBuilder::new(tls.clone());
        if let Some(previous) = previous {
            t.share_endpoint_sets(previous);
        }
        t.add_backend(Backend { target: Target::Endpoints(set()), ..unavailable("web") });
        let stream = crate::StreamService {
            port: 9000,
            protocol: crate::Transport::Tcp,
            service: Arc::new(key.service.clone()),
            service_port: PortRef::Number(80),
            decode_proxy_protocol: false,
            send_proxy_protocol: false,
            endpoints: set(),
        };
        assert!(t.add_stream(stream.clone()));
        assert!(!t.add_stream(stream), "one service per protocol and port");
        t.build()
    };
    let old = table(addr("10.0.0.1:8080"), None);
    let old_set = old.endpoint_set(&key).unwrap().clone();
    let stream = old.stream(crate::Transport::Tcp, 9000).unwrap();
    assert!(Arc::ptr_eq(&stream.endpoints, &old_set), "shared with the backend");
    assert!(old.stream(crate::Transport::Udp, 9000).is_none());

    let new = table(addr("10.0.0.2:8080"), Some(&old));
    assert!(Arc::ptr_eq(&new.stream(crate::Transport::Tcp, 9000).unwrap().endpoints, &old_set));
    assert_eq!(old_set.addrs(), vec![addr("10.0.0.2:8080")]);
    assert_eq!(old, new, "tables compare without their endpoints");
}

#[test]
fn backends_with_the_same_service_port_share_one_endpoint_set() {
    let key = EndpointKey {
        service: NamespacedName::new("default", "web"),
        port: 80,
        protocol: crate::Transport::Tcp,
    };
    let mut t = empty_table();
    let mk = |protocol| Backend {
        protocol,
        target: Target::Endpoints(Arc::new(EndpointSet::new(key.clone(), []))),
        ..unavailable("web")
    };
    let a = t.add_backend(mk(Protocol::Http));
    let b = t.add_backend(mk(Protocol::Grpc));
    assert!(Arc::ptr_eq(a.endpoint_set().unwrap(), b.endpoint_set().unwrap()));
}

#[test]
fn tls_resolves_exact_then_wildcard_then_default() {
    let mut t = empty_table();
    let exact = test_certificate("foo.bar.com");
    let wildcard = test_certificate("*.bar.com");
    assert!(t.tls_mut().insert(&"foo.bar.com".parse().unwrap(), exact.clone()));
    assert!(t.tls_mut().insert(&"*.bar.com".parse().unwrap(), wildcard.clone()));
    assert!(!t.tls_mut().insert(&"foo.bar.com".parse().unwrap(), wildcard.clone()), "first wins");

    let tls = t.tls();
    assert!(Arc::ptr_eq(tls.resolve(Some("foo.bar.com")), &exact.key));
    assert!(Arc::ptr_eq(tls.resolve(Some("FOO.bar.com")), &exact.key));
    assert!(Arc::ptr_eq(tls.resolve(Some("baz.bar.com")), &wildcard.key));
    assert!(Arc::ptr_eq(tls.resolve(Some("a.baz.bar.com")), &tls.default_certificate().key));
    assert!(Arc::ptr_eq(tls.resolve(None), &tls.default_certificate().key));
}

#[test]
fn on_a_regex_host_every_rule_is_tried_longest_first() {
    let t = Builder::new()
        .prefix(None, "/api", "prefix")
        .route(None, PathRule::regex("/api/.*").unwrap(), "short-regex")
        .route(None, PathRule::regex("/api/v[0-9]+/.*").unwrap(), "long-regex")
        .exact(None, "/api/v1/health", "exact")
        .build();
    // `/api/v[0-9]+/.*` (15) before `/api/v1/health` (14) before `/api/.*` (7) before `/api` (4).
    assert_eq!(served_by(&t, None, "/api/v1/health").as_deref(), Some("long-regex"));
    assert_eq!(served_by(&t, None, "/api/v1/users").as_deref(), Some("long-regex"));
    assert_eq!(served_by(&t, None, "/API/other").as_deref(), Some("short-regex"), "case-insensitive");
    assert_eq!(served_by(&t, None, "/api").as_deref(), Some("prefix"));
}

#[test]
fn a_catch_all_regex_never_overrides_a_longer_protected_prefix() {
    let t = Builder::new()
        .route(None, PathRule::regex("/.*").unwrap(), "open")
        .prefix(None, "/admin", "protected")
        .build();
    for path in ["/admin", "/admin/", "/admin/users", "/ADMIN/users", "/Admin"] {
        assert_eq!(served_by(&t, None, path).as_deref(), Some("protected"), "{path}");
    }
    assert_eq!(served_by(&t, None, "/public").as_deref(), Some("open"));
}

#[test]
fn on_a_regex_host_exact_and_prefix_paths_match_as_case_insensitive_string_prefixes() {
    let t = Builder::new()
        .route(None, PathRule::regex("/x").unwrap(), "regex")
        .exact(None, "/foo", "exact")
        .prefix(None, "/bar", "prefix")
        .build();
    assert_eq!(served_by(&t, None, "/FOO/bar").as_deref(), Some("exact"));
    assert_eq!(served_by(&t, None, "/barn").as_deref(), Some("prefix"));
    assert_eq!(served_by(&t, None, "/other"), None);
}

/// Without regex rules, the spec's semantics stand: `Exact` first, then the longest `Prefix`.
#[test]
fn without_regex_rules_exact_beats_a_longer_prefix() {
    let t =
        Builder::new().prefix(None, "/api/v1/health/x", "long-prefix").exact(None, "/api", "exact").build();
    assert_eq!(served_by(&t, None, "/api").as_deref(), Some("exact"));
    assert_eq!(served_by(&t, None, "/API"), None, "case-sensitive");
}

#[test]
fn a_multi_byte_character_at_the_longest_prefix_length_does_not_panic() {
    let t = Builder::new().prefix(None, "/admin", "admin").prefix(None, "/", "root").build();
    // `/admi` + `é` (two bytes): the longest rule's length falls inside the character.
    assert_eq!(served_by(&t, None, "/admié").as_deref(), Some("root"));
    assert_eq!(served_by(&t, None, "/admié/x").as_deref(), Some("root"));
    assert_eq!(served_by(&t, None, "/ééééé").as_deref(), Some("root"));
    assert_eq!(served_by(&t, None, "/admin/é").as_deref(), Some("admin"));
}

/// Client certificate rules belong to the virtual host a request (or a handshake's SNI name) is
/// served by, as nginx's `ssl_verify_client` belongs to a `server`: an exact host without rules
/// does not inherit a wildcard's.
#[test]
fn client_auth_follows_the_virtual_host() {
    let mut builder = empty_table();
    let backend = builder.add_backend(unavailable("web"));
    let refused = Arc::new(ClientAuth::Refused);
    for host in ["*.example.com", "open.example.com"] {
        let host: HostRule = host.parse().unwrap();
        builder
            .virtual_host_mut(Some(&host))
            .add_route(route(PathRule::prefix("/").unwrap(), None, backend.clone()))
            .unwrap();
    }
    builder.virtual_host_mut(Some(&"*.example.com".parse().unwrap())).set_client_auth(refused.clone());
    let table = builder.build();
    let lookup = |host: Option<&str>| table.client_auth(host.and_then(normalize_host).as_ref()).cloned();

    assert_eq!(lookup(Some("a.example.com")), Some(refused.clone()));
    assert_eq!(lookup(Some("A.Example.com.:443")), Some(refused));
    assert_eq!(lookup(Some("open.example.com")), None);
    assert_eq!(lookup(Some("other.org")), None);
    assert_eq!(lookup(None), None);
    assert_eq!(empty_table().build().client_auth(normalize_host("a.example.com").as_ref()), None);
}

#[test]
fn hosts_with_many_paths_route_as_hosts_with_few() {
    // Past a few paths a host's index becomes a hash map: every path routes the same either way.
    for count in [1, 2, 8, 9, 30] {
        let mut builder = Builder::new();
        for i in 0..count {
            builder = builder.prefix(None, &format!("/p{i}"), &format!("prefix-{i}"));
            builder = builder.exact(None, &format!("/e{i}"), &format!("exact-{i}"));
        }
        let table = builder.prefix(None, "/p0/deeper", "deeper").build();
        for i in 0..count {
            assert_eq!(
                served_by(&table, None, &format!("/p{i}/x")).as_deref(),
                Some(&*format!("prefix-{i}"))
            );
            assert_eq!(served_by(&table, None, &format!("/e{i}")).as_deref(), Some(&*format!("exact-{i}")));
            assert_eq!(served_by(&table, None, &format!("/e{i}/x")), None, "{count} paths");
        }
        assert_eq!(served_by(&table, None, "/p0/deeper/x").as_deref(), Some("deeper"));
        assert_eq!(served_by(&table, None, "/other"), None);
    }
}
