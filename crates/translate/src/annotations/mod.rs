//! ingress-nginx annotations (under `--annotations-prefix`) parsed into typed route policy.
//!
//! Values are validated here, once, into Rust values; nothing is ever templated into text that
//! something interprets later. Semantics follow ingress-nginx (see docs/annotations.md):
//! - `auth-type: basic`, `auth-secret` (`name` or `namespace/name`, same namespace only),
//!   `auth-secret-type` (`auth-file`: htpasswd in key `auth`; `auth-map`: a key per user),
//!   `auth-realm`. Any problem makes the route deny (503), never serve unauthenticated.
//! - `auth-url` and its family: external authentication (see `external_auth`); an invalid value
//!   denies the route (503).
//! - `auth-tls-secret` (`ca.crt`, optional `ca.crl`) and the other `auth-tls-*` keys: client
//!   certificate rules for the Ingress's hosts; any problem makes those hosts refuse (403).
//! - `permanent-redirect` (a URL or a path; + `-code`, 300–308, default 301),
//!   `temporal-redirect` (a URL; + `-code`, 300–307, default 302; wins over permanent),
//!   `app-root`, `ssl-redirect` (default true), `force-ssl-redirect`.
//! - `backend-protocol`; timeouts, retries, request bodies and buffering (see `upstream`); TLS
//!   toward the endpoints (see `backend_tls`).
//! - `load-balance` (see `balance`); `mirror-target`, `mirror-host`, `mirror-request-body`
//!   (see `mirror`).
//! - Snippet annotations are refused, never interpreted. They and the access restrictions ostium
//!   does not implement yet ([`DENIED_UNTIL_IMPLEMENTED`]) deny every route of their Ingress
//!   (503): serving the routes without them would be more open than asked. Every other
//!   annotation with the prefix is reported as not supported and ignored (the migration report).
//! - `enable-opentelemetry` and its family: a span per request (see `opentelemetry`).
//! - `custom-headers`: response headers from a ConfigMap, restricted by the ConfigMap's
//!   `global-allowed-response-headers` (see `custom_headers`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;
use k8s_openapi::api::networking::v1::Ingress;
use ostium_model::{ClientAuth, Denial, HostRule, HttpsRedirect, Policy, Protocol, Redirect};

pub(crate) use risk::Risk;
pub(crate) use tls::configmap_ciphers;

use crate::global_config::{GlobalAuth, GlobalConfig};
use crate::{Diagnostic, ObjectRef, Objects, Options, Reason};

mod access;
mod affinity;
mod auth;
mod auth_tls;
mod backend_tls;
mod backends;
mod balance;
mod canary;
mod cors;
mod custom_headers;
pub(crate) mod external_auth;
mod mirror;
mod opentelemetry;
mod rate_limit;
mod risk;
mod shaping;
mod tls;
mod upstream;

pub(crate) use affinity::with_cookie_path;
pub(crate) use auth::auth_secret;
pub(crate) use backend_tls::backend_tls_secret;
pub(crate) use canary::CanaryRules;
pub(crate) use custom_headers::is_header_name;
pub(crate) use external_auth::{auth_headers_config_map, header_template};
pub(crate) use tls::FrontendTls;

/// Annotations that would inject raw nginx configuration: refused, never interpreted. A snippet
/// may hold `deny all;`, so its Ingress's routes deny (503).
const SNIPPETS: [&str; 5] =
    ["configuration-snippet", "server-snippet", "stream-snippet", "auth-snippet", "modsecurity-snippet"];

/// Annotations that restrict access and that ostium does not implement yet. Ignoring one would
/// serve its Ingress's routes more openly than asked, so they deny every request (503) instead,
/// as ingress-nginx denies a location whose annotation cannot be applied. A trailing `*` matches
/// by prefix. A key leaves this list when it is implemented.
const DENIED_UNTIL_IMPLEMENTED: [&str; 4] = [
    // Global rate limits (shared through memcached).
    "global-rate-limit*",
    // Web application firewall.
    "enable-modsecurity",
    "enable-owasp-core-rules",
    "modsecurity-transaction-id",
];

/// ingress-nginx annotations that ostium does not read: reported as not supported and ignored.
/// Any other name under the prefix is not an ingress-nginx annotation at all (a typo, most
/// likely), and is reported as unknown. docs/annotations.md lists them all.
const NOT_SUPPORTED: &[&str] = &["fastcgi-index", "fastcgi-params-configmap"];

/// Annotations ostium reads, by family (each family's module lists its keys).
const SUPPORTED: &[&[&str]] = &[
    auth::KEYS,
    auth_tls::KEYS,
    access::KEYS,
    affinity::KEYS,
    backend_tls::KEYS,
    backends::KEYS,
    balance::KEYS,
    canary::KEYS,
    cors::KEYS,
    custom_headers::KEYS,
    external_auth::KEYS,
    mirror::KEYS,
    opentelemetry::KEYS,
    rate_limit::KEYS,
    shaping::KEYS,
    tls::KEYS,
    upstream::KEYS,
    GENERAL,
];

