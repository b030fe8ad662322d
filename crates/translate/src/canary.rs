//! Canary Ingresses joined to the routes of the others, as ingress-nginx's
//! `mergeAlternativeBackends` (internal/ingress/controller/controller.go) does: a canary Ingress
//! never serves on its own; each of its paths lends its backend to the route with the same host,
//! path and pathType of another Ingress, and its `defaultBackend` to every route of the rules
//! without a host and to the catch-all. The oldest canary of a route is the one used.
//!
//! Difference: ingress-nginx keeps the canary with the main Service (its upstream), so every
//! route of any host sending to that Service gets it (kubernetes/ingress-nginx#4667); here only
//! the routes with the canary's host and path do, as its documentation says.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{IngressBackend, IngressSpec};
use md5::{Digest as _, Md5};
use ostium_model::{
    Affinity, Backend, Canary, CanaryAffinity, CanarySessions, ClientAuth, HostRule, LoadBalance,
    NamespacedName, PathRule, Policy, Route, RouteAction, UpstreamHash,
};

use crate::backend::Dial;
use crate::{CanaryRules, Diagnostic, ObjectRef, Reason, Translator, display_host};

/// A path as an Ingress writes it: host, path and pathType.
pub(crate) type WrittenPath = (Option<HostRule>, Box<str>, Box<str>);

/// A canary Ingress waiting for every other Ingress to be in.
pub(crate) struct CanaryIngress {
    object: ObjectRef,
    id: Arc<NamespacedName>,
    rules: CanaryRules,
    /// How the canary's upstream is built: the canary Ingress's `service-upstream`,
    /// `load-balance` and `upstream-hash-by`.
    upstream: CanaryUpstream,
    /// Host, path and pathType as written, and the backend of each path.
    paths: Vec<(WrittenPath, IngressBackend)>,
    default_backend: Option<IngressBackend>,
    /// `auth-tls-*`: ingress-nginx gives a canary Ingress's client certificate rules to the
    /// hosts it serves like any Ingress's (a server-level setting, not a location's).
    client_auth: Option<ClientAuth>,
}

/// The keys of a canary Ingress that ingress-nginx builds the canary's upstream with
/// (`affinity` only with `affinity-canary-behavior: legacy`).
pub(crate) struct CanaryUpstream {
    pub(crate) dial: Dial,
    pub(crate) load_balance: LoadBalance,
    pub(crate) upstream_hash: Option<Arc<UpstreamHash>>,
    pub(crate) affinity: Option<Arc<Affinity>>,
}

/// A route a canary may join.
enum Joined {
    Route(Option<HostRule>, PathRule),
    Fallback(Option<HostRule>),
    Default,
}

