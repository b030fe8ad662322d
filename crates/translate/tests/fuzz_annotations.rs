//! Fuzzing of annotation parsing and htpasswd Secrets through the public translation: arbitrary
//! annotations (mostly ingress-nginx's keys under the default prefix, with good, bad and random
//! values) and arbitrary `auth` data. Translation must never panic, and authentication must fail
//! closed: a route of an Ingress with `auth-type` always has authentication (users or deny).
//!
//! `OSTIUM_FUZZ_SECONDS=600 cargo test --release -p ostium-translate --test fuzz_annotations
//! fuzz_annotations -- --nocapture` runs one for ten minutes (see docs/fuzzing.md).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ostium_model::{Credentials, Route, Table};
use ostium_test_support::fuzz;
use ostium_translate::{Object, Objects, Options, Translation, parse_manifests, translate};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;

const PREFIX: &str = "nginx.ingress.kubernetes.io";

/// The annotations ostium reads, the refused snippets, and a few it reports as unsupported.
const KNOWN_KEYS: &[&str] = &[
    "from-to-www-redirect",
    "use-regex",
    "rewrite-target",
    "x-forwarded-prefix",
    "auth-type",
    "auth-type",
    "auth-type",
    "auth-secret",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "backend-protocol",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "limit-rate",
    "configuration-snippet",
    "server-snippet",
    "auth-url",
    "canary",
    "Auth-Type",
    "auth-type ",
    "",
];

/// Values that mean something to some annotation, or almost do.
const KNOWN_VALUES: &[&str] = &[
    "basic",
    "basic",
    "Basic",
    "digest",
    "",
    " basic",
    "basic-auth",
    "basic-auth",
    "default/basic-auth",
    "other/basic-auth",
    "auth-map",
    "empty",
    "missing",
    "/",
    "auth-file",
    "ldap",
    "true",
    "false",
    "True",
    "1",
    "0",
    "yes",
    "8m",
    "512k",
    "1g",
    "-1",
    "18446744073709551615g",
    "1.5m",
    "HTTP",
    "HTTPS",
    "GRPC",
    "grpcs",
    "FCGI",
    "/$1",
    "/app/$2abc",
    "/$request_uri",
    "/a$",
    "$1",
    "https://example.com/x",
    "http://",
    "ftp://example.com",
    "http://[::1]:8080/a?b#c",
    "299",
    "301",
    "308",
    "309",
    "99999999999",
    "9223372036854775807",
    "10.0.0.0/8, ::1",
    "Realm \"quoted\"",
    "realm\\",
    "realm\r\nX: y",
    "/app",
    "/../x",
    "/app/..",
    "/é",
    "\u{0}",
    "\u{7f}",
];

const HOSTS: &[&str] = &["a.example.com", "www.a.example.com", "b.example.com", "", "*.example.com"];
const PATHS: &[&str] = &["/", "/admin", "/api/(.*)", "/x/$", "/.*", "/é", "", "/a(", "//a/./b/../c"];
const PATH_TYPES: &[&str] = &["Prefix", "Prefix", "Exact", "ImplementationSpecific", ""];

/// The other objects: our class, a Service, and Secrets for `auth-secret` to name.
const BASE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: ostium}
spec: {controller: ostium.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Secret
metadata: {name: basic-auth, namespace: default}
stringData:
  auth: |
    alice:$2y$04$UYpkLG/uwb4n9KyYwLJD4OtixsOkpcx9TuNLqHr7GHJbkGPRZH78.
    bob:$apr1$/8X6cRvf$uX.kYKkf2HtiXYdr.imRC1
---
apiVersion: v1
kind: Secret
metadata: {name: basic-auth, namespace: other}
stringData: {auth: "bob:$apr1$/8X6cRvf$uX.kYKkf2HtiXYdr.imRC1"}
---
apiVersion: v1
kind: Secret
metadata: {name: auth-map, namespace: default}
stringData: {carol: "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", erin: "{PLAIN}x"}
---
apiVersion: v1
kind: Secret
metadata: {name: empty, namespace: default}
"#;

/// Whole htpasswd lines that hold a usable user.
const GOOD_LINES: &[(&str, &str)] = &[
    ("alice", "alice:$2y$04$UYpkLG/uwb4n9KyYwLJD4OtixsOkpcx9TuNLqHr7GHJbkGPRZH78."),
    ("bob", "bob:$apr1$/8X6cRvf$uX.kYKkf2HtiXYdr.imRC1"),
    ("carol", "carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="),
    (
        "dave",
        "dave:$6$pbmA/oSNUCF3GTBq$EDX8qXbZEBWvBCHrx4l7ZN3xr/SjLvM32wNMIwUxgxoWVhp3M/WJ08EDtLI71bbemR1Fvd7am8nVV8lywLgRI.",
    ),
    ("eve", "eve:$5$rounds=5000$salt$Gbr5qgqfWdqRVdLYhXHQpQovGdB7eRzL5R5RNbZIzjB"),
];

/// Starts of hash-looking values, to be followed by random text.
const HASH_PREFIXES: &[&str] =
    &["$2y$", "$2a$10$", "$2b$", "$apr1$", "$apr1$$", "{SHA}", "$5$", "$6$", "$1$", "{PLAIN}", ""];

fn options() -> Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS
        .get_or_init(|| {
            let fallback = ostium_test_support::fallback_certificate();
            Options::new(fallback, Arc::new(rustls::crypto::ring::default_provider()))
        })
        .clone()
}