/// ingress-nginx's `BasicCharsRegex` (`internal/ingress/annotations/parser/validators.go`):
/// letters, digits, `-._~/:`.
pub(super) fn is_basic_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/:".contains(&b)
}

/// Annotations read in this file.
const GENERAL: &[&str] = &[
    "upstream-vhost",
    "enable-access-log",
    "http2-push-preload",
    "from-to-www-redirect",
    "use-regex",
    "rewrite-target",
    "x-forwarded-prefix",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "ssl-redirect",
    "force-ssl-redirect",
    "backend-protocol",
];

/// What an Ingress's annotations ask of its routes and backends.
pub(crate) struct Annotated {
    pub(crate) policy: Policy,
    pub(crate) protocol: Protocol,
    /// `ImplementationSpecific` paths are regexes (`use-regex`, or `rewrite-target`).
    pub(crate) use_regex: bool,
    /// `rewrite-target` and `x-forwarded-prefix` (references as `${n}`), attached per route.
    pub(crate) rewrite: Option<(Box<str>, Option<Box<str>>)>,
    /// `from-to-www-redirect`.
    pub(crate) www_redirect: bool,
    /// `server-alias`: more names for the hosts of the Ingress.
    pub(crate) aliases: Vec<HostRule>,
    /// `service-upstream`: requests go to the Service's cluster IP instead of its endpoints.
    pub(crate) service_upstream: bool,
    /// `default-backend`: a Service of the Ingress's namespace, resolved by the translator.
    pub(crate) default_backend: Option<String>,
    /// `ssl-passthrough`, `ssl-ciphers`, `ssl-prefer-server-ciphers`: for the Ingress's hosts.
    pub(crate) frontend_tls: FrontendTls,
    /// `auth-tls-*`: what the Ingress's hosts ask of client certificates.
    pub(crate) client_auth: Option<ClientAuth>,
    /// `affinity: cookie` without `session-cookie-path`: each route's cookie takes its path.
    pub(crate) cookie_path_from_route: bool,
    /// `canary: "true"`: the Ingress only lends its backends to the routes of other Ingresses.
    pub(crate) canary: Option<CanaryRules>,
}

