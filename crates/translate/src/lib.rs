//! Translation of Kubernetes objects into an ostium routing table.
//!
//! [`translate`] is a pure function: no I/O, no clock, no environment. It never fails as a
//! whole; every problem becomes a [`Diagnostic`] tied to its object and only the broken piece is
//! skipped (a broken backend keeps its route and answers 503, so a path never falls through to a
//! less specific rule). Output is deterministic: objects are visited in sorted order.
//!
//! Ingresses are served oldest first (`creationTimestamp`, then `namespace/name`), and the first
//! to claim a host + path, a TLS host or the default backend keeps it; later claims get a
//! diagnostic.

mod annotations;
mod backend;
mod canary;
mod class;
mod configmap_keys;
mod diagnostic;
mod global_config;
mod incremental;
mod kind;
mod manifests;
mod objects;
mod render;
mod stream;
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use annotations::{CanaryRules, FrontendTls};
use backend::Dial;
use canary::{CanaryIngress, WrittenPath};

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress};
use ostium_model::{
    BackendRef, Certificate, ClientAuth, Denial, HashMap, HostRedirect, HostRule, NamespacedName, PathRegex,
    PathRule, Policy, PortRef, Protocol, RateLimitZones, Rewrite, Route, RouteAction, ServerTls, Table,
    TableBuilder, TlsTable,
};
use rustls::crypto::CryptoProvider;

pub use annotations::{AnnotationSupport, annotation_support};
pub use backend::SERVICE_NAME_LABEL;
pub use class::ClassClaim;
pub use configmap_keys::{SettingSupport, setting_support};
pub use diagnostic::{Diagnostic, ObjectKind, ObjectRef, Reason, Severity};
pub use incremental::{Built, Incremental};
pub use kind::{Kind, KindScope, KindVisitor, Malformed, Reference, Relevance, for_each_kind, visit_kind};
pub use manifests::{DocumentError, ManifestError, parse_manifests};
pub use objects::{Object, ObjectMap, Objects};

/// What translation cannot decide from the objects alone.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--ingress-class`: the value of the legacy `kubernetes.io/ingress.class` annotation we serve.
    pub ingress_class: String,
    /// `--controller-name`: IngressClasses whose `spec.controller` is this are ours.
    pub controller_name: String,
    /// `--watch-ingress-without-class`.
    pub watch_ingress_without_class: bool,
    /// `--watch-namespace`: namespaced objects elsewhere are ignored.
    pub watch_namespace: Option<String>,
    /// `--default-backend-service`, used when no Ingress without rules has a `defaultBackend`.
    pub default_backend_service: Option<NamespacedName>,
    /// `--default-ssl-certificate`.
    pub default_ssl_certificate: Option<NamespacedName>,
    /// Served when `--default-ssl-certificate` is unset or broken (a self-signed certificate
    /// made at start).
    pub fallback_certificate: Certificate,
    /// `--annotations-prefix`.
    pub annotations_prefix: String,
    /// `--configmap`: the global settings (ingress-nginx's ConfigMap keys).
    pub configmap: Option<NamespacedName>,
    /// `--enable-ssl-passthrough`: the `ssl-passthrough` annotation is honoured.
    pub enable_ssl_passthrough: bool,
    /// `--tcp-services-configmap`: TCP services, `"<port>": "<ns>/<service>:<port>"`.
    pub tcp_services_configmap: Option<NamespacedName>,
    /// `--udp-services-configmap`: UDP services, the same format.
    pub udp_services_configmap: Option<NamespacedName>,
    /// The ports of the controller's own listeners (HTTP, HTTPS, admin), which no TCP or UDP
    /// service may take.
    pub reserved_ports: Vec<u16>,
    pub crypto_provider: Arc<CryptoProvider>,
    /// The rate limit zones of the tables built with these options: a new table takes each
    /// Ingress's zone from the table before it, so rebuilding keeps every client's state.
    pub rate_limit_zones: RateLimitZones,
}

impl Options {
    /// The CONTRACT's defaults, which the flags' defaults are too.
    pub const DEFAULT_INGRESS_CLASS: &str = "ostium";
    pub const DEFAULT_CONTROLLER_NAME: &str = "ostium.dev/ingress-controller";
    pub const DEFAULT_ANNOTATIONS_PREFIX: &str = "nginx.ingress.kubernetes.io";