fn base_objects() -> Objects {
    static OBJECTS: OnceLock<Objects> = OnceLock::new();
    OBJECTS
        .get_or_init(|| {
            let mut objects = Objects::default();
            for object in parse_manifests(BASE).unwrap() {
                objects.insert(object);
            }
            objects
        })
        .clone()
}

/// Every route of a table, fallbacks and the default route included.
fn all_routes(table: &Table) -> Vec<&Route> {
    let mut routes = Vec::new();
    for vhost in table.virtual_hosts() {
        routes.extend(vhost.routes());
        routes.extend(vhost.fallback());
    }
    routes.extend(table.default_route_ref());
    routes
}

// --- annotations ---

#[derive(Clone, Debug)]
struct Rule {
    host: &'static str,
    paths: Vec<(&'static str, &'static str)>,
}

#[derive(Clone, Debug)]
struct FuzzIngress {
    annotations: BTreeMap<String, String>,
    rules: Vec<Rule>,
    default_backend: bool,
}

fn annotation_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(KNOWN_KEYS).prop_map(|k| format!("{PREFIX}/{k}")),
        1 => "[a-z-]{0,12}".prop_map(|k| format!("{PREFIX}/{k}")),
        1 => select(&[
            "kubernetes.io/ingress.class",
            "nginx.ingress.kubernetes.io",
            "nginx.ingress.kubernetes.io//auth-type",
            "nginx.ingress.kubernetes.io.evil/auth-type",
            "NGINX.ingress.kubernetes.io/auth-type",
            "auth-type",
        ][..]).prop_map(str::to_owned),
    ]
}

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(KNOWN_VALUES).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => (select(KNOWN_VALUES), any::<String>()).prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

fn fuzz_ingress() -> impl Strategy<Value = FuzzIngress> {
    let path = (select(PATHS), select(PATH_TYPES));
    let rule =
        (select(HOSTS), prop::collection::vec(path, 1..3)).prop_map(|(host, paths)| Rule { host, paths });
    (
        prop::collection::btree_map(annotation_key(), annotation_value(), 0..8),
        prop::collection::vec(rule, 0..3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(annotations, rules, default_backend)| FuzzIngress {
            annotations,
            rules,
            default_backend,
        })
}

fn ingress_object(name: &str, ingress: &FuzzIngress, extra_annotations: &[(&str, &str)]) -> Object {
    let mut annotations = ingress.annotations.clone();
    for (k, v) in extra_annotations {
        annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let rules: Vec<_> = ingress
        .rules
        .iter()
        .map(|rule| {
            let paths: Vec<_> = rule
                .paths
                .iter()
                .map(|(path, path_type)| json!({"path": path, "pathType": path_type, "backend": backend}))
                .collect();
            json!({"host": rule.host, "http": {"paths": paths}})
        })
        .collect();
    let mut spec = json!({"ingressClassName": "ostium", "rules": rules});
    if ingress.default_backend {
        spec["defaultBackend"] = backend;
    }
    let value = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    });
    Object::from_value(value).expect("a well-formed Ingress")
}