impl Translator<'_> {
    /// Remembers the session affinity cookie of an Ingress with `affinity: cookie`, which
    /// requests of its routes keep when a canary joins them.
    pub(crate) fn add_sticky_cookie(&mut self, id: &Arc<NamespacedName>, policy: &Policy) {
        if let Some(affinity) = &policy.affinity {
            self.sticky_cookies.insert(id.clone(), affinity.cookie.name.clone());
        }
    }

    /// Sets a canary Ingress aside: it joins the routes of the others once all are in.
    pub(crate) fn add_canary(
        &mut self,
        object: ObjectRef,
        id: &Arc<NamespacedName>,
        spec: &IngressSpec,
        rules: CanaryRules,
        upstream: CanaryUpstream,
        client_auth: Option<ClientAuth>,
    ) {
        let mut paths = Vec::new();
        for rule in spec.rules.iter().flatten() {
            let host = match rule.host.as_deref().filter(|h| !h.is_empty()).map(str::parse::<HostRule>) {
                None => None,
                Some(Ok(host)) => Some(host),
                Some(Err(e)) => {
                    self.error(&object, Reason::InvalidHost, format!("{e}; the rule is ignored"));
                    continue;
                }
            };
            for path in rule.http.iter().flat_map(|http| &http.paths) {
                // ingress-nginx skips paths without a Service.
                if path.backend.service.is_none() {
                    continue;
                }
                let written = path.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                let written = (host.clone(), written.into(), path.path_type.as_str().into());
                paths.push((written, path.backend.clone()));
            }
        }
        let default_backend = spec.default_backend.clone().filter(|backend| backend.service.is_some());
        let id = id.clone();
        self.canaries.push(CanaryIngress {
            object,
            id,
            rules,
            upstream,
            paths,
            default_backend,
            client_auth,
        });
    }

    /// Joins each canary Ingress to the routes it matches; a path that matches none is reported
    /// (ingress-nginx drops its backend).
    pub(crate) fn canaries(&mut self) {
        for mut canary in std::mem::take(&mut self.canaries) {
            // The hosts the canary joined: its client certificate rules apply to them.
            let mut hosts: Vec<Option<HostRule>> = Vec::new();
            for (key, backend) in &canary.paths {
                let (host, written, path_type) = key;
                let joined = match self.main_paths.get(key) {
                    Some(rule) => self.join(&canary, backend, &Joined::Route(host.clone(), rule.clone())),
                    // nginx's `location /`: the host's defaultBackend, or the catch-all's.
                    None if **written == *"/" && **path_type == *"Prefix" => {
                        self.join(&canary, backend, &Joined::Fallback(host.clone()))
                            || (host.is_none() && self.join(&canary, backend, &Joined::Default))
                    }
                    None => false,
                };
                if joined && !hosts.contains(host) {
                    hosts.push(host.clone());
                }
                if !joined {
                    let message = format!(
                        "canary path {}{written} ({path_type}) has no route of another Ingress to join; it is not served",
                        display_host(host.as_ref())
                    );
                    self.warn(&canary.object, message);
                }
            }
            if let Some(backend) = &canary.default_backend {
                let mut joined: Vec<Joined> = match self.table.defined_virtual_host_mut(None) {
                    Some(vhost) => {
                        vhost.routes_mut().iter().map(|r| Joined::Route(None, r.rule.clone())).collect()
                    }
                    None => Vec::new(),
                };
                joined.extend([Joined::Fallback(None), Joined::Default]);
                let mut any = false;
                for joined in &joined {
                    any |= self.join(&canary, backend, joined);
                }
                if any && !hosts.contains(&None) {
                    hosts.push(None);
                }
                if !any {
                    let message = "the canary's defaultBackend has no catch-all or host-less route of another Ingress to join; it is not served";
                    self.warn(&canary.object, message.into());
                }
            }
            if let Some(client_auth) = canary.client_auth.take() {
                self.client_auth(&canary.object, &hosts, client_auth);
            }
        }
    }

    /// Lends a canary's backend to one route, if that route exists and forwards to a backend
    /// of an Ingress. Whether it did.
    fn join(&mut self, canary: &CanaryIngress, backend: &IngressBackend, joined: &Joined) -> bool {
        let Some(route) = self.joined_route_mut(joined) else { return false };
        let (RouteAction::Forward(main), Some(ingress)) = (route.action.clone(), route.ingress.clone())
        else {
            return false;
        };
        // Another namespace's route is not the canary's to take traffic from (ingress-nginx lets
        // any namespace's canary join, so one tenant could draw another's requests).
        if ingress.namespace != canary.id.namespace {
            let message = format!(
                "canary: the route {} {} belongs to ingress {ingress} of another namespace; a canary joins routes of its own namespace only",
                display_host(joined_host(joined)),
                route.rule
            );
            self.warn(&canary.object, message);
            return false;
        }
        let protocol = main.protocol; // the main location's backend-protocol
        let alternative = self.backends.resolve(
            &canary.object,
            backend,
            protocol,
            canary.upstream.dial,
            &mut self.table,
            &mut self.diagnostics,
        );
        let route = self.joined_route_mut(joined).expect("found above");
        let (rule, existing) = (route.rule.clone(), route.policy.canary.as_ref().map(|c| c.ingress.clone()));
        let place = format!("{} {rule}", display_host(joined_host(joined)));
        let message = match existing {
            _ if Arc::ptr_eq(&alternative, &main) => {
                format!("canary: {place} is served by the same service already; nothing to do")
            }
            Some(existing) if existing == canary.id => return true,
            Some(existing) => {
                format!("canary: {place} has the canary of ingress {existing} already; this one is ignored")
            }
            None => {
                let sessions = self.sticky_cookies.get(&ingress).map(|cookie| CanarySessions {
                    cookie: cookie.clone(),
                    main_key: session_key(&main),
                    canary_key: session_key(&alternative),
                });
                let rules = &canary.rules;
                let lent = Canary {
                    backend: alternative,
                    ingress: canary.id.clone(),
                    header: rules.header.clone(),
                    cookie: rules.cookie.clone(),
                    weight: rules.weight,
                    weight_total: rules.weight_total,
                    affinity: rules.affinity,
                    sessions,
                    load_balance: canary.upstream.load_balance,
                    upstream_hash: canary.upstream.upstream_hash.clone(),
                    own_affinity: canary
                        .upstream
                        .affinity
                        .clone()
                        .filter(|_| rules.affinity == CanaryAffinity::Legacy),
                };
                let route = self.joined_route_mut(joined).expect("found above");
                route.policy =
                    Arc::new(Policy { canary: Some(Arc::new(lent)), ..Policy::clone(&route.policy) });
                return true;
            }
        };
        self.warn(&canary.object, message);
        true
    }

    fn joined_route_mut(&mut self, joined: &Joined) -> Option<&mut Route> {
        match joined {
            Joined::Route(host, rule) => {
                let vhost = self.table.defined_virtual_host_mut(host.as_ref())?;
                vhost.routes_mut().iter_mut().find(|route| route.rule == *rule)
            }
            Joined::Fallback(host) => self.table.defined_virtual_host_mut(host.as_ref())?.fallback_mut(),
            Joined::Default => self.table.default_route_mut(),
        }
    }

    fn warn(&mut self, object: &ObjectRef, message: String) {
        self.diagnostics.push(Diagnostic::warning(object.clone(), Reason::InvalidAnnotation, message));
    }
}