/// Parses the annotations of one Ingress (under `--annotations-prefix`). Invalid values are
/// reported and leave the default. Rate limits take the Ingress's zone from the options' zones;
/// `global` holds the `--configmap` settings some annotations fall back to.
pub(crate) fn parse<'a>(
    object: &'a ObjectRef,
    ingress: &'a Ingress,
    objects: &Objects,
    options: &'a Options,
    global: &'a GlobalConfig,
    diagnostics: &'a mut Vec<Diagnostic>,
) -> Annotated {
    let (prefix, zones, provider) =
        (options.annotations_prefix.as_str(), &options.rate_limit_zones, &options.crypto_provider);
    let reported_before = diagnostics.len();
    let mut ours: BTreeMap<&str, &str> = BTreeMap::new();
    // The first denying annotation, in key order.
    let mut denied = None;
    for (key, value) in ingress.metadata.annotations.iter().flatten() {
        let Some(name) = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/')) else { continue };
        if SNIPPETS.contains(&name) {
            let message = format!(
                "annotation {key} is refused: ostium never interprets configuration snippets; every request to these paths is refused (503)"
            );
            diagnostics.push(Diagnostic::error(object.clone(), Reason::RefusedAnnotation, message));
            denied.get_or_insert(Denial::RefusedSnippet { annotation: key.as_str().into() });
        } else if is_denied_until_implemented(name) {
            let message = format!(
                "annotation {key} restricts access and is not implemented; every request to these paths is refused (503)"
            );
            diagnostics.push(Diagnostic::error(object.clone(), Reason::UnsupportedAccessControl, message));
            denied.get_or_insert(Denial::UnimplementedAnnotation { annotation: key.as_str().into() });
        } else if is_supported(name) && risk::Risk::of(name).is_some_and(|risk| risk > global.risk_level) {
            let message = format!(
                "annotation {key} is graded {:?} by ingress-nginx, above the ConfigMap's annotations-risk-level ({:?}); every request to these paths is refused (503)",
                risk::Risk::of(name).unwrap_or(risk::Risk::Critical),
                global.risk_level
            );
            diagnostics.push(Diagnostic::error(object.clone(), Reason::RefusedAnnotation, message));
            denied.get_or_insert(Denial::TooRisky { annotation: key.as_str().into() });
        } else if is_supported(name) {
            ours.insert(name, value.as_str());
        } else if NOT_SUPPORTED.contains(&name) {
            let message = format!("annotation {key} is not supported and was ignored");
            diagnostics.push(Diagnostic::warning(object.clone(), Reason::UnsupportedAnnotation, message));
        } else {
            let hint =
                closest_key(name).map(|k| format!(" (did you mean {prefix}/{k}?)")).unwrap_or_default();
            let message =
                format!("annotation {key} is not an ingress-nginx annotation{hint}; it was ignored");
            diagnostics.push(Diagnostic::warning(object.clone(), Reason::UnknownAnnotation, message));
        }
    }
    // The ConfigMap's `global-auth-*` stand for the `auth-*` of an Ingress without `auth-url`
    // that does not opt out (ingress-nginx's shouldApplyGlobalAuth: all of them, or none).
    let opted_out = matches!(
        ours.get("enable-global-auth").map(|v| v.trim()),
        Some("false" | "0" | "f" | "F" | "FALSE" | "False")
    );
    if !ours.contains_key("auth-url") && !opted_out {
        match &global.global_auth {
            None => {}
            Some(GlobalAuth::Checked(keys)) => {
                ours.retain(|name, _| !external_auth::KEYS.contains(name));
                ours.extend(keys.iter().map(|(name, value)| (*name, value.as_str())));
            }
            Some(GlobalAuth::Unusable(key)) => {
                denied.get_or_insert(Denial::InvalidSetting { key: (*key).into() });
            }
        }
    }
    if let Some(key) = global.denies_every_route {
        denied.get_or_insert(Denial::InvalidSetting { key: key.into() });
    }
    let defaults = &global.annotation_defaults;
    let cross_namespace = global.allow_cross_namespace;
    let mut parser = Parser { object, ours, defaults, cross_namespace, prefix, diagnostics };
    let mut policy = Policy { denied, ..Policy::default() };

    parser.upstream(&mut policy);
    // nginx.tmpl's buildNextUpstream adds `non_idempotent` to every location's list.
    policy.next_upstream.non_idempotent |= global.retry_non_idempotent;
    let protocol = match parser.value("backend-protocol").map(str::to_ascii_uppercase).as_deref() {
        None | Some("HTTP") => Protocol::Http,
        Some("HTTPS") => Protocol::Https,
        Some("GRPC") => Protocol::Grpc,
        Some("GRPCS") => Protocol::Grpcs,
        Some(_) => {
            parser.invalid(
                "backend-protocol",
                "HTTP, HTTPS, GRPC or GRPCS (AUTO_HTTP and FCGI are not supported)",
            );
            Protocol::Http
        }
    };

    policy.redirect = parser.redirect();
    if let Some(root) = parser.value("app-root") {
        match HeaderValue::from_str(root) {
            Ok(value) if root.starts_with('/') && !root.contains("..") => policy.app_root = Some(value),
            _ => parser.invalid("app-root", "an absolute path such as /app"),
        }
    }
    let ssl_redirect = parser.flag("ssl-redirect").unwrap_or(true);
    let force_ssl_redirect = parser.flag("force-ssl-redirect").unwrap_or(false);
    policy.https_redirect = match (force_ssl_redirect, ssl_redirect) {
        (true, _) => HttpsRedirect::Always,
        (false, true) => HttpsRedirect::WhenHostHasCertificate,
        (false, false) => HttpsRedirect::Never,
    };
    policy.auth = parser.basic_auth(objects).map(Arc::new);
    policy.external_auth = parser.external_auth(objects, &mut policy.denied).map(Arc::new);
    policy.source_access = parser.source_access(&mut policy.denied, &global.source_ranges);
    policy.rate_limit = parser.rate_limit(ingress, zones, global.limit_statuses, &mut policy.denied);
    policy.response_rate = parser.response_rate();
    policy.cors = parser.cors();
    policy.backend_tls = parser.backend_tls(objects, provider, &mut policy.denied);
    if let Some(host) = parser.value("upstream-vhost") {
        match HeaderValue::from_str(host.trim()) {
            Ok(value) if is_origin_host(host.trim()) && !host.contains('*') => {
                policy.upstream_host = Some(value)
            }
            _ => parser.invalid("upstream-vhost", "a host name, with a port or not"),
        }
    }
    policy.access_log = parser.flag("enable-access-log").unwrap_or(true);
    // Browsers dropped HTTP/2 server push: accepted, and nothing to do.
    let _ = parser.flag("http2-push-preload");
    policy.satisfy = parser.satisfy();
    policy.shaping = parser.shaping(protocol);
    policy.shaping.custom_headers =
        parser.custom_headers(objects, &global.allowed_response_headers, &mut policy.denied);
    policy.load_balance = parser.load_balance();
    policy.mirror = parser.mirror();
    let cookie_path_from_route = parser.affinity(&mut policy);
    parser.upstream_hash(&mut policy);
    policy.tracing = parser.tracing(&global.tracing);

    let rewrite = parser.value("rewrite-target").and_then(|target| match rewrite_target(target) {
        Some(target) => Some(target),
        None => {
            parser.invalid("rewrite-target", "a path starting with / using only $1…$9 references");
            None
        }
    });
    // As ingress-nginx's `RegexPathWithCapture`: path characters and `$1`…`$9`; empty is unset.
    let forwarded_prefix = match parser.value("x-forwarded-prefix").map(str::trim) {
        None | Some("") => None,
        Some(prefix) => match capture_template(prefix) {
            Some(template)
                if prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/:$".contains(&b)) =>
            {
                Some(template)
            }
            _ => {
                parser.invalid("x-forwarded-prefix", "a path using only $1…$9 references");
                None
            }
        },
    };
    if forwarded_prefix.is_some() && rewrite.is_none() {
        let message = format!("annotation {prefix}/x-forwarded-prefix has no effect without rewrite-target");
        parser.diagnostics.push(Diagnostic::warning(object.clone(), Reason::InvalidAnnotation, message));
    }
    let use_regex = parser.flag("use-regex").unwrap_or(false) || rewrite.is_some();
    let www_redirect = parser.flag("from-to-www-redirect").unwrap_or(false);
    let rewrite = rewrite.map(|target| (target, forwarded_prefix));
    policy.error_pages = parser.error_pages();
    let aliases = parser.aliases();
    let service_upstream = parser.flag("service-upstream").unwrap_or(false);
    let default_backend = parser.default_backend_service();
    let frontend_tls = parser.frontend_tls();
    let client_auth = parser.client_auth(objects);
    let canary = parser.canary();
    // What the ConfigMap's defaults cause was said once, of the ConfigMap.
    let inherited: Vec<String> = (parser.defaults.keys())
        .filter(|key| !parser.ours.contains_key(*key))
        .map(|key| format!("annotation {prefix}/{key} "))
        .collect();
    if !inherited.is_empty() {
        let mut index = 0;
        parser.diagnostics.retain(|diagnostic| {
            index += 1;
            index <= reported_before
                || !inherited.iter().any(|key| diagnostic.message.starts_with(key.as_str()))
        });
    }
    Annotated {
        policy,
        protocol,
        use_regex,
        rewrite,
        www_redirect,
        aliases,
        service_upstream,
        default_backend,
        frontend_tls,
        client_auth,
        cookie_path_from_route,
        canary,
    }
}

