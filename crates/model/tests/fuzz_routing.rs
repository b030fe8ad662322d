//! Fuzzing of path normalisation and routing: arbitrary request paths (percent-escapes, dot
//! segments, runs of `/`, multi-byte characters, invalid UTF-8) are normalised and routed
//! through a table with a mix of `Exact`, `Prefix` and `Regex` rules.
//!
//! `OSTIUM_FUZZ_SECONDS=600 cargo test --release -p ostium-model --test fuzz_routing -- --nocapture`
//! runs it for ten minutes (see docs/fuzzing.md).

use std::fmt;
use std::sync::{Arc, OnceLock};

use ostium_model::{
    Backend, Certificate, HostRule, NamespacedName, PathMatch, PathRule, PortRef, Protocol, Route,
    RouteAction, Table, TableBuilder, Target, TlsTable, forwarded_path, normalize_path,
};
use ostium_test_support::fuzz;
use proptest::prelude::*;
use proptest::sample::select;

/// A host with `Exact` and `Prefix` rules only: routed by hash lookups.
const PLAIN_HOST: &str = "plain.example";
/// A host that also has `Regex` rules: every rule tried longest first.
const REGEX_HOST: &str = "regex.example";

/// Pieces request paths are made of: what normalisation and routing care about.
const PATH_PIECES: &[&[u8]] = &[
    b"/",
    b"/",
    b"/",
    b"//",
    b".",
    b"..",
    b"/.",
    b"/..",
    b"%2F",
    b"%2f",
    b"%2e",
    b"%2E",
    b"%2e%2e",
    b"%C3%A9",
    b"%c3%a9",
    b"%C3",
    b"%A9",
    b"%25",
    b"%",
    b"%0",
    b"%00",
    b"%zz",
    b"%ff",
    b"%61",
    "é".as_bytes(),
    "É".as_bytes(),
    b"admin",
    b"ADMIN",
    b"admi",
    "admié".as_bytes(),
    b"api",
    b"v1",
    b"users",
    b"a",
    b"b",
    b"x",
    "€".as_bytes(),
    "𝄞".as_bytes(),
    b"?",
    b"#",
    b";",
    b" ",
    b"\0",
    b"\xC3",
    b"\xA9",
    b"\xFF",
    b"php",
    b".php",
];

/// Segments of generated rule paths.
const RULE_SEGMENTS: &[&str] =
    &["admin", "admi", "admié", "é", "api", "v1", "users", "a", "b", "x", "€", "𝄞", "ADMIN", ".well-known"];

const PREFIX_RULES: &[&str] = &["/", "/admin", "/admié", "/api", "/api/v1", "/é", "/a/b"];
const EXACT_RULES: &[&str] = &["/admin", "/api/v1/users", "/admié/x", "/é"];
const REGEX_RULES: &[&str] = &["/api/v[0-9]+/.*", "/admi.", "/caf[eé]/?$", "/.*\\.php"];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Exact,
    Prefix,
    Regex(&'static str),
}

/// A rule added on top of the fixed ones: a kind and a path made of [`RULE_SEGMENTS`].
#[derive(Clone, Debug)]
struct ExtraRule {
    kind: Kind,
    path: String,
}

/// A request path as bytes; shown as text when it is UTF-8.
#[derive(Clone)]
struct RawPath(Vec<u8>);

impl fmt::Debug for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    extra_rules: Vec<ExtraRule>,
    paths: Vec<RawPath>,
}

fn raw_path() -> impl Strategy<Value = RawPath> {
    let piece = prop_oneof![
        8 => select(PATH_PIECES).prop_map(<[u8]>::to_vec),
        1 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
        1 => "[a-zA-Z0-9._~%/-]{1,4}".prop_map(String::into_bytes),
    ];
    (prop::bool::weighted(0.9), prop::collection::vec(piece, 0..12)).prop_map(|(absolute, pieces)| {
        let mut bytes = if absolute { b"/".to_vec() } else { Vec::new() };
        bytes.extend(pieces.concat());
        RawPath(bytes)
    })
}

fn extra_rule() -> impl Strategy<Value = ExtraRule> {
    let kind = prop_oneof![
        Just(Kind::Exact),
        Just(Kind::Prefix),
        select(&["", ".*", "/?$", "[a-z]+", "(/|$)"][..]).prop_map(Kind::Regex),
    ];
    let path = prop::collection::vec(select(RULE_SEGMENTS), 0..4).prop_map(|s| format!("/{}", s.join("/")));
    (kind, path).prop_map(|(kind, path)| ExtraRule { kind, path })
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(extra_rule(), 0..5), prop::collection::vec(raw_path(), 1..6))
        .prop_map(|(extra_rules, paths)| Case { extra_rules, paths })
}

fn certificate() -> Certificate {
    static CERTIFICATE: OnceLock<Certificate> = OnceLock::new();
    CERTIFICATE.get_or_init(|| ostium_test_support::certificate(&["fuzz.invalid"])).clone()
}

/// The fixed rules, compiled once.
fn fixed_rules() -> &'static [PathRule] {
    static RULES: OnceLock<Vec<PathRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let prefix = PREFIX_RULES.iter().map(|p| PathRule::prefix(p).unwrap());
        let exact = EXACT_RULES.iter().map(|p| PathRule::exact(p).unwrap());
        let regex = REGEX_RULES.iter().map(|p| PathRule::regex(p).unwrap());
        prefix.chain(exact).chain(regex).collect()
    })
}

