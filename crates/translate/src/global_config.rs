//! The ConfigMap named by `--configmap`: ingress-nginx's global settings, same keys, values and
//! defaults (its `internal/ingress/controller/config/config.go`), read into typed values once per
//! translation. Only the OpenTelemetry keys are read so far; every other key is left alone
//! quietly. A value ostium cannot read is reported and keeps its default, as ingress-nginx does.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::{
    Blocked, CidrSet, ClientAddressing, ForwardedHeaders, GlobalSettings, InvalidNetwork, NamespacedName,
    ProxyProtocol, Sampler, TraceExport,
};

use crate::{Diagnostic, ObjectKind, ObjectRef, Objects, Reason};

/// The ConfigMap keys ostium applies; any other key keeps ostium's default.
pub const APPLIED_CONFIGMAP_KEYS: &[&str] = &[
    "enable-opentelemetry",
    "opentelemetry-trust-incoming-span",
    "opentelemetry-operation-name",
    "otlp-collector-host",
    "otlp-collector-port",
    "otel-service-name",
    "otel-sampler",
    "otel-sampler-ratio",
    "otel-sampler-parent-based",
    "otel-max-queuesize",
    "otel-schedule-delay-millis",
    "otel-max-export-batch-size",
    "use-forwarded-headers",
    "enable-real-ip",
    "forwarded-for-header",
    "compute-full-forwarded-for",
    "proxy-real-ip-cidr",
    "use-proxy-protocol",
    "proxy-protocol-header-timeout",
    "whitelist-source-range",
    "denylist-source-range",
    "block-cidrs",
];

/// The global settings, each with ingress-nginx's default when the ConfigMap does not set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GlobalConfig {
    pub(crate) tracing: TracingConfig,
    /// The settings the proxy applies to every connection and request.
    pub(crate) settings: GlobalSettings,
    /// `whitelist-source-range` and `denylist-source-range`: the defaults of the annotations.
    pub(crate) source_ranges: SourceRanges,
}

/// The ConfigMap's `whitelist-source-range` and `denylist-source-range`: the source ranges of
/// every Ingress route whose own annotation does not set them (ingress-nginx's ipallowlist and
/// ipdenylist parsers take them as the default of `whitelist-source-range` and
/// `denylist-source-range`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SourceRanges {
    pub(crate) allow: Option<SourceRange>,
    pub(crate) deny: Option<SourceRange>,
}

/// A global source range list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SourceRange {
    Networks(CidrSet),
    /// It does not parse: the routes it would restrict are denied (503).
    Invalid,
}

/// The OpenTelemetry keys (docs/user-guide/third-party-addons/opentelemetry.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TracingConfig {
    /// `enable-opentelemetry`: every route is traced unless its Ingress turns it off.
    pub(crate) enabled: bool,
    /// `opentelemetry-trust-incoming-span` (default true).
    pub(crate) trust_incoming_span: bool,
    /// `opentelemetry-operation-name`: the spans' name unless an Ingress gives its own.
    pub(crate) operation_name: Option<Arc<str>>,
    /// `otlp-collector-host` and the `otel-*` keys; `None` without a collector host, when no
    /// span can go anywhere.
    pub(crate) export: Option<Arc<TraceExport>>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { enabled: false, trust_incoming_span: true, operation_name: None, export: None }
    }
}