/// The key ingress-nginx's sticky balancers write into their cookie for a backend: the hex MD5
/// of the hex MD5 of its upstream name followed by that name (`backend_key` in
/// rootfs/etc/nginx/lua/balancer/sticky.lua; the name from `upstreamName` in
/// internal/ingress/controller/util.go).
fn session_key(backend: &Backend) -> Arc<str> {
    let name = format!("{}-{}-{}", backend.service.namespace, backend.service.name, backend.port);
    let inner = hex(&Md5::digest(name.as_bytes()));
    hex(&Md5::digest(format!("{inner}{name}").as_bytes())).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn joined_host(joined: &Joined) -> Option<&HostRule> {
    match joined {
        Joined::Route(host, _) | Joined::Fallback(host) => host.as_ref(),
        Joined::Default => None,
    }
}

#[cfg(test)]
mod tests {
    use ostium_model::{NamespacedName, RouteAction};

    use crate::{Objects, translate};

    /// The canary's Service port is in the table's endpoint sets, so its pods move in place
    /// like any backend's.
    #[test]
    fn the_canary_backend_gets_endpoint_updates() {
        let input = include_str!("../tests/fixtures/annotations-canary-joining/input.yaml");
        let translation = translate(&Objects::from_yaml(input).unwrap(), &crate::tests::options());
        let table = &translation.table;
        let canary = NamespacedName::new("default", "app-canary-2");
        let sets: Vec<_> = table.endpoint_sets_of(&canary).collect();
        assert_eq!(sets.len(), 1);
        let route = table.route(None, "/hostless").unwrap().route;
        assert!(matches!(route.action, RouteAction::Forward(_)));
        let lent = route.policy.canary.as_ref().expect("the route has a canary");
        let backend = &lent.backend;
        assert!(std::sync::Arc::ptr_eq(backend.endpoint_set().unwrap(), sets[0]));
    }

    /// The value ingress-nginx's Lua computes, `ngx.md5(ngx.md5(name) .. name)`, for the
    /// upstream `default-shop-80`.
    #[test]
    fn session_keys_are_ingress_nginx_backend_keys() {
        let backend = ostium_model::Backend {
            service: std::sync::Arc::new(NamespacedName::new("default", "shop")),
            port: ostium_model::PortRef::Number(80),
            protocol: ostium_model::Protocol::Http,
            target: ostium_model::Target::Unavailable,
        };
        assert_eq!(&*super::session_key(&backend), "a630d342a7253deaa8858cf51930c012");
    }
}