/// The table of a case and, per host, the rules it holds in the order they were added; a
/// route's backend port is its rule's index in that list.
fn build(extra_rules: &[ExtraRule]) -> (Table, Vec<PathRule>, Vec<PathRule>) {
    let extra = extra_rules.iter().filter_map(|r| match r.kind {
        Kind::Exact => PathRule::exact(&r.path).ok(),
        Kind::Prefix => PathRule::prefix(&r.path).ok(),
        Kind::Regex(suffix) => PathRule::regex(&format!("{}{suffix}", regex::escape(&r.path))).ok(),
    });
    let rules: Vec<PathRule> = fixed_rules().iter().cloned().chain(extra).collect();
    let mut table = TableBuilder::new(TlsTable::new(certificate()));
    let mut add = |host: &str, rules: &mut dyn Iterator<Item = &PathRule>| {
        let host: HostRule = host.parse().unwrap();
        let vhost = table.virtual_host_mut(Some(&host));
        let mut added = Vec::new();
        for rule in rules {
            let backend = Arc::new(Backend {
                service: Arc::new(NamespacedName::new("default", "web")),
                port: PortRef::Number(u16::try_from(added.len()).expect("few rules")),
                protocol: Protocol::Http,
                target: Target::Unavailable,
            });
            let action = RouteAction::Forward(backend);
            let route = Route { rule: rule.clone(), ingress: None, action, policy: Arc::default() };
            if vhost.add_route(route).is_ok() {
                added.push(rule.clone());
            }
        }
        added
    };
    let plain = add(PLAIN_HOST, &mut rules.iter().filter(|r| !matches!(r, PathRule::Regex(_))));
    let regex = add(REGEX_HOST, &mut rules.iter());
    (table.build(), plain, regex)
}

fn rule_len(rule: &PathRule) -> usize {
    match rule {
        PathRule::Exact(p) | PathRule::Prefix(p) => p.len(),
        PathRule::Regex(r) => r.pattern().len(),
    }
}

/// The route a host must choose, by the definition, over all its rules: without regexes the
/// best [`PathRule::matches`]; with them, the first of the rules taken longest first (in the
/// order added among equals) that [`PathRule::matches_on_regex_host`].
fn expected(rules: &[PathRule], path: &str) -> Option<(usize, PathMatch)> {
    if rules.iter().any(|r| matches!(r, PathRule::Regex(_))) {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rule_len(&rules[i])));
        return order.into_iter().find_map(|i| rules[i].matches_on_regex_host(path).map(|m| (i, m)));
    }
    let best = rules.iter().filter_map(|r| r.matches(path)).max()?;
    let matching: Vec<usize> = (0..rules.len()).filter(|&i| rules[i].matches(path) == Some(best)).collect();
    assert_eq!(matching.len(), 1, "two rules of a host match {path:?} equally: {rules:?}");
    Some((matching[0], best))
}

fn routed(table: &Table, host: &str, path: &str) -> Option<(usize, PathMatch)> {
    let m = table.route(Some(host), path)?;
    let RouteAction::Forward(backend) = &m.route.action else { panic!("a redirect route") };
    let PortRef::Number(index) = backend.port else { panic!("a numbered port") };
    Some((usize::from(index), m.path.expect("no fallback or default route is set")))
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let (table, plain_rules, regex_rules) = build(&case.extra_rules);
    for RawPath(raw) in &case.paths {
        let Ok(raw) = std::str::from_utf8(raw) else { continue };
        // Routing never panics, whatever it is given.
        let _ = table.route(Some(PLAIN_HOST), raw);
        let _ = table.route(Some(REGEX_HOST), raw);

        let Ok(path) = normalize_path(raw) else { continue };
        prop_assert!(path.starts_with('/'), "{raw:?} normalised to {path:?}");
        prop_assert!(!path.contains("//"), "{raw:?} normalised to {path:?}");
        prop_assert!(
            !path.split('/').any(|s| s == "." || s == ".."),
            "{raw:?} normalised to {path:?}, which has a dot segment"
        );
        // Idempotent on the path as it goes upstream: a `%` of the result is sent as `%25`.
        let wire = path.replace('%', "%25");
        let again = normalize_path(&wire);
        prop_assert_eq!(again.as_deref(), Ok(&*path), "normalising {:?} (from {:?}) again", path, raw);
        // The backend is sent the path the router judged: decoding what is forwarded gives it.
        if let Ok(forwarded) = forwarded_path(raw) {
            let judged = normalize_path(&forwarded);
            prop_assert_eq!(judged.as_deref(), Ok(&*path), "{:?} forwarded as {:?}", raw, forwarded);
        }

        for (host, rules) in [(PLAIN_HOST, &plain_rules), (REGEX_HOST, &regex_rules)] {
            let got = routed(&table, host, &path);
            let want = expected(rules, &path);
            let show = |r: Option<(usize, PathMatch)>| r.map(|(i, m)| (rules[i].to_string(), m));
            prop_assert_eq!(show(got), show(want), "host {} path {:?} (from {:?})", host, path, raw);
        }
    }
    Ok(())
}

#[test]
fn fuzz_routing() {
    fuzz::run("fuzz_routing", 1000, case(), check);
}
