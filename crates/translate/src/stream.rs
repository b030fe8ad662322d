//! TCP and UDP services: the ConfigMaps named by `--tcp-services-configmap` and
//! `--udp-services-configmap`, read as ingress-nginx reads them (its `getStreamServices` in
//! `internal/ingress/controller/controller.go`): each key is a port to listen on, each value
//! `<namespace>/<service>:<port>[:PROXY][:PROXY]`, the port a Service port's number or name of
//! the ConfigMap's protocol; the first `PROXY` reads a PROXY protocol header from clients, the
//! second sends one to the endpoints (TCP only). An entry that cannot be served is reported and
//! skipped; the others are served.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ostium_model::{
    EndpointKey, EndpointSet, NamespacedName, PortRef, StreamService, TableBuilder, Transport,
};

use crate::{Diagnostic, ObjectKind, ObjectRef, Objects, Options, Reason};

/// Adds the TCP and UDP services of the two ConfigMaps to the table.
pub(crate) fn add_streams(
    objects: &Objects,
    options: &Options,
    table: &mut TableBuilder,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (flag, protocol) in
        [(&options.tcp_services_configmap, Transport::Tcp), (&options.udp_services_configmap, Transport::Udp)]
    {
        let Some(key) = flag else { continue };
        let object = ObjectRef::new(ObjectKind::ConfigMap, Some(&key.namespace), &key.name);
        let Some(config_map) = objects.config_maps.get(key) else {
            let message = format!(
                "named by --{}-services-configmap and does not exist; no {protocol} service is served",
                protocol.to_string().to_lowercase()
            );
            diagnostics.push(Diagnostic::warning(object, Reason::MissingConfigMap, message));
            continue;
        };
        let mut reader = Reader { objects, options, protocol, object, diagnostics };
        // Data keys are sorted; ports are served in that order, the first of two spellings of one
        // port (`"9000"`, `"09000"`) keeping it.
        for (port_key, value) in config_map.data.iter().flatten() {
            let Some(stream) = reader.entry(port_key, value) else { continue };
            let port = stream.port;
            if !table.add_stream(stream) {
                reader.invalid(port, format!("`{port_key}` names the port of an earlier key"));
            }
        }
    }
}

/// The Services a TCP or UDP services ConfigMap names (whatever else is wrong with its entries).
pub(crate) fn referenced_services(config_map: &ConfigMap) -> impl Iterator<Item = NamespacedName> + '_ {
    config_map.data.iter().flatten().filter_map(|(_, value)| {
        let (namespace, name) = value.split(':').next()?.split_once('/')?;
        Some(NamespacedName::new(namespace, name))
    })
}

/// The protocol of a Service port (`TCP` when unset, as the API server defaults it).
pub(crate) fn transport(port: &ServicePort) -> Transport {
    match port.protocol.as_deref() {
        Some("UDP") => Transport::Udp,
        _ => Transport::Tcp,
    }
}