/// Translates and renders, then checks that every route of an Ingress with `auth-type` has
/// authentication, denying unless `auth-type` is `basic`. Routes that only redirect to another
/// host (`from-to-www-redirect` aliases) never reach a backend and carry no authentication.
fn check_translation(
    objects: &Objects,
    ingresses: &BTreeMap<String, BTreeMap<String, String>>,
    probe: (&str, &str),
) -> Result<Translation, TestCaseError> {
    let translation = translate(objects, &options());
    let _ = translation.render();
    let _ = translation.explain(probe.0, probe.1, false);
    let _ = translation.explain(probe.0, probe.1, true);
    let auth_type = format!("{PREFIX}/auth-type");
    let auth_url = format!("{PREFIX}/auth-url");
    for route in all_routes(&translation.table) {
        let Some(id) = &route.ingress else { continue };
        let annotations = &ingresses[&*id.name];
        let served = !matches!(route.action, ostium_model::RouteAction::Redirect(_));
        if annotations.contains_key(&auth_url) && served {
            let policy = &route.policy;
            prop_assert!(
                policy.external_auth.is_some() || policy.denied.is_some(),
                "route {} of {id} has auth-url but neither external auth nor a denial",
                route.rule
            );
        }
        let Some(kind) = annotations.get(&auth_type) else { continue };
        if matches!(route.action, ostium_model::RouteAction::Redirect(_)) {
            continue; // the other name of a from-to-www-redirect host: nothing is served there
        }
        let auth = route.policy.auth.as_ref();
        prop_assert!(auth.is_some(), "route {} of {id} has no authentication", route.rule);
        if let Some(auth) = auth
            && kind != "basic"
        {
            prop_assert!(
                matches!(auth.credentials, Credentials::Deny),
                "route {} of {id}: auth-type {kind:?} does not deny",
                route.rule
            );
        }
    }
    Ok(translation)
}

#[test]
fn fuzz_annotations() {
    let probe = (select(HOSTS), select(&["/", "/admin/x", "/api/v1", "/%C3%A9", "/a/../b", "/.."][..]));
    let strategy = (prop::collection::vec(fuzz_ingress(), 1..4), probe);
    fuzz::run("fuzz_annotations", 1000, strategy, |(ingresses, probe)| {
        let mut objects = base_objects();
        let mut annotations = BTreeMap::new();
        for (i, ingress) in ingresses.iter().enumerate() {
            let name = format!("ingress-{i}");
            objects.insert(ingress_object(&name, ingress, &[]));
            annotations.insert(name, ingress.annotations.clone());
        }
        check_translation(&objects, &annotations, probe).map(drop)
    });
}

// --- htpasswd ---

