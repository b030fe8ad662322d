//! Backends: Ingress backend references resolved to Service ports and their endpoints.
//!
//! Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` (ready
//! endpoints; serving-but-terminating ones only when none is ready; the first address of each;
//! ports matched by the Service port's name; all slices merged), or from the core/v1 Endpoints
//! object when the Service has no slice. `ExternalName` Services resolve to their DNS name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressBackend;
use ostium_model::{
    Backend, BackendRef, EndpointKey, EndpointSet, HashMap, NamespacedName, PortRef, Protocol, TableBuilder,
    Target, Transport,
};

use crate::{Diagnostic, ObjectKind, ObjectRef, Objects, Reason};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A resolved Service port, and the problem found resolving it (if any).
type Resolved = (BackendRef, Option<BackendProblem>);

/// Why a Service port cannot be reached; its requests get 503.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum BackendProblem {
    #[error("service {0} not found; requests get 503")]
    MissingService(NamespacedName),
    #[error("service {0} has no port {1}; requests get 503")]
    UnknownPortNumber(NamespacedName, u16),
    #[error("service {0} has no port named `{1}`; requests get 503")]
    UnknownPortName(NamespacedName, Box<str>),
    #[error("ExternalName service {0} has no externalName; requests get 503")]
    NoExternalName(NamespacedName),
    #[error("ExternalName service {0}: `{1}` is not a host name; requests get 503")]
    InvalidExternalName(NamespacedName, String),
}

/// How requests reach a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dial {
    /// Straight to its endpoints (pods).
    Endpoints,
    /// `service-upstream`: its cluster IP, where it has one (else its endpoints).
    ClusterIp,
}

impl BackendProblem {
    fn reason(&self) -> Reason {
        match self {
            Self::MissingService(_) => Reason::MissingService,
            Self::UnknownPortNumber(..) | Self::UnknownPortName(..) => Reason::UnknownServicePort,
            Self::NoExternalName(_) | Self::InvalidExternalName(..) => Reason::InvalidBackend,
        }
    }

    fn diagnostic(&self, object: ObjectRef) -> Diagnostic {
        Diagnostic::error(object, self.reason(), self.to_string())
    }
}

pub(crate) struct Backends<'a> {
    objects: &'a Objects,
    /// Each Service port is resolved once per translation; the problem found (if any) is kept so
    /// that every Ingress referring to it gets its own diagnostic.
    resolved: HashMap<(NamespacedName, PortRef, Protocol, Dial), Resolved>,
}

impl<'a> Backends<'a> {
    pub(crate) fn new(objects: &'a Objects) -> Self {
        Self { objects, resolved: HashMap::default() }
    }