/// ConfigMap keys that set the default of the annotation of the same name, for every Ingress
/// without it (ingress-nginx's `internal/ingress/defaults`, which its annotation parsers fall
/// back to through `GetDefaultBackend()`, and the http-level nginx directives that locations
/// inherit).
pub(crate) const CONFIGMAP_DEFAULTS: &[&str] = &[
    "client-body-buffer-size",
    "custom-http-errors",
    "disable-proxy-intercept-errors",
    "force-ssl-redirect",
    "limit-rate",
    "limit-rate-after",
    "load-balance",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-http-version",
    "proxy-max-temp-file-size",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-request-buffering",
    "proxy-send-timeout",
    "relative-redirects",
    "service-upstream",
    "ssl-redirect",
    "use-port-in-redirects",
];

/// Reads the ConfigMap values of [`CONFIGMAP_DEFAULTS`] keys as the annotations of the same
/// names would be read, and keeps those that are good. The problems found are worded for the
/// ConfigMap `object`; a key with an invalid value keeps ingress-nginx's default.
pub(crate) fn annotation_defaults(
    object: &ObjectRef,
    values: BTreeMap<&'static str, String>,
    objects: &Objects,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<&'static str, String> {
    let prefix = options.annotations_prefix.as_str();
    let mut ingress = Ingress::default();
    ingress.metadata.annotations =
        Some(values.iter().map(|(key, value)| (format!("{prefix}/{key}"), value.clone())).collect());
    let mut found = Vec::new();
    let _ = parse(object, &ingress, objects, options, &GlobalConfig::default(), &mut found);
    let annotation = format!("annotation {prefix}/");
    let mut rejected = Vec::new();
    for mut diagnostic in found {
        // The key named, and not a longer one it begins (`limit-rate` in `limit-rate-after`).
        let named = |key: &&&str| {
            let rest = diagnostic.message.strip_prefix(&annotation).and_then(|m| m.strip_prefix(**key));
            rest.is_some_and(|rest| rest.starts_with([':', ' ']))
        };
        let key = values.keys().find(named);
        let invalid =
            diagnostic.severity == crate::Severity::Error || diagnostic.message.contains("invalid value");
        if let (Some(key), true) = (key, invalid) {
            rejected.push(*key);
        }
        diagnostic.severity = crate::Severity::Warning;
        diagnostic.reason = Reason::InvalidSetting;
        diagnostic.message = diagnostic
            .message
            .replacen(&annotation, "", 1)
            .replace("; it was ignored", "; Ingresses without the annotation keep ingress-nginx's default");
        diagnostics.push(diagnostic);
    }
    values.into_iter().filter(|(key, _)| !rejected.contains(key)).collect()
}

/// The ConfigMap's `global-auth-*` keys and the `auth-*` annotations they stand for.
pub(crate) const GLOBAL_AUTH_KEYS: &[(&str, &str)] = &[
    ("global-auth-url", "auth-url"),
    ("global-auth-method", "auth-method"),
    ("global-auth-signin", "auth-signin"),
    ("global-auth-signin-redirect-param", "auth-signin-redirect-param"),
    ("global-auth-response-headers", "auth-response-headers"),
    ("global-auth-request-redirect", "auth-request-redirect"),
    ("global-auth-cache-key", "auth-cache-key"),
    ("global-auth-cache-duration", "auth-cache-duration"),
    ("global-auth-always-set-cookie", "auth-always-set-cookie"),
];