impl GlobalConfig {
    /// The settings of the ConfigMap `key` (the defaults when there is none).
    pub(crate) fn new(
        key: Option<&NamespacedName>,
        objects: &Objects,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Self {
        let Some(key) = key else { return Self::default() };
        let object = ObjectRef::new(ObjectKind::ConfigMap, Some(&key.namespace), &key.name);
        let Some(config_map) = objects.config_maps.get(key) else {
            let message = "named by --configmap and does not exist; every setting keeps its default";
            diagnostics.push(Diagnostic::warning(object, Reason::MissingConfigMap, message));
            return Self::default();
        };
        let mut reader = Reader { object, config_map, diagnostics };
        Self {
            tracing: reader.tracing(),
            settings: GlobalSettings { client_address: reader.client_address() },
            source_ranges: reader.source_ranges(),
        }
    }
}

/// Reads the keys of one ConfigMap, reporting values it cannot read.
struct Reader<'a> {
    object: ObjectRef,
    config_map: &'a ConfigMap,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl<'a> Reader<'a> {
    fn tracing(&mut self) -> TracingConfig {
        let defaults = TracingConfig::default();
        if self.value("opentelemetry-config").is_some() {
            let message = "opentelemetry-config (a file of the nginx module) is not supported; the otel-* keys set the same";
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::UnsupportedSetting,
                message,
            ));
        }
        let operation_name = self.value("opentelemetry-operation-name").filter(|name| !name.is_empty());
        // ingress-nginx passes it to nginx, which expands variables; ostium takes text only.
        let operation_name = match operation_name {
            Some(name) if name.contains('$') => {
                self.invalid("opentelemetry-operation-name", "text without nginx variables", "HTTP <method>");
                None
            }
            name => name.map(Arc::from),
        };
        TracingConfig {
            enabled: self.flag("enable-opentelemetry").unwrap_or(defaults.enabled),
            trust_incoming_span: self
                .flag("opentelemetry-trust-incoming-span")
                .unwrap_or(defaults.trust_incoming_span),
            operation_name,
            export: self.trace_export().map(Arc::new),
        }
    }

    fn trace_export(&mut self) -> Option<TraceExport> {
        let host = self.value("otlp-collector-host").map(str::trim).filter(|host| !host.is_empty())?;
        let port = match self.value("otlp-collector-port").map(|port| port.trim().parse::<u16>()) {
            None => 4317,
            Some(Ok(port)) if port > 0 => port,
            Some(_) => {
                self.invalid("otlp-collector-port", "a port number", "4317");
                4317
            }
        };
        let Ok(collector) = format!("{host}:{port}").parse::<Authority>() else {
            self.invalid("otlp-collector-host", "a host name or address", "none: no spans are exported");
            return None;
        };
        let service_name = self.value("otel-service-name").filter(|name| !name.is_empty()).unwrap_or("nginx");
        let ratio = match self.value("otel-sampler-ratio").map(|ratio| ratio.trim().parse::<f64>()) {
            None => 0.01,
            Some(Ok(ratio)) if (0.0..=1.0).contains(&ratio) => ratio,
            Some(_) => {
                self.invalid("otel-sampler-ratio", "a number from 0 to 1", "0.01");
                0.01
            }
        };
        let sampler = match self.value("otel-sampler") {
            None | Some("AlwaysOn") => Sampler::AlwaysOn,
            Some("AlwaysOff") => Sampler::AlwaysOff,
            Some("TraceIdRatioBased") => Sampler::trace_id_ratio(ratio),
            Some(_) => {
                self.invalid("otel-sampler", "AlwaysOn, AlwaysOff or TraceIdRatioBased", "AlwaysOn");
                Sampler::AlwaysOn
            }
        };
        let max_queue_size = self.count("otel-max-queuesize", 2048);
        let max_export_batch_size = self.count("otel-max-export-batch-size", 512);
        let max_export_batch_size = if max_export_batch_size > max_queue_size {
            self.invalid("otel-max-export-batch-size", "at most otel-max-queuesize", "otel-max-queuesize");
            max_queue_size
        } else {
            max_export_batch_size
        };
        Some(TraceExport {
            collector,
            service_name: service_name.into(),
            sampler,
            parent_based: self.flag("otel-sampler-parent-based").unwrap_or(true),
            max_queue_size,
            schedule_delay: Duration::from_millis(self.count("otel-schedule-delay-millis", 5000) as u64),
            max_export_batch_size,
        })
    }

    fn value(&self, key: &str) -> Option<&'a str> {
        self.config_map.data.as_ref()?.get(key).map(String::as_str)
    }

    /// Booleans as ingress-nginx reads them (Go's `strconv.ParseBool`).
    fn flag(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => {
                self.invalid(key, "true or false", "its default");
                None
            }
        }
    }

    /// A positive whole number, else `default`.
    fn count(&mut self, key: &str, default: usize) -> usize {
        match self.value(key).map(|count| count.trim().parse::<usize>()) {
            None => default,
            Some(Ok(count)) if count > 0 => count,
            Some(_) => {
                self.invalid(key, "a positive whole number", &default.to_string());
                default
            }
        }
    }

    fn invalid(&mut self, key: &str, expected: &str, default: &str) {
        let message = format!("{key}: expected {expected}; {default} is used");
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidSetting, message));
    }
}