    /// The CONTRACT's defaults: class `ostium`, controller `ostium.dev/ingress-controller`,
    /// prefix `nginx.ingress.kubernetes.io`, all namespaces, no default backend or certificate.
    pub fn new(fallback_certificate: Certificate, crypto_provider: Arc<CryptoProvider>) -> Self {
        Self {
            ingress_class: Self::DEFAULT_INGRESS_CLASS.into(),
            controller_name: Self::DEFAULT_CONTROLLER_NAME.into(),
            watch_ingress_without_class: false,
            watch_namespace: None,
            default_backend_service: None,
            default_ssl_certificate: None,
            fallback_certificate,
            annotations_prefix: Self::DEFAULT_ANNOTATIONS_PREFIX.into(),
            configmap: None,
            enable_ssl_passthrough: false,
            tcp_services_configmap: None,
            udp_services_configmap: None,
            reserved_ports: vec![8080, 8443, 10254],
            crypto_provider,
            rate_limit_zones: RateLimitZones::default(),
        }
    }
}

/// The result of a translation.
#[derive(Debug)]
pub struct Translation {
    pub table: Table,
    pub diagnostics: Vec<Diagnostic>,
    /// The Ingresses this controller serves (its class), sorted.
    pub ingresses: Vec<NamespacedName>,
}

/// Builds the routing table for a snapshot of objects.
pub fn translate(objects: &Objects, options: &Options) -> Translation {
    let run = run(objects, options, Scope::All, None);
    let diagnostics = run.diagnostics.into_iter().map(|(_, d)| d).collect();
    let ingresses = run.ingresses.iter().map(|id| NamespacedName::clone(id)).collect();
    Translation { table: run.table, diagnostics, ingresses }
}

/// Which Ingresses a run translates.
pub(crate) enum Scope<'a> {
    /// Every Ingress of our class, and the global parts (flags, streams).
    All,
    /// These Ingresses (ours; every Ingress of some hosts, oldest first), and the default route
    /// when `default_route`: a table with those hosts only, for [`Table::splice`].
    /// Each Ingress comes with the name its routes are to hold.
    Part { ingresses: Vec<(&'a Arc<NamespacedName>, &'a Arc<Ingress>)>, default_route: bool },
}

/// What one run of the translator made.
pub(crate) struct Run {
    pub(crate) table: Table,
    /// In the order found, each with the Ingress being translated when it was found (`None`:
    /// the global settings, the flags and the streams).
    pub(crate) diagnostics: Vec<(Option<NamespacedName>, Diagnostic)>,
    /// The Ingresses translated, sorted, each as its routes hold its name.
    pub(crate) ingresses: Vec<Arc<NamespacedName>>,
    /// How many endpoint sets of `previous` got other endpoints.
    pub(crate) endpoints_moved: usize,
}

/// Translates the Ingresses of `scope`. With `previous`, backends reuse its endpoint sets.
pub(crate) fn run(objects: &Objects, options: &Options, scope: Scope<'_>, previous: Option<&Table>) -> Run {
    let mut translator = Translator::new(objects, options);
    if let Some(previous) = previous {
        translator.table.share_endpoint_sets(previous);
    }
    let global = translator.diagnostics.len();
    // Where each Ingress's diagnostics start.
    let mut owners: Vec<(usize, &NamespacedName)> = Vec::new();
    // A part has the default route only when asked, and never the global parts.
    let (ingresses, with_default_route, with_global_parts) = match scope {
        Scope::All => {
            let mut ours = Vec::new();
            for (id, ingress) in &objects.ingresses {
                if options.watch_namespace.as_ref().is_some_and(|ns| **ns != *id.namespace) {
                    continue;
                }
                owners.push((translator.diagnostics.len(), id));
                if translator.classes.is_ours(id, ingress, &mut translator.diagnostics) {
                    ours.push((Arc::new(id.clone()), ingress));
                }
            }
            ours.sort_by(|(a_id, a), (b_id, b)| by_age(a_id, a, b_id, b));
            (ours, true, true)
        }
        Scope::Part { ingresses, default_route } => {
            let ingresses = ingresses.into_iter().map(|(id, ingress)| (id.clone(), ingress)).collect();
            (ingresses, default_route, false)
        }
    };
    for (id, ingress) in &ingresses {
        owners.push((translator.diagnostics.len(), &**id));
        translator.ingress(id, ingress);
    }
    let passes = translator.diagnostics.len();
    translator.canaries();
    translator.aliases();
    translator.frontend_tls();
    translator.www_redirects();
    let global_again = translator.diagnostics.len();
    if with_default_route {
        translator.default_backend_flag();
    }
    translator.table.set_global(Arc::new(translator.global.settings.clone()));
    if with_global_parts {
        stream::add_streams(objects, options, &mut translator.table, &mut translator.diagnostics);
    }

    let endpoints_moved = translator.table.endpoints_moved();
    let mut owners = owners.into_iter().peekable();
    let mut owner: Option<&NamespacedName> = None;
    let mut diagnostics = Vec::with_capacity(translator.diagnostics.len());
    for (i, diagnostic) in translator.diagnostics.into_iter().enumerate() {
        let attributed = if i < global || i >= global_again {
            None
        } else if i >= passes {
            // The passes after the loop judge Ingresses against each other, and name the one.
            diagnostic.object.ingress()
        } else {
            while let Some((_, id)) = owners.next_if(|(start, _)| *start <= i) {
                owner = Some(id);
            }
            owner.cloned()
        };
        diagnostics.push((attributed, diagnostic));
    }
    let mut translated: Vec<Arc<NamespacedName>> = ingresses.into_iter().map(|(id, _)| id).collect();
    translated.sort();
    Run { table: translator.table.build(), diagnostics, ingresses: translated, endpoints_moved }
}