/// Checks the ConfigMap's `global-auth-*` values (by their `auth-*` names) as an Ingress's
/// annotations would be checked: `true` when they make a usable external auth. Problems are
/// reported of the ConfigMap `object`, by the ConfigMap's key names.
pub(crate) fn check_global_auth(
    object: &ObjectRef,
    values: &BTreeMap<&'static str, String>,
    objects: &Objects,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let prefix = options.annotations_prefix.as_str();
    let mut ingress = Ingress::default();
    ingress.metadata.annotations =
        Some(values.iter().map(|(key, value)| (format!("{prefix}/{key}"), value.clone())).collect());
    let mut found = Vec::new();
    let annotated = parse(object, &ingress, objects, options, &GlobalConfig::default(), &mut found);
    for mut diagnostic in found {
        for (global, name) in GLOBAL_AUTH_KEYS {
            diagnostic.message = diagnostic.message.replace(&format!("annotation {prefix}/{name}"), global);
        }
        diagnostic.reason = Reason::InvalidSetting;
        diagnostics.push(diagnostic);
    }
    annotated.policy.denied.is_none() && annotated.policy.external_auth.is_some()
}

/// Whether ostium reads an annotation (its name without the prefix).
fn is_supported(name: &str) -> bool {
    SUPPORTED.iter().any(|family| family.contains(&name))
}

/// What ostium does with an annotation under the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationSupport {
    /// Read and applied (some are accepted with no effect; see docs/annotations.md).
    Supported,
    /// An ingress-nginx annotation that ostium ignores.
    NotSupported,
    /// An access restriction ostium does not implement: the Ingress's routes deny (503).
    Denied,
    /// A configuration snippet: never interpreted; the Ingress's routes deny (503).
    Refused,
    /// Not an ingress-nginx annotation; the closest one, when some is close.
    Unknown { did_you_mean: Option<&'static str> },
}

/// What ostium does with an annotation, by its name without the prefix (as [`parse`] decides).
pub fn annotation_support(name: &str) -> AnnotationSupport {
    if SNIPPETS.contains(&name) {
        AnnotationSupport::Refused
    } else if is_denied_until_implemented(name) {
        AnnotationSupport::Denied
    } else if is_supported(name) {
        AnnotationSupport::Supported
    } else if NOT_SUPPORTED.contains(&name) {
        AnnotationSupport::NotSupported
    } else {
        AnnotationSupport::Unknown { did_you_mean: closest_key(name) }
    }
}

/// The ingress-nginx annotation a misspelt name most likely meant: the nearest by edit
/// distance, at most 2 edits (3 for long names) away.
fn closest_key(name: &str) -> Option<&'static str> {
    let known = SUPPORTED.iter().copied().flatten().chain(NOT_SUPPORTED).chain(&SNIPPETS);
    let denied = DENIED_UNTIL_IMPLEMENTED.iter().filter(|k| !k.ends_with('*'));
    let limit = if name.len() > 16 { 3 } else { 2 };
    known
        .chain(denied)
        .map(|key| (edit_distance(name, key), *key))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, key)| key)
}

/// Levenshtein distance, by bytes (annotation names are ASCII).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.bytes().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Whether an annotation (its name without the prefix) is in [`DENIED_UNTIL_IMPLEMENTED`].
fn is_denied_until_implemented(name: &str) -> bool {
    DENIED_UNTIL_IMPLEMENTED.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *entry,
    })
}

/// A rewrite target in the `regex` crate's replacement syntax (see [`capture_template`]), or
/// `None` for a target that is not a path.
fn rewrite_target(target: &str) -> Option<Box<str>> {
    if !target.starts_with('/') || target.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    capture_template(target)
}

/// Text with capture references in the `regex` crate's replacement syntax: `$1` becomes `${1}`
/// (so `$1abc` is group 1 then `abc`, as in nginx). `None` for anything else with a `$` (nginx
/// variables are not supported).
fn capture_template(target: &str) -> Option<Box<str>> {
    let mut out = String::with_capacity(target.len() + 8);
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let digit = chars.next_if(char::is_ascii_digit)?;
        out.push_str("${");
        out.push(digit);
        out.push('}');
    }
    Some(out.into())
}