/// Reads the entries of one ConfigMap.
struct Reader<'a> {
    objects: &'a Objects,
    options: &'a Options,
    protocol: Transport,
    object: ObjectRef,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    /// One entry, `None` (and a diagnostic) when it cannot be served.
    fn entry(&mut self, key: &str, value: &str) -> Option<StreamService> {
        let protocol = self.protocol;
        // Go's `strconv.Atoi`, then a port number (ingress-nginx hands any number to nginx).
        let Some(port) = key.parse::<i64>().ok().and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)
        else {
            self.report(format!("`{key}` is not a {protocol} port number (1-65535); the entry is skipped"));
            return None;
        };
        if self.options.reserved_ports.contains(&port) {
            self.invalid(port, "taken by the controller's own listeners (HTTP, HTTPS, admin)".to_owned());
            return None;
        }
        let parts: Vec<&str> = value.split(':').collect();
        if parts.len() < 2 {
            self.invalid(port, format!("`{value}` is not <namespace>/<service>:<port>[:PROXY][:PROXY]"));
            return None;
        }
        let (decode, encode) = self.proxy_protocol(port, &parts[2..]);
        let Some((namespace, name)) = parts[0].split_once('/').filter(|(_, name)| !name.contains('/')) else {
            self.invalid(port, format!("`{}` is not <namespace>/<service>", parts[0]));
            return None;
        };
        let service = NamespacedName::new(namespace, name);
        let Some(spec) = self.objects.services.get(&service).and_then(|s| s.spec.as_ref()) else {
            self.report_as(Reason::MissingService, port, format!("service {service} not found"));
            return None;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            self.invalid(port, format!("service {service} is an ExternalName service, which ostium does not forward {protocol} to"));
            return None;
        }
        let service_port = match parts[1].parse::<i64>() {
            Ok(n) => PortRef::Number(u16::try_from(n).unwrap_or(0)),
            Err(_) => PortRef::Name(parts[1].into()),
        };
        let found =
            spec.ports.iter().flatten().filter(|p| transport(p) == protocol).find(|p| match &service_port {
                PortRef::Number(n) => p.port == i32::from(*n),
                PortRef::Name(name) => p.name.as_deref() == Some(&**name),
            });
        let Some((found, number)) = found.and_then(|p| Some((p, u16::try_from(p.port).ok()?))) else {
            let message = format!("service {service} has no {protocol} port {}", parts[1]);
            self.report_as(Reason::UnknownServicePort, port, message);
            return None;
        };
        let slices: Vec<&EndpointSlice> = self.objects.slices_of(&service).collect();
        let slices = (!slices.is_empty()).then_some(&slices[..]);
        let endpoints = self.objects.endpoints.get(&service).map(|e| &**e);
        let addrs = crate::backend::addrs(slices, endpoints, found, protocol);
        let key = EndpointKey { service: service.clone(), port: number, protocol };
        Some(StreamService {
            port,
            protocol,
            service: Arc::new(service),
            service_port,
            decode_proxy_protocol: decode,
            send_proxy_protocol: encode,
            endpoints: Arc::new(EndpointSet::new(key, addrs)),
        })
    }

    /// The `PROXY` fields after the Service port: the first reads the header from clients, the
    /// second sends one to the endpoints; TCP only, as ingress-nginx, which ignores any other
    /// word there (reported here, and ignored).
    fn proxy_protocol(&mut self, port: u16, fields: &[&str]) -> (bool, bool) {
        let is_proxy = |i: usize| fields.get(i).is_some_and(|f| f.eq_ignore_ascii_case("PROXY"));
        let unknown = fields.iter().take(2).any(|f| !f.is_empty() && !f.eq_ignore_ascii_case("PROXY"));
        if unknown || fields.len() > 2 {
            let message = format!(
                "only `PROXY` or nothing may follow the service port (`{}` is ignored)",
                fields.join(":")
            );
            self.warn(port, message);
        }
        if self.protocol == Transport::Udp {
            if fields.iter().any(|f| f.eq_ignore_ascii_case("PROXY")) {
                self.warn(port, "the PROXY protocol applies to TCP services only; ignored".to_owned());
            }
            return (false, false);
        }
        // ingress-nginx honours the second field only when it is the last.
        (is_proxy(0), fields.len() == 2 && is_proxy(1))
    }

    fn invalid(&mut self, port: u16, problem: String) {
        self.report_as(Reason::InvalidStreamService, port, problem);
    }

    fn report_as(&mut self, reason: Reason, port: u16, problem: String) {
        let message = format!("{} port {port}: {problem}; the entry is skipped", self.protocol);
        self.diagnostics.push(Diagnostic::error(self.object.clone(), reason, message));
    }

    fn report(&mut self, message: String) {
        self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::InvalidStreamService, message));
    }

    fn warn(&mut self, port: u16, problem: String) {
        let message = format!("{} port {port}: {problem}", self.protocol);
        self.diagnostics.push(Diagnostic::warning(
            self.object.clone(),
            Reason::InvalidStreamService,
            message,
        ));
    }
}