#[derive(Clone, Debug)]
enum Line {
    Good(usize),
    /// A good line with one byte range replaced.
    Mangled(usize, usize, String),
    /// A user and a hash-looking value.
    Made(String, &'static str, String),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
struct AuthSecret {
    /// `auth-secret-type`: absent, `auth-file` or `auth-map`.
    secret_type: Option<&'static str>,
    lines: Vec<(Line, &'static str)>,
}

fn line() -> impl Strategy<Value = Line> {
    let good = 0..GOOD_LINES.len();
    prop_oneof![
        3 => good.clone().prop_map(Line::Good),
        2 => (good, any::<usize>(), "\\PC{0,3}").prop_map(|(i, at, with)| Line::Mangled(i, at, with)),
        3 => ("[a-z:]{0,6}", select(HASH_PREFIXES), "[ -~]{0,70}").prop_map(|(u, p, h)| Line::Made(u, p, h)),
        1 => select(&["", "#", "# alice:x", "   ", ":", "::", "alice", "alice:"][..]).prop_map(|s| Line::Text(s.into())),
        1 => any::<String>().prop_map(Line::Text),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Line::Bytes),
    ]
}

fn line_bytes(line: &Line) -> Vec<u8> {
    match line {
        Line::Good(i) => GOOD_LINES[*i].1.as_bytes().to_vec(),
        Line::Mangled(i, at, with) => {
            let mut bytes = GOOD_LINES[*i].1.as_bytes().to_vec();
            let at = at % (bytes.len() + 1);
            let end = (at + with.len().max(1)).min(bytes.len());
            bytes.splice(at..end, with.bytes());
            bytes
        }
        Line::Made(user, prefix, rest) => format!("{user}:{prefix}{rest}").into_bytes(),
        Line::Text(text) => text.clone().into_bytes(),
        Line::Bytes(bytes) => bytes.clone(),
    }
}

fn auth_secret() -> impl Strategy<Value = AuthSecret> {
    let separator = select(&["\n", "\n", "\r\n", "\r", "\n\n", " \n", "\t\n"][..]);
    (
        select(&[None, Some("auth-file"), Some("auth-map")][..]),
        prop::collection::vec((line(), separator), 0..8),
    )
        .prop_map(|(secret_type, lines)| AuthSecret { secret_type, lines })
}

/// The Secret's data: the lines as one `auth` file, or for `auth-map`, a key per line (the user,
/// up to a `:`) holding the rest.
fn secret_data(secret: &AuthSecret) -> BTreeMap<String, ByteString> {
    if secret.secret_type == Some("auth-map") {
        return secret
            .lines
            .iter()
            .map(|(line, _)| {
                let bytes = line_bytes(line);
                let colon = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
                let user = String::from_utf8_lossy(&bytes[..colon]).into_owned();
                (user, ByteString(bytes[(colon + 1).min(bytes.len())..].to_vec()))
            })
            .collect();
    }
    let file: Vec<u8> = secret
        .lines
        .iter()
        .flat_map(|(line, sep)| [line_bytes(line), sep.as_bytes().to_vec()])
        .flatten()
        .collect();
    BTreeMap::from([("auth".to_owned(), ByteString(file))])
}

/// Users that must be let in: for `auth-map`, those whose key holds a good hash; for a file,
/// those named on lines (not blank, not `#` comments) that are all the same good line.
fn surely_usable(secret: &AuthSecret, data: &BTreeMap<String, ByteString>) -> Vec<&'static str> {
    let good = GOOD_LINES.iter();
    match secret.secret_type {
        Some("auth-map") => good
            .filter(|(user, line)| data.get(*user).is_some_and(|h| h.0 == line.as_bytes()[user.len() + 1..]))
            .map(|(user, _)| *user)
            .collect(),
        _ => {
            let Ok(text) = std::str::from_utf8(&data["auth"].0) else { return Vec::new() };
            let lines: Vec<&str> =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            good.filter(|(user, line)| {
                let mut naming = lines.iter().filter(|l| l.split_once(':').is_some_and(|(u, _)| u == *user));
                naming.clone().next().is_some() && naming.all(|l| l == line)
            })
            .map(|(user, _)| *user)
            .collect()
        }
    }
}

#[test]
fn fuzz_htpasswd() {
    let ingress = FuzzIngress {
        annotations: BTreeMap::new(),
        rules: vec![Rule { host: "a.example.com", paths: vec![("/", "Prefix"), ("/admin", "Exact")] }],
        default_backend: true,
    };
    fuzz::run("fuzz_htpasswd", 1000, auth_secret(), |secret| {
        let mut objects = base_objects();
        let data = secret_data(&secret);
        objects.insert(Secret {
            metadata: ObjectMeta {
                name: Some("fuzz".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some(data.clone()),
            ..Secret::default()
        });
        let mut annotations =
            vec![(format!("{PREFIX}/auth-type"), "basic"), (format!("{PREFIX}/auth-secret"), "fuzz")];
        if let Some(kind) = secret.secret_type {
            annotations.push((format!("{PREFIX}/auth-secret-type"), kind));
        }
        let extra: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        objects.insert(ingress_object("protected", &ingress, &extra));
        let all = BTreeMap::from([(
            "protected".to_owned(),
            annotations.iter().map(|(k, v)| (k.clone(), (*v).to_owned())).collect(),
        )]);
        let translation = check_translation(&objects, &all, ("a.example.com", "/admin"))?;
        let routes = all_routes(&translation.table);
        prop_assert_eq!(routes.len(), 3, "both paths and the fallback are served");
        let must_pass = surely_usable(&secret, &data);
        for route in routes {
            let auth = route.policy.auth.as_ref().expect("checked above");
            match &auth.credentials {
                Credentials::Users(users) => {
                    prop_assert!(!users.is_empty(), "an empty user list on {}", route.rule);
                    for user in &must_pass {
                        prop_assert!(users.contains_key(*user), "user {user} was lost on {}", route.rule);
                    }
                }
                Credentials::Deny => prop_assert!(
                    must_pass.is_empty(),
                    "{must_pass:?} denied on {}: {:#?}",
                    route.rule,
                    translation.diagnostics
                ),
            }
        }
        Ok(())
    });
}