/// Oldest first (`creationTimestamp`), then by namespace and name: the order in which Ingresses
/// claim hosts and paths.
pub(crate) fn by_age(
    a_id: &NamespacedName,
    a: &Ingress,
    b_id: &NamespacedName,
    b: &Ingress,
) -> std::cmp::Ordering {
    let (a_age, b_age) = (&a.metadata.creation_timestamp, &b.metadata.creation_timestamp);
    a_age.cmp(b_age).then_with(|| a_id.cmp(b_id))
}

/// How an Ingress names its class, and the flags that would make ostium serve it.
pub fn class_claim(objects: &Objects, options: &Options, ingress: &Ingress) -> ClassClaim {
    class::Classes::new(objects, options).claim(ingress)
}

/// The state of one translation.
struct Translator<'a> {
    objects: &'a Objects,
    /// `from-to-www-redirect` requests (alias host, target host, the Ingress), applied once every
    /// Ingress is in, since an alias some Ingress defines itself is left alone.
    www_redirects: Vec<(HostRule, HostRule, ObjectRef)>,
    /// `server-alias`, per host: the aliases of the oldest Ingress that gives that host any,
    /// applied once every Ingress is in, since a name some Ingress defines is not an alias.
    aliases: BTreeMap<HostRule, (Vec<HostRule>, ObjectRef)>,
    /// `ssl-passthrough` hosts and the first Ingress asking for it, resolved once every
    /// Ingress is in, since the backend of `/` may come from another Ingress.
    passthrough: BTreeMap<Arc<str>, ObjectRef>,
    /// `ssl-ciphers`, `ssl-prefer-server-ciphers` per host: each from the oldest Ingress that
    /// sets it.
    server_tls: BTreeMap<HostRule, ServerTls>,
    /// The rule of each route an Ingress path made, by host, path and pathType as written: what
    /// a canary Ingress's paths are matched against.
    main_paths: BTreeMap<WrittenPath, PathRule>,
    /// Canary Ingresses, oldest first, joined to the routes of the others once all are in.
    canaries: Vec<CanaryIngress>,
    /// The session affinity cookie of each Ingress with `affinity: cookie`, kept by a canary.
    sticky_cookies: BTreeMap<Arc<NamespacedName>, Box<str>>,
    /// The policy of the Ingresses without annotations of ours, by namespace.
    plain_policies: HashMap<String, Arc<Policy>>,
    options: &'a Options,
    /// The `--configmap` settings.
    global: global_config::GlobalConfig,
    classes: class::Classes<'a>,
    backends: backend::Backends<'a>,
    certificates: tls::Certificates<'a>,
    table: TableBuilder,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Translator<'a> {
    fn new(objects: &'a Objects, options: &'a Options) -> Self {
        let mut diagnostics = Vec::new();
        let mut certificates = tls::Certificates::new(objects, options);
        let default_certificate = certificates.default_certificate(&mut diagnostics);
        let global = global_config::GlobalConfig::new(objects, options, &mut diagnostics);
        Self {
            objects,
            www_redirects: Vec::new(),
            aliases: BTreeMap::new(),
            passthrough: BTreeMap::new(),
            server_tls: BTreeMap::new(),
            main_paths: BTreeMap::new(),
            canaries: Vec::new(),
            sticky_cookies: BTreeMap::new(),
            plain_policies: HashMap::default(),
            options,
            global,
            classes: class::Classes::new(objects, options),
            backends: backend::Backends::new(objects),
            certificates,
            table: TableBuilder::new(TlsTable::new(default_certificate)),
            diagnostics,
        }
    }

    fn ingress(&mut self, id: &Arc<NamespacedName>, ingress: &Ingress) {
        let object = ObjectRef::new(ObjectKind::Ingress, Some(&id.namespace), &id.name);
        let Some(spec) = &ingress.spec else {
            self.error(&object, Reason::NoRules, "no spec: nothing to serve");
            return;
        };
        let rules = spec.rules.as_deref().unwrap_or_default();
        let annotated = annotations::parse(
            &object,
            ingress,
            self.objects,
            self.options,
            &self.global,
            &mut self.diagnostics,
        );
        if let Some(rules) = annotated.canary {
            let upstream = canary::CanaryUpstream {
                dial: if annotated.service_upstream { Dial::ClusterIp } else { Dial::Endpoints },
                load_balance: annotated.policy.load_balance,
                upstream_hash: annotated.policy.upstream_hash.clone(),
                affinity: annotated.policy.affinity.clone(),
            };
            self.add_canary(object, id, spec, rules, upstream, annotated.client_auth);
            return;
        }
        self.add_sticky_cookie(id, &annotated.policy);
        let mut policy = annotated.policy;
        if let Some(service) = &annotated.default_backend {
            policy.default_backend = self.default_backend_annotation(&object, service);
        }
        if annotated.client_auth.is_some() && rules.is_empty() {
            // ingress-nginx would serve such a default backend without client certificates.
            let annotation = format!("{}/auth-tls-secret", self.options.annotations_prefix);
            let message = format!(
                "annotation {annotation} applies to the hosts of the Ingress's rules, and it has none; its default backend is refused (503)"
            );
            self.error(&object, Reason::InvalidAnnotation, message);
            policy.denied.get_or_insert(Denial::InvalidAnnotation { annotation: annotation.into() });
        }
        let policy = self.shared_policy(ingress, &id.namespace, policy);
        let (protocol, use_regex) = (annotated.protocol, annotated.use_regex);
        let rewrite = annotated.rewrite;
        let cookie_path_from_route = annotated.cookie_path_from_route;
        let www_redirect = annotated.www_redirect;
        let dial = if annotated.service_upstream { Dial::ClusterIp } else { Dial::Endpoints };

        // Hosts this Ingress defines, in order, without repeats (`None`: the rules with no host).
        let mut hosts: Vec<Option<HostRule>> = Vec::new();
        for rule in rules {
            let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(h) => match h.parse::<HostRule>() {
                    Ok(host) => Some(host),
                    Err(e) => {
                        self.error(&object, Reason::InvalidHost, format!("{e}; the rule is ignored"));
                        continue;
                    }
                },
            };
            if !hosts.contains(&host) {
                hosts.push(host.clone());
                if let Some(host) = &host {
                    self.add_aliases(&object, host, &annotated.aliases);
                }
            }
            if www_redirect && let Some(HostRule::Exact(name)) = &host {
                let alias = match name.strip_prefix("www.") {
                    Some(bare) => bare.to_owned(),
                    None => format!("www.{name}"),
                };
                if let Ok(alias) = alias.parse::<HostRule>() {
                    self.www_redirects.push((alias, HostRule::Exact(name.clone()), object.clone()));
                }
            }
            for path in rule.http.iter().flat_map(|http| &http.paths) {
                let Some(rule) = self.path_rule(&object, path, use_regex) else { continue };
                let written = path.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                // ingress-nginx's buildProxyPass: a target equal to the path rewrites nothing.
                let rewrite = rewrite.as_ref().filter(|(target, _)| **target != *written);
                let mut policy = with_rewrite(&policy, &rule, rewrite);
                if cookie_path_from_route {
                    policy = annotations::with_cookie_path(&policy, written);
                }
                if self.global.no_auth_locations.iter().any(|location| written.starts_with(&**location)) {
                    policy = without_authentication(&policy);
                }
                let backend = self.backends.resolve(
                    &object,
                    &path.backend,
                    protocol,
                    dial,
                    &mut self.table,
                    &mut self.diagnostics,
                );
                if self.add_route(&object, id, host.as_ref(), rule.clone(), backend, &policy) {
                    let key = (host.clone(), written.into(), path.path_type.as_str().into());
                    self.main_paths.entry(key).or_insert(rule);
                }
            }
        }

        match &spec.default_backend {
            Some(default_backend) => {
                let backend = self.backends.resolve(
                    &object,
                    default_backend,
                    protocol,
                    dial,
                    &mut self.table,
                    &mut self.diagnostics,
                );
                let route = Route {
                    rule: PathRule::Prefix("".into()),
                    ingress: Some(id.clone()),
                    action: RouteAction::Forward(backend),
                    policy: policy.clone(),
                };
                if rules.is_empty() {
                    if let Err(conflict) = self.table.set_default_route(route) {
                        let message = format!("the default backend is {conflict}; this one is ignored");
                        self.error(&object, Reason::DefaultBackendConflict, message);
                    }
                } else {
                    for host in &hosts {
                        if let Err(conflict) =
                            self.table.virtual_host_mut(host.as_ref()).set_fallback(route.clone())
                        {
                            let message = format!(
                                "the default backend of host {} is {conflict}; this one is ignored",
                                display_host(host.as_ref())
                            );
                            self.error(&object, Reason::DefaultBackendConflict, message);
                        }
                    }
                }
            }
            None if rules.is_empty() => {
                self.error(&object, Reason::NoRules, "neither rules nor a defaultBackend: nothing to serve")
            }
            None => {}
        }

        if let Some(client_auth) = annotated.client_auth {
            self.client_auth(&object, &hosts, client_auth);
        }
        let tls = spec.tls.as_deref().unwrap_or_default();
        self.certificates.apply(&object, tls, &hosts, &mut self.table, &mut self.diagnostics);
        self.add_frontend_tls(&object, &hosts, &annotated.frontend_tls);
    }

    /// The policy of an Ingress without annotations of ours is that of every other such Ingress
    /// of its namespace: one copy, not one per Ingress. (Rate limits and external auth keep
    /// state per Ingress, so a policy with them is never shared.)
    fn shared_policy(&mut self, ingress: &Ingress, namespace: &str, policy: Policy) -> Arc<Policy> {
        let prefix = &self.options.annotations_prefix;
        let annotations = ingress.metadata.annotations.iter().flatten();
        let annotated = annotations
            .into_iter()
            .any(|(key, _)| key.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/')));
        if annotated || policy.rate_limit.is_some() || policy.external_auth.is_some() {
            return Arc::new(policy);
        }
        match self.plain_policies.get(namespace) {
            Some(shared) if **shared == policy => shared.clone(),
            _ => {
                let policy = Arc::new(policy);
                self.plain_policies.insert(namespace.to_owned(), policy.clone());
                policy
            }
        }
    }

    /// Records what `ssl-passthrough`, `ssl-ciphers` and `ssl-prefer-server-ciphers` ask of the
    /// Ingress's hosts. As in ingress-nginx, any Ingress of a host turns passthrough on, and the
    /// oldest one setting a cipher key decides it.
    fn add_frontend_tls(&mut self, object: &ObjectRef, hosts: &[Option<HostRule>], asked: &FrontendTls) {
        let prefix = &self.options.annotations_prefix;
        if asked.passthrough && !self.options.enable_ssl_passthrough {
            let message = format!(
                "annotation {prefix}/ssl-passthrough needs the flag --enable-ssl-passthrough; it was ignored"
            );
            self.diagnostics.push(Diagnostic::warning(object.clone(), Reason::InvalidAnnotation, message));
        } else if asked.passthrough {
            for host in hosts {
                if let Some(HostRule::Exact(name)) = host {
                    self.passthrough.entry(name.clone()).or_insert_with(|| object.clone());
                } else {
                    let message = format!(
                        "annotation {prefix}/ssl-passthrough: {} is not an exact host name, so no SNI selects it; its TLS connections are terminated",
                        display_host(host.as_ref())
                    );
                    self.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                }
            }
        }
        let provider = &self.options.crypto_provider.cipher_suites;
        let suites: Option<Arc<[_]>> = asked.tls12_ciphers.as_ref().map(|names| {
            let offered = |name| provider.iter().find(|suite| suite.suite() == name).copied();
            names.iter().filter_map(|name| offered(*name)).collect()
        });
        let suites = suites.filter(|suites| !suites.is_empty());
        for host in hosts.iter().flatten() {
            let settings = self.server_tls.entry(host.clone()).or_default();
            if settings.tls12_cipher_suites.is_none() {
                settings.tls12_cipher_suites = suites.clone();
            }
            if settings.prefer_server_ciphers.is_none() {
                settings.prefer_server_ciphers = asked.prefer_server_ciphers;
            }
        }
    }

    /// Applies the TLS frontend settings: each host's handshake settings (its aliases share
    /// them), and the backend of each `ssl-passthrough` host.
    fn frontend_tls(&mut self) {
        let defaults = self.global.server_tls.clone();
        for (host, settings) in std::mem::take(&mut self.server_tls) {
            self.table.tls_mut().set_server_tls(&host, settings.or(&defaults));
        }
        self.table.tls_mut().set_default_server_tls(defaults);
        let prefix = self.options.annotations_prefix.clone();
        for (name, object) in std::mem::take(&mut self.passthrough) {
            let warn = |diagnostics: &mut Vec<Diagnostic>, message: String| {
                let message = format!("annotation {prefix}/ssl-passthrough: host {name} {message}");
                diagnostics.push(Diagnostic::warning(object.clone(), Reason::InvalidAnnotation, message));
            };
            // ingress-nginx passes a host's connections to the backend of its `/` location: a
            // `/` path of some Ingress of the host, else the host's default backend.
            let vhost = self.table.virtual_host(&HostRule::Exact(name.clone()));
            let root = vhost.and_then(|vhost| {
                let root = PathRule::Prefix("".into());
                vhost.routes().iter().find(|route| route.rule == root).or(vhost.fallback())
            });
            let forwarded = root.and_then(|route| match &route.action {
                RouteAction::Forward(backend) => Some((route, backend)),
                RouteAction::Redirect(_) => None,
            });
            let Some((route, backend)) = forwarded else {
                warn(
                    &mut self.diagnostics,
                    "has no backend for /; its TLS connections are terminated".into(),
                );
                continue;
            };
            let policy = &route.policy;
            let other_paths = vhost.is_some_and(|vhost| vhost.routes().iter().any(|r| r != route));
            // Undecrypted connections cannot be held to the restrictions of `/` (ingress-nginx
            // passes them through regardless): such a host stays terminated, so they apply.
            let restricted = policy.denied.is_some()
                || policy.auth.is_some()
                || policy.external_auth.is_some()
                || policy.source_access.is_some()
                || policy.rate_limit.is_some()
                || vhost.is_some_and(|vhost| vhost.client_auth().is_some());
            if restricted {
                let message = format!(
                    "annotation {prefix}/ssl-passthrough: host {name} restricts access to / (or requires client certificates), which undecrypted connections would escape; its TLS connections are terminated"
                );
                self.diagnostics.push(Diagnostic::error(object.clone(), Reason::InvalidAnnotation, message));
                continue;
            }
            self.table.set_passthrough(&name, backend.clone());
            if other_paths {
                let message = "passes every TLS connection to the backend of /; its other paths are served over plain HTTP only";
                warn(&mut self.diagnostics, message.into());
            }
        }
    }

    /// `auth-tls-*` for the hosts of an Ingress's rules, as ingress-nginx sets them per server:
    /// the oldest Ingress's rules win, but any Ingress whose rules cannot be applied makes the
    /// host refuse every request.
    fn client_auth(&mut self, object: &ObjectRef, hosts: &[Option<HostRule>], client_auth: ClientAuth) {
        let client_auth = Arc::new(client_auth);
        for host in hosts {
            let vhost = self.table.virtual_host_mut(host.as_ref());
            match vhost.client_auth().map(|a| &**a) {
                None => vhost.set_client_auth(client_auth.clone()),
                Some(ClientAuth::Refused) => {}
                Some(_) if *client_auth == ClientAuth::Refused => vhost.set_client_auth(client_auth.clone()),
                Some(existing) if *existing == *client_auth => {}
                Some(_) => {
                    let message = format!(
                        "host {} has the client certificate rules of an older Ingress; these are ignored",
                        display_host(host.as_ref())
                    );
                    self.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                }
            }
        }
    }

    /// The rule for one path of an Ingress, or `None` (with a diagnostic) when it is invalid.
    /// With `use_regex`, `ImplementationSpecific` paths are regexes; otherwise they are `Prefix`.
    fn path_rule(&mut self, object: &ObjectRef, path: &HTTPIngressPath, use_regex: bool) -> Option<PathRule> {
        // An omitted path matches everything.
        let written = path.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let rule = match path.path_type.as_str() {
            "Exact" => PathRule::exact(written),
            "ImplementationSpecific" if use_regex => PathRule::regex(written),
            "Prefix" | "ImplementationSpecific" => PathRule::prefix(written),
            "" => {
                let message = format!("path `{written}`: pathType is required; the path is ignored");
                self.error(object, Reason::InvalidPathType, message);
                return None;
            }
            other => {
                let message = format!("path `{written}`: unknown pathType `{other}`; the path is ignored");
                self.error(object, Reason::InvalidPathType, message);
                return None;
            }
        };
        rule.map_err(|e| {
            self.error(object, Reason::InvalidPath, format!("path `{written}`: {e}; the path is ignored"))
        })
        .ok()
    }

    fn add_route(
        &mut self,
        object: &ObjectRef,
        id: &Arc<NamespacedName>,
        host: Option<&HostRule>,
        rule: PathRule,
        backend: BackendRef,
        policy: &Arc<Policy>,
    ) -> bool {
        let route = Route {
            rule,
            ingress: Some(id.clone()),
            action: RouteAction::Forward(backend),
            policy: policy.clone(),
        };
        if let Err(conflict) = self.table.virtual_host_mut(host).add_route(route) {
            let message =
                format!("{} {} is {conflict}; this path is ignored", display_host(host), conflict.rule);
            self.error(object, Reason::PathConflict, message);
            return false;
        }
        true
    }

    /// `from-to-www-redirect`: the other name of each host redirects to it, unless some Ingress
    /// defines that name itself (as ingress-nginx).
    fn www_redirects(&mut self) {
        for (alias, target, object) in std::mem::take(&mut self.www_redirects) {
            if self.table.has_virtual_host(&alias) {
                let message =
                    format!("from-to-www-redirect: {alias} is defined by an Ingress; it is not redirected");
                self.diagnostics.push(Diagnostic::warning(object, Reason::InvalidAnnotation, message));
                continue;
            }
            let ingress =
                NamespacedName::new(object.namespace.clone().unwrap_or_default(), object.name.clone());
            let route = Route {
                rule: PathRule::Prefix("".into()),
                ingress: Some(Arc::new(ingress)),
                action: RouteAction::Redirect(HostRedirect::new(&target.to_string())),
                policy: Arc::default(),
            };
            // The alias has no virtual host yet (checked above), so this is its only route.
            let _ = self.table.virtual_host_mut(Some(&alias)).set_fallback(route);
        }
    }

    /// `--default-backend-service`: where error pages come from, and the default route when
    /// no Ingress set one.
    fn default_backend_flag(&mut self) {
        let Some(service) = &self.options.default_backend_service else { return };
        let backend = self.backends.resolve_first_port(service, &mut self.table, &mut self.diagnostics);
        let backend = backend.unwrap_or_else(|| {
            let object = ObjectRef::new(ObjectKind::Service, Some(&service.namespace), &service.name);
            let message = "--default-backend-service names a service that does not exist or has no port; \
                           unmatched requests get 503";
            self.diagnostics.push(Diagnostic::error(object, Reason::MissingService, message));
            self.table.add_backend(backend::unavailable(service.clone(), PortRef::Number(0), Protocol::Http))
        });
        self.table.set_default_backend(backend.clone());
        if self.table.default_route().is_some() {
            return;
        }
        let route = Route {
            rule: PathRule::Prefix("".into()),
            ingress: None,
            action: RouteAction::Forward(backend),
            policy: Arc::default(),
        };
        // The table has no default route yet (checked above), so this cannot conflict.
        let _ = self.table.set_default_route(route);
    }

    /// The `default-backend` annotation's Service: its first port. A Service that does not exist
    /// or has no port is reported and the annotation ignored, as ingress-nginx does.
    fn default_backend_annotation(&mut self, object: &ObjectRef, service: &str) -> Option<BackendRef> {
        let id = NamespacedName::new(object.namespace.as_deref().unwrap_or_default(), service);
        let backend = self.backends.resolve_first_port(&id, &mut self.table, &mut self.diagnostics);
        if backend.is_none() {
            let message = format!(
                "annotation {}/default-backend: service {id} does not exist or has no port; it was ignored",
                self.options.annotations_prefix
            );
            self.diagnostics.push(Diagnostic::error(object.clone(), Reason::InvalidAnnotation, message));
        }
        backend
    }

    /// Records the `server-alias` names of a host: the oldest Ingress that gives the host any
    /// wins (Ingresses come oldest first), as in ingress-nginx.
    fn add_aliases(&mut self, object: &ObjectRef, host: &HostRule, aliases: &[HostRule]) {
        if aliases.is_empty() {
            return;
        }
        match self.aliases.get(host) {
            None => {
                self.aliases.insert(host.clone(), (aliases.to_vec(), object.clone()));
            }
            Some((_, first)) => {
                let message =
                    format!("server-alias: host {host} has the aliases of {first}; these are ignored");
                self.diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
            }
        }
    }

    /// `server-alias`: each alias serves what its host serves, with the host's certificate when
    /// that certificate is valid for the alias. A name that is a host of some Ingress, or the
    /// alias of another host already, stays as it is (reported).
    fn aliases(&mut self) {
        for (host, (aliases, object)) in std::mem::take(&mut self.aliases) {
            for alias in aliases.iter().filter(|alias| **alias != host) {
                if !self.table.add_alias(alias, &host) {
                    let message =
                        format!("server-alias: {alias} is a host of its own; it is not an alias of {host}");
                    self.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                    continue;
                }
                let certificate = self.table.tls().certificate(&host).cloned();
                if let Some(certificate) = certificate.filter(|c| tls::covers(c, alias)) {
                    self.table.tls_mut().insert(alias, certificate);
                }
                if let Some(settings) = self.server_tls.get(&host).cloned() {
                    self.server_tls.entry(alias.clone()).or_insert(settings);
                }
            }
        }
    }

    fn error(&mut self, object: &ObjectRef, reason: Reason, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(object.clone(), reason, message));
    }
}