/// The client address keys (ingress-nginx's config.go defaults, nginx.tmpl's realip settings)
/// and the global address lists.
impl Reader<'_> {
    fn client_address(&mut self) -> ClientAddressing {
        let defaults = ClientAddressing::default();
        let use_forwarded_headers = self.flag("use-forwarded-headers").unwrap_or(false);
        let enable_real_ip = self.flag("enable-real-ip").unwrap_or(false);
        let full_forwarded_for = self.flag("compute-full-forwarded-for").unwrap_or(false);
        let client_header = match self.value("forwarded-for-header").map(str::trim) {
            None => HeaderName::from_static("x-forwarded-for"),
            Some(name) => HeaderName::try_from(name).unwrap_or_else(|_| {
                self.invalid("forwarded-for-header", "a header name", "X-Forwarded-For");
                HeaderName::from_static("x-forwarded-for")
            }),
        };
        let proxy_protocol = self.flag("use-proxy-protocol").unwrap_or(false);
        // nginx.tmpl's `real_ip_header`: the forwarded-for header with use-forwarded-headers, or
        // with enable-real-ip unless the PROXY header names the client (`proxy_protocol`).
        let reads_header = use_forwarded_headers || (enable_real_ip && !proxy_protocol);
        let forwarded = reads_header.then(|| ForwardedHeaders {
            client_header,
            scheme_and_host: use_forwarded_headers,
            // nginx.tmpl: `{{ if and $cfg.UseForwardedHeaders $cfg.ComputeFullForwardedFor }}`.
            full_forwarded_for: use_forwarded_headers && full_forwarded_for,
        });
        let header_timeout = match self.value("proxy-protocol-header-timeout").map(go_duration) {
            None => PROXY_PROTOCOL_HEADER_TIMEOUT,
            Some(Some(timeout)) => timeout,
            Some(None) => {
                self.invalid("proxy-protocol-header-timeout", "a duration such as 5s", "5s");
                PROXY_PROTOCOL_HEADER_TIMEOUT
            }
        };
        let trusted = match self.value("proxy-real-ip-cidr").map(networks) {
            None => defaults.trusted,
            Some(Ok(trusted)) => trusted,
            Some(Err(error)) => {
                let message = format!("proxy-real-ip-cidr: {error}; no peer is trusted to name the client");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidSetting,
                    message,
                ));
                None
            }
        };
        let uses_peers_word = forwarded.is_some() || proxy_protocol;
        if uses_peers_word && self.value("proxy-real-ip-cidr").is_none() {
            let message = "proxy-real-ip-cidr is not set: as with ingress-nginx, every IPv4 peer is trusted to name the client (0.0.0.0/0); set it to the addresses of the proxies in front";
            self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidSetting, message));
        }
        let blocked = match self.value("block-cidrs").map(networks) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(networks))) => Some(Blocked::Networks(networks)),
            Some(Err(error)) => {
                let message = format!("block-cidrs: {error}; every request is refused (503)");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidSetting,
                    message,
                ));
                Some(Blocked::Unreadable)
            }
        };
        ClientAddressing {
            trusted,
            proxy_protocol: proxy_protocol.then_some(ProxyProtocol { header_timeout }),
            forwarded,
            blocked,
        }
    }

    fn source_ranges(&mut self) -> SourceRanges {
        SourceRanges {
            allow: self.source_range("whitelist-source-range"),
            deny: self.source_range("denylist-source-range"),
        }
    }

    fn source_range(&mut self, key: &str) -> Option<SourceRange> {
        match networks(self.value(key)?) {
            Ok(networks) => networks.map(SourceRange::Networks),
            Err(error) => {
                let message = format!(
                    "{key}: {error}; every request to a route without its own {key} annotation is refused (503)"
                );
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidSetting,
                    message,
                ));
                Some(SourceRange::Invalid)
            }
        }
    }
}

/// A ConfigMap list of addresses and networks, as configmap.go's `splitAndTrimSpace` splits it
/// (empty entries dropped); `None` when it has none.
fn networks(list: &str) -> Result<Option<CidrSet>, InvalidNetwork> {
    let entries: Vec<&str> = list.split(',').map(str::trim).filter(|entry| !entry.is_empty()).collect();
    match entries.is_empty() {
        true => Ok(None),
        false => entries.join(",").parse().map(Some),
    }
}

/// ingress-nginx's default `proxy-protocol-header-timeout`.
const PROXY_PROTOCOL_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A duration as Go's `time.ParseDuration` reads it (`5s`, `1.5s`, `1m30s`, `250ms`, `0`); not
/// negative.
fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * seconds;
        rest = after;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod client_address_tests {
    use super::*;

    #[test]
    fn durations_are_read_as_go_reads_them() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("5s", Some(ms(5000))),
            ("1.5s", Some(ms(1500))),
            ("1m30s", Some(ms(90_000))),
            ("250ms", Some(ms(250))),
            ("0", Some(Duration::ZERO)),
            ("2h", Some(ms(7_200_000))),
            ("5", None),
            ("", None),
            ("s", None),
            ("-5s", None),
            ("5 s", None),
            ("1..5s", None),
            ("5sec", None),
        ] {
            assert_eq!(go_duration(text), expected, "{text:?}");
        }
    }
}
