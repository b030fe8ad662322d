//! The second phase: the route for a request, on the current table, keeping only what the
//! later phases need (no table guard outlives this).

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;
use http::HeaderValue;
use ostium_model::{Blocked, ClientAuth, GlobalSettings, Policy, PortRef, Protocol, RouteAction, Target};

use crate::access_log::UpstreamNames;
use crate::canary::chosen_backend;
use crate::client::Client;
use crate::compress::Negotiation;
use crate::forward::Trace;
use crate::request::RequestHead;
use crate::{ConnectionInfo, Proxy, ProxyError};

/// What routing decided for a request.
#[derive(Debug)]
pub(crate) struct Routed<'h> {
    /// The normalised path the route was chosen by.
    pub(crate) path: Cow<'h, str>,
    pub(crate) action: RouteAction,
    pub(crate) policy: Arc<Policy>,
    /// Where a forwarded request goes, and how it is spoken to; `None` for a redirect route.
    pub(crate) backend: Option<(Target, Protocol)>,
    /// The route's canary was chosen for the request.
    pub(crate) to_canary: bool,
    /// The host is a TLS host of some Ingress (HTTPS redirect, HSTS).
    pub(crate) host_has_certificate: bool,
    /// The `--configmap` settings of the table the request was routed on.
    pub(crate) global: Arc<GlobalSettings>,
    /// Default backends, for a route with `default-backend` or `custom-http-errors` only.
    pub(crate) defaults: Option<Box<Defaults>>,
    /// The host's client certificate rules (`auth-tls-*`), whatever route serves the request.
    pub(crate) client_auth: Option<Arc<ClientAuth>>,
}

/// The default backends a route may send to, and what they are told of the route's Service.
#[derive(Debug)]
pub(crate) struct Defaults {
    /// `default-backend`: the route's own.
    pub(crate) own: Option<(Target, Protocol)>,
    /// `--default-backend-service`.
    pub(crate) global: Option<(Target, Protocol)>,
    /// The route's Service port, as its Ingress names it (`X-Service-Port`).
    pub(crate) service_port: Option<PortRef>,
}

impl Routed<'_> {
    /// The `Strict-Transport-Security` value for the answer: HTTPS hosts with a certificate
    /// only, as ingress-nginx's Lua header filter.
    pub(crate) fn hsts(&self, connection: &ConnectionInfo) -> Option<&HeaderValue> {
        let https = connection.is_tls && self.host_has_certificate;
        https.then_some(self.global.https.hsts.as_ref()).flatten()
    }
}

impl Proxy {
    /// Routes a request on the current table. Its client is settled first, as that table's
    /// `--configmap` settings say (forwarded headers, `block-cidrs`), and kept in `trace`.
    pub(crate) fn route<'h>(
        &self,
        head: &'h RequestHead,
        headers: &HeaderMap,
        connection: &ConnectionInfo,
        trace: &mut Trace,
    ) -> Result<Routed<'h>, ProxyError> {
        let table = self.inner.tables.load();
        // The settings of the table the request started with (`Trace::global`), so that one
        // request never mixes two ConfigMaps; the routes are the current table's.
        let global = trace.global.clone();
        let rules = &global.client_address;
        if rules.forwarded.is_some() {
            trace.client = Client::forwarded(rules, &connection.client, headers).map(Box::new);
        }
        if let Some(blocked) = &rules.blocked {
            let client = trace.client.as_deref().unwrap_or(&connection.client);
            match blocked {
                Blocked::Networks(networks) if networks.contains(client.address.ip()) => {
                    return Err(ProxyError::Forbidden);
                }
                Blocked::Networks(_) => {}
                Blocked::Unreadable => return Err(ProxyError::RouteDenied),
            }
        }
        let path = head.routed_path()?;
        trace.compression = Negotiation::new(&global, head.version, headers);
        let Some(matched) = table.route(head.host(), &path) else {
            trace.default_backend = true;
            return Err(ProxyError::NoRoute);
        };
        trace.ingress = matched.route.ingress.clone();
        // `--default-backend-service` (a catch-all Ingress's route names its Ingress).
        trace.default_backend = trace.ingress.is_none()
            && table.default_route_ref().is_some_and(|default| std::ptr::eq(default, matched.route));
        let mut to_canary = false;
        let backend = match &matched.route.action {
            RouteAction::Forward(main) => {
                let backend = chosen_backend(&matched.route.policy, main, headers);
                to_canary = !std::sync::Arc::ptr_eq(backend, main);
                trace.service = Some(backend.service.clone());
                // The default backend keeps ingress-nginx's `upstream-default-backend`.
                if trace.wants_upstream_names && !trace.default_backend {
                    let names = UpstreamNames::new(main, to_canary.then_some(&**backend));
                    trace.upstream_names = Some(Box::new(names));
                }
                Some((backend.target.clone(), backend.protocol))
            }
            RouteAction::Redirect(_) => None,
        };
        let host = head.host().and_then(ostium_model::normalize_host);
        let host_has_certificate = host.as_ref().is_some_and(|h| table.tls().has_certificate(h));
        let client_auth = table.client_auth(host.as_ref()).cloned();
        let (action, policy) = (matched.route.action.clone(), matched.route.policy.clone());
        let defaults = (policy.default_backend.is_some() || policy.error_pages.is_some()).then(|| {
            let backend = |backend: &ostium_model::Backend| (backend.target.clone(), backend.protocol);
            let service_port = match &action {
                RouteAction::Forward(backend) => Some(backend.port.clone()),
                RouteAction::Redirect(_) => None,
            };
            Box::new(Defaults {
                own: policy.default_backend.as_deref().map(backend),
                global: table.default_backend().map(backend),
                service_port,
            })
        });
        Ok(Routed {
            path,
            action,
            policy,
            backend,
            to_canary,
            host_has_certificate,
            global,
            defaults,
            client_auth,
        })
    }
}