/// The policy of a route, with its `rewrite-target` (which captures from the route's own path).
fn with_rewrite(
    policy: &Arc<Policy>,
    rule: &PathRule,
    rewrite: Option<&(Box<str>, Option<Box<str>>)>,
) -> Arc<Policy> {
    let Some((target, forwarded_prefix)) = rewrite else { return policy.clone() };
    let pattern = match rule {
        PathRule::Regex(regex) => regex.clone(),
        PathRule::Exact(path) | PathRule::Prefix(path) => PathRegex::literal(path),
    };
    Arc::new(Policy {
        rewrite: Some(Rewrite {
            pattern,
            target: target.clone(),
            forwarded_prefix: forwarded_prefix.clone(),
        }),
        ..Policy::clone(policy)
    })
}

/// The policy of a route under `no-auth-locations`: no basic or external auth (ingress-nginx's
/// nginx.tmpl skips both for such locations).
fn without_authentication(policy: &Arc<Policy>) -> Arc<Policy> {
    if policy.auth.is_none() && policy.external_auth.is_none() {
        return policy.clone();
    }
    Arc::new(Policy { auth: None, external_auth: None, ..Policy::clone(policy) })
}

fn display_host(host: Option<&HostRule>) -> String {
    host.as_ref().map_or_else(|| "(any host)".to_owned(), |h| h.to_string())
}