/// Reads the annotations of one Ingress that ostium supports, reporting invalid values. Each
/// family of keys adds its methods in its own module.
struct Parser<'a> {
    object: &'a ObjectRef,
    ours: BTreeMap<&'a str, &'a str>,
    /// The `--configmap` values of [`CONFIGMAP_DEFAULTS`] keys, already checked: what an
    /// annotation the Ingress does not have falls back to.
    defaults: &'a BTreeMap<&'static str, String>,
    /// `allow-cross-namespace-resources`: Secrets and ConfigMaps of other namespaces may be named.
    cross_namespace: bool,
    prefix: &'a str,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl<'a> Parser<'a> {
    fn value(&self, name: &str) -> Option<&'a str> {
        self.ours.get(name).copied().or_else(|| self.defaults.get(name).map(String::as_str))
    }

    fn invalid(&mut self, name: &str, expected: &str) {
        let message = format!("annotation {}/{name}: expected {expected}; it was ignored", self.prefix);
        self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::InvalidAnnotation, message));
    }

    /// An invalid value that ingress-nginx replaces with its default.
    fn warn_default(&mut self, name: &str, default: &str) {
        let default = if default.is_empty() { "none".to_owned() } else { format!("`{default}`") };
        let message = format!(
            "annotation {}/{name} has an invalid value; the default ({default}) is used",
            self.prefix
        );
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
    }

    /// A timeout in whole seconds, as ingress-nginx reads it (`"120"`); an invalid value keeps
    /// the default.
    fn seconds(&mut self, name: &str) -> Option<std::time::Duration> {
        let value = self.value(name)?;
        match value.trim().parse::<u32>() {
            Ok(seconds) if seconds > 0 => Some(std::time::Duration::from_secs(seconds.into())),
            _ => {
                self.invalid(name, "a whole number of seconds such as 120");
                None
            }
        }
    }

    /// Booleans as ingress-nginx reads them (Go's `strconv.ParseBool`).
    fn flag(&mut self, name: &str) -> Option<bool> {
        let value = self.value(name)?;
        match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => {
                self.invalid(name, "true or false");
                None
            }
        }
    }

    /// `temporal-redirect` (302, codes 300–307) wins over `permanent-redirect` (301, 300–308). An
    /// out-of-range code falls back to the default, as ingress-nginx does, with a warning. A
    /// permanent redirect may also go to a path (ingress-nginx checks the scheme of temporal
    /// ones only), made absolute per request unless `relative-redirects`.
    fn redirect(&mut self) -> Option<Redirect> {
        let (name, default, range) = if self.value("temporal-redirect").is_some() {
            ("temporal-redirect", 302, 300..=307)
        } else if self.value("permanent-redirect").is_some() {
            ("permanent-redirect", 301, 300..=308)
        } else {
            return None;
        };
        let url = self.value(name)?;
        let valid = url.parse::<http::Uri>().ok().filter(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
        let path =
            name == "permanent-redirect" && url.starts_with('/') && url.bytes().all(|b| b.is_ascii_graphic());
        let (true, Ok(location)) = (valid.is_some() || path, HeaderValue::from_str(url)) else {
            let expected = match name {
                "permanent-redirect" => "an absolute http:// or https:// URL, or a path",
                _ => "an absolute http:// or https:// URL",
            };
            self.invalid(name, expected);
            return None;
        };
        let code_name = format!("{name}-code");
        let status = match self.value(&code_name).map(str::parse::<u16>) {
            None => default,
            Some(Ok(code)) if range.contains(&code) => code,
            Some(_) => {
                let message = format!(
                    "annotation {}/{code_name}: expected a code from {} to {}; {default} is used",
                    self.prefix,
                    range.start(),
                    range.end()
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                default
            }
        };
        Some(Redirect { status, location })
    }
}

/// `host[:port]` of an origin: letters, digits, `-` and `.`, possibly after `*.`.
fn is_origin_host(origin: &str) -> bool {
    let rest = origin.strip_prefix("*.").unwrap_or(origin);
    let (host, port) = rest.split_once(':').unwrap_or((rest, "1"));
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
}

/// nginx sizes: bytes, or a number with `k`/`m`/`g` (either case).
fn parse_size(size: &str) -> Option<u64> {
    let size = size.trim();
    let (number, unit) = match size.char_indices().last()? {
        (i, 'k' | 'K') => (&size[..i], 1 << 10),
        (i, 'm' | 'M') => (&size[..i], 1 << 20),
        (i, 'g' | 'G') => (&size[..i], 1 << 30),
        _ => (size, 1),
    };
    number.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ostium_model::{Credentials, NamespacedName, PasswordHash};

    use super::auth::parse_hash;
    use super::*;
    use crate::ObjectKind;

    const PREFIX: &str = "nginx.ingress.kubernetes.io";

    /// The annotations of an Ingress `default/web` whose Secret `default/htpasswd` holds `auth`.
    fn annotated(annotations: &str, auth: &str) -> (Annotated, Vec<Diagnostic>) {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: htpasswd}}\nstringData:\n  auth: |\n{}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  annotations: {{{annotations}}}\n",
            auth.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        );
        let objects = Objects::from_yaml(&yaml).unwrap();
        let ingress = &objects.ingresses[&NamespacedName::new("default", "web")];
        let object = ObjectRef::new(ObjectKind::Ingress, Some("default"), "web");
        let mut diagnostics = Vec::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let options = Options::new(ostium_test_support::fallback_certificate(), provider);
        let global = GlobalConfig::default();
        let annotated = parse(&object, ingress, &objects, &options, &global, &mut diagnostics);
        (annotated, diagnostics)
    }

    fn users(annotated: &Annotated) -> &HashMap<String, PasswordHash> {
        match &annotated.policy.auth.as_ref().expect("auth is configured").credentials {
            Credentials::Users(users) => users,
            Credentials::Deny => panic!("auth denies"),
        }
    }

    const BASIC_AUTH: &str =
        "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: htpasswd";

    /// nginx's ngx_http_auth_basic_module reads `auth_basic_user_file` line by line and stops at
    /// the first line naming the user.
    #[test]
    fn htpasswd_first_line_of_a_user_wins() {
        let auth = "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbob:$apr1$OS747Rix$RkHZvvgkwtXvJEPl1Ymc60\nalice:$apr1$OS747Rix$RkHZvvgkwtXvJEPl1Ymc60";
        let (annotated, _) = annotated(BASIC_AUTH, auth);
        let users = users(&annotated);
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], parse_hash("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").unwrap());
    }

    #[test]
    fn htpasswd_first_line_of_a_user_decides_even_when_its_hash_is_unusable() {
        let auth = "alice:{PLAIN}secret\nbob:$apr1$OS747Rix$RkHZvvgkwtXvJEPl1Ymc60\nalice:$apr1$OS747Rix$RkHZvvgkwtXvJEPl1Ymc60";
        let (annotated, diagnostics) = annotated(BASIC_AUTH, auth);
        assert_eq!(users(&annotated).keys().collect::<Vec<_>>(), ["bob"]);
        assert!(diagnostics.iter().any(|d| d.message.contains("user `alice`")), "{diagnostics:?}");
    }

    #[test]
    fn unimplemented_access_control_and_snippets_deny_the_ingress() {
        let cases = [
            ("global-rate-limit-window", "1m", false),
            ("enable-modsecurity", "true", false),
            ("configuration-snippet", "deny all;", true),
            ("server-snippet", "deny all;", true),
        ];
        for (name, value, snippet) in cases {
            let (annotated, diagnostics) = annotated(&format!("{PREFIX}/{name}: \"{value}\""), "");
            let annotation: Box<str> = format!("{PREFIX}/{name}").into();
            let expected = if snippet {
                Denial::RefusedSnippet { annotation }
            } else {
                Denial::UnimplementedAnnotation { annotation }
            };
            assert_eq!(annotated.policy.denied, Some(expected), "{name}");
            assert!(
                diagnostics.iter().any(|d| d.severity == crate::Severity::Error
                    && d.message.contains(&format!("{PREFIX}/{name}"))
                    && d.message.contains("(503)")),
                "{name}: {diagnostics:?}"
            );
        }
    }

    /// ingress-nginx ignores `proxy-ssl-verify` without `proxy-ssl-secret`; verification that
    /// cannot happen denies instead.
    #[test]
    fn verifying_backends_without_a_secret_denies() {
        let (on, diagnostics) = annotated(&format!("{PREFIX}/proxy-ssl-verify: \"on\""), "");
        let annotation = format!("{PREFIX}/proxy-ssl-verify").into();
        assert_eq!(on.policy.denied, Some(Denial::InvalidAnnotation { annotation }));
        assert!(diagnostics.iter().any(|d| d.message.contains("(503)")));
        let (off, _) = annotated(&format!("{PREFIX}/proxy-ssl-verify: \"off\""), "");
        assert_eq!(off.policy.denied, None);
        assert!(off.policy.backend_tls.is_none());
    }

    #[test]
    fn an_invalid_source_range_denies_and_a_valid_one_restricts() {
        let (invalid, diagnostics) =
            annotated(&format!("{PREFIX}/allowlist-source-range: \"10.0.0.0/8,x\""), "");
        let annotation = format!("{PREFIX}/allowlist-source-range").into();
        assert_eq!(invalid.policy.denied, Some(Denial::InvalidAnnotation { annotation }));
        assert!(diagnostics.iter().any(|d| d.message.contains("`x` is not an IP address or network")));
        let (legacy, _) = annotated(&format!("{PREFIX}/whitelist-source-range: \"10.0.0.0/8\""), "");
        assert_eq!(legacy.policy.denied, None);
        let access = legacy.policy.source_access.expect("restricted");
        assert!(access.permits("10.1.1.1".parse().unwrap()) && !access.permits("11.1.1.1".parse().unwrap()));
    }

    #[test]
    fn annotations_that_do_not_restrict_access_do_not_deny() {
        for name in
            ["enable-opentelemetry", "ssl-ciphers", "enable-cors", "canary", "auth-type", "auth-realm"]
        {
            let (annotated, _) = annotated(&format!("{PREFIX}/{name}: \"x\""), "");
            assert_eq!(annotated.policy.denied, None, "{name}");
        }
    }

    /// A misspelt key is unknown, with the key it most likely meant; a real ingress-nginx key
    /// that ostium ignores is not supported; neither denies.
    #[test]
    fn a_typo_is_unknown_and_distinct_from_an_unsupported_key() {
        let typo = format!(
            "{PREFIX}/proxy-read-timout: \"30\", {PREFIX}/fastcgi-index: \"index.php\", {PREFIX}/zzz: \"1\""
        );
        let (annotated, diagnostics) = annotated(&typo, "");
        assert_eq!(annotated.policy.denied, None);
        let reasons: Vec<(Reason, &str)> =
            diagnostics.iter().map(|d| (d.reason, d.message.as_str())).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.contains(&(
            Reason::UnknownAnnotation,
            "annotation nginx.ingress.kubernetes.io/proxy-read-timout is not an ingress-nginx annotation \
             (did you mean nginx.ingress.kubernetes.io/proxy-read-timeout?); it was ignored"
        )));
        assert!(reasons.contains(&(
            Reason::UnsupportedAnnotation,
            "annotation nginx.ingress.kubernetes.io/fastcgi-index is not supported and was ignored"
        )));
        assert!(reasons.contains(&(
            Reason::UnknownAnnotation,
            "annotation nginx.ingress.kubernetes.io/zzz is not an ingress-nginx annotation; it was ignored"
        )));
        assert_eq!(annotation_support("proxy-read-timeout"), AnnotationSupport::Supported);
        assert_eq!(annotation_support("fastcgi-index"), AnnotationSupport::NotSupported);
        assert_eq!(annotation_support("enable-modsecurity"), AnnotationSupport::Denied);
        assert_eq!(annotation_support("global-rate-limit-window"), AnnotationSupport::Denied);
        assert_eq!(annotation_support("server-snippet"), AnnotationSupport::Refused);
        assert_eq!(
            annotation_support("ssl-redirects"),
            AnnotationSupport::Unknown { did_you_mean: Some("ssl-redirect") }
        );
    }

    #[test]
    fn no_read_or_snippet_annotation_is_in_the_denied_list() {
        for name in SUPPORTED.iter().copied().flatten().chain(&SNIPPETS) {
            assert!(!is_denied_until_implemented(name), "{name}");
        }
    }

    /// docs/annotations.md is the user's list: a key is marked supported there exactly when it
    /// is read here, and the README's count agrees.
    #[test]
    fn the_documentation_marks_exactly_the_supported_keys() {
        let docs = include_str!("../../../../docs/annotations.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let read = cells.len() > 4 && (cells[3] == "supported" || cells[3].starts_with("accepted"));
                read.then(|| cells[1].trim_matches('`'))
            })
            .collect();
        let supported: std::collections::BTreeSet<&str> =
            SUPPORTED.iter().copied().flatten().copied().collect();
        assert_eq!(documented, supported);
        // Every row is an annotation ostium classifies: none of them is reported as unknown.
        let listed: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let row = cells.len() > 4 && cells[1].starts_with('`');
                row.then(|| cells[1].trim_matches('`'))
            })
            .filter(|name| !name.ends_with('*'))
            .collect();
        for name in &listed {
            assert!(!matches!(annotation_support(name), AnnotationSupport::Unknown { .. }), "{name}");
        }
        for name in NOT_SUPPORTED {
            assert!(listed.contains(name), "{name} is missing from docs/annotations.md");
        }
        let readme = include_str!("../../../../README.md");
        let count = format!("{} annotations supported", supported.len());
        assert!(readme.contains(&count), "the README should say `{count}`");
    }

    #[test]
    fn sizes_follow_nginx() {
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "m", "1.5m", "-1", "10 mb", "1t"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn rewrite_targets_use_numbered_groups_only() {
        assert_eq!(rewrite_target("/$2").as_deref(), Some("/${2}"));
        assert_eq!(rewrite_target("/app/$1abc").as_deref(), Some("/app/${1}abc"));
        assert_eq!(rewrite_target("/").as_deref(), Some("/"));
        for bad in ["$1", "/$request_uri", "/a$", "https://evil/$1", "/a b"] {
            assert_eq!(rewrite_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn hash_schemes_are_recognised() {
        assert!(matches!(
            parse_hash("$apr1$OS747Rix$RkHZvvgkwtXvJEPl1Ymc60"),
            Some(PasswordHash::Apr1 { .. })
        ));
        assert!(matches!(parse_hash("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="), Some(PasswordHash::Sha1(_))));
        let bcrypt = "$2y$10$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui";
        assert!(matches!(parse_hash(bcrypt), Some(PasswordHash::Bcrypt(_))));
        assert!(matches!(parse_hash("$6$salt$abc"), Some(PasswordHash::ShaCrypt(_))));
        for unsupported in
            ["{PLAIN}secret", "{SSHA}abc", "$1$salt$hash", "rl5pGNTDw0NE.", "secret", "$2y$10$short"]
        {
            assert!(parse_hash(unsupported).is_none(), "{unsupported}");
        }
    }
}