    /// The backend for an Ingress backend reference in `object`'s namespace. Problems give a
    /// diagnostic on `object` and a backend that answers 503.
    pub(crate) fn resolve(
        &mut self,
        object: &ObjectRef,
        backend: &IngressBackend,
        protocol: Protocol,
        dial: Dial,
        table: &mut TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> BackendRef {
        let namespace = object.namespace.as_deref().unwrap_or_default();
        let Some(service) = &backend.service else {
            let name = backend.resource.as_ref().map_or("", |r| r.name.as_str());
            let message = format!("resource backend `{name}` is not supported; requests get 503");
            diagnostics.push(Diagnostic::error(object.clone(), Reason::UnsupportedBackend, message));
            return table.add_backend(unavailable(
                NamespacedName::new(namespace, name),
                PortRef::Number(0),
                protocol,
            ));
        };
        let id = NamespacedName::new(namespace, &service.name);
        let port = service.port.as_ref().and_then(|p| match (&p.name, p.number) {
            (Some(name), _) if !name.is_empty() => Some(PortRef::Name(name.as_str().into())),
            (_, Some(number)) => u16::try_from(number).ok().filter(|n| *n != 0).map(PortRef::Number),
            _ => None,
        });
        let Some(port) = port else {
            let message =
                format!("service `{}` needs a port number (1-65535) or name; requests get 503", service.name);
            diagnostics.push(Diagnostic::error(object.clone(), Reason::InvalidBackend, message));
            return table.add_backend(unavailable(id, PortRef::Number(0), protocol));
        };

        let key = (id, port, protocol, dial);
        let (backend, problem) = match self.resolved.get(&key) {
            Some(resolved) => resolved.clone(),
            None => {
                let (target, problem) = self.target(&key.0, &key.1, dial);
                let backend =
                    Backend { service: Arc::new(key.0.clone()), port: key.1.clone(), protocol, target };
                let resolved = (table.add_backend(backend), problem);
                self.resolved.insert(key.clone(), resolved.clone());
                resolved
            }
        };
        if let Some(problem) = problem {
            diagnostics.push(problem.diagnostic(object.clone()));
        } else if dial == Dial::ClusterIp && !self.has_cluster_ip(&key.0) {
            let message =
                format!("service-upstream: service {} has no cluster IP; its endpoints are used", key.0);
            diagnostics.push(Diagnostic::warning(object.clone(), Reason::InvalidAnnotation, message));
        }
        backend
    }

    /// Whether a Service has a cluster IP, or needs none (`ExternalName`).
    fn has_cluster_ip(&self, id: &NamespacedName) -> bool {
        let Some(spec) = self.objects.services.get(id).and_then(|s| s.spec.as_ref()) else { return false };
        spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref().is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
    }

    /// The backend for a Service named without a port (`--default-backend-service`, the
    /// `default-backend` annotation): its first port, spoken to in HTTP. `None` when the Service
    /// does not exist or has no port.
    pub(crate) fn resolve_first_port(
        &mut self,
        service: &NamespacedName,
        table: &mut TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<BackendRef> {
        let first_port =
            self.objects.services.get(service).and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first());
        let port = PortRef::Number(first_port.and_then(|p| u16::try_from(p.port).ok())?);
        let resolved = self.resolved.get(&(service.clone(), port.clone(), Protocol::Http, Dial::Endpoints));
        if let Some((backend, _)) = resolved {
            return Some(backend.clone());
        }
        let (target, problem) = self.target(service, &port, Dial::Endpoints);
        if let Some(problem) = problem {
            let object = ObjectRef::new(ObjectKind::Service, Some(&service.namespace), &service.name);
            diagnostics.push(problem.diagnostic(object));
        }
        let backend = Backend { service: Arc::new(service.clone()), port, protocol: Protocol::Http, target };
        Some(table.add_backend(backend))
    }

    fn target(&self, id: &NamespacedName, port: &PortRef, dial: Dial) -> (Target, Option<BackendProblem>) {
        let unavailable = |problem| (Target::Unavailable, Some(problem));
        let Some(spec) = self.objects.services.get(id).and_then(|s: &Arc<Service>| s.spec.as_ref()) else {
            return unavailable(BackendProblem::MissingService(id.clone()));
        };
        let service_port = spec.ports.iter().flatten().find(|p| match port {
            PortRef::Number(n) => p.port == i32::from(*n),
            PortRef::Name(name) => p.name.as_deref() == Some(&**name),
        });
        let unknown_port = || {
            unavailable(match port {
                PortRef::Number(n) => BackendProblem::UnknownPortNumber(id.clone(), *n),
                PortRef::Name(name) => BackendProblem::UnknownPortName(id.clone(), name.clone()),
            })
        };

        if spec.type_.as_deref() == Some("ExternalName") {
            let Some(host) = spec.external_name.as_deref().filter(|h| !h.is_empty()) else {
                return unavailable(BackendProblem::NoExternalName(id.clone()));
            };
            let number = match port {
                PortRef::Number(n) => Some(*n),
                PortRef::Name(_) => service_port.and_then(|p| u16::try_from(p.port).ok()),
            };
            let Some(number) = number else { return unknown_port() };
            return match http::uri::Authority::try_from(format!("{host}:{number}")) {
                Ok(authority) => (Target::ExternalName(authority), None),
                Err(_) => unavailable(BackendProblem::InvalidExternalName(id.clone(), host.to_owned())),
            };
        }

        let Some(service_port) = service_port else { return unknown_port() };
        let Ok(number) = u16::try_from(service_port.port) else { return unknown_port() };
        let key = EndpointKey { service: id.clone(), port: number, protocol: Transport::Tcp };
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
        if let (Dial::ClusterIp, Some(ip)) = (dial, cluster_ip) {
            let set = EndpointSet::new(key, [SocketAddr::new(ip, number)]);
            return (Target::ClusterIp(Arc::new(set)), None);
        }
        let slices: Vec<&EndpointSlice> = self.objects.slices_of(id).collect();
        let slices = (!slices.is_empty()).then_some(&slices[..]);
        let endpoints = self.objects.endpoints.get(id).map(|e| &**e);
        let addrs = addrs(slices, endpoints, service_port, Transport::Tcp);
        (Target::Endpoints(Arc::new(EndpointSet::new(key, addrs))), None)
    }
}

/// Ready endpoint addresses of a Service port from its EndpointSlices (serving-but-terminating
/// ones when none is ready), or, when it has no slice, from its Endpoints object; the endpoint
/// ports of `protocol` only.
pub(crate) fn addrs(
    slices: Option<&[&EndpointSlice]>,
    endpoints: Option<&Endpoints>,
    service_port: &ServicePort,
    protocol: Transport,
) -> Vec<SocketAddr> {
    let port_name = service_port.name.as_deref().unwrap_or("");
    let protocol = match protocol {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    };
    if let Some(slices) = slices {
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            let port = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            });
            let Some(port) = port.and_then(|p| u16::try_from(p.port?).ok()) else { continue };
            for endpoint in &slice.endpoints {
                // Endpoints are fungible: the first address stands for all.
                let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                // Per the API: `ready` and `serving` default to true, `terminating` to false.
                let conditions = endpoint.conditions.as_ref();
                let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let is_serving = conditions.and_then(|c| c.serving).unwrap_or(true);
                let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                if is_ready {
                    ready.push(SocketAddr::new(ip, port));
                } else if is_serving && is_terminating {
                    terminating.push(SocketAddr::new(ip, port));
                }
            }
        }
        return if ready.is_empty() { terminating } else { ready };
    }

    let Some(endpoints) = endpoints else { return Vec::new() };
    let mut addrs = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let port = subset.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name && p.protocol.as_deref().unwrap_or("TCP") == protocol
        });
        let Some(port) = port.and_then(|p| u16::try_from(p.port).ok()) else { continue };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                addrs.push(SocketAddr::new(ip, port));
            }
        }
    }
    addrs
}

pub(crate) fn unavailable(service: NamespacedName, port: PortRef, protocol: Protocol) -> Backend {
    Backend { service: Arc::new(service), port, protocol, target: Target::Unavailable }
}