impl Translation {
    /// A stable, readable rendering of the table and diagnostics (golden tests, `ostium check`).
    pub fn render(&self) -> String {
        render::render(self)
    }

    /// What a request for `host` and `path` would get (`ostium route`).
    pub fn explain(&self, host: &str, path: &str, https: bool) -> String {
        render::explain(self, host, path, https)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// Options with the CONTRACT defaults and a fresh self-signed fallback certificate.
    pub(crate) fn options() -> Options {
        let mut fallback = ostium_test_support::certificate(&["ostium.invalid"]);
        fallback.source = "self-signed".into();
        Options::new(fallback, Arc::new(rustls::crypto::ring::default_provider()))
    }

    #[test]
    fn explain_shows_where_a_passthrough_host_sends_its_tls_connections() {
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: tls-app}\nspec: {ports: [{port: 443}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: passed, annotations: {nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"}}\nspec:\n  ingressClassName: ostium\n  rules:\n  - host: pass.example.com\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: tls-app, port: {number: 443}}}}]\n";
        let objects = Objects::from_yaml(yaml).unwrap();
        let options = Options { enable_ssl_passthrough: true, ..options() };
        let translation = translate(&objects, &options);
        let https = translation.explain("pass.example.com", "/x", true);
        assert!(
            https.contains("ssl-passthrough: TLS passed undecrypted to service default/tls-app:443"),
            "{https}"
        );
        let http = translation.explain("pass.example.com", "/x", false);
        assert!(!http.contains("ssl-passthrough") && http.contains("route: Prefix /"), "{http}");
    }
}
