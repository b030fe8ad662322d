//! The ConfigMap named by `--configmap`: ingress-nginx's global settings, same keys, values and
//! defaults (its `internal/ingress/controller/config/config.go`), read into typed values once per
//! translation. Only the OpenTelemetry and `proxy-stream-*` keys are read so far; every other key
//! is left alone quietly. A value ostium cannot read is reported and keeps its default, as
//! ingress-nginx does.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::{GlobalSettings, NamespacedName, Sampler, StreamSettings, TraceExport};

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
    "proxy-stream-timeout",
    "proxy-stream-next-upstream",
    "proxy-stream-next-upstream-timeout",
    "proxy-stream-next-upstream-tries",
    "proxy-stream-responses",
];

/// The global settings, each with ingress-nginx's default when the ConfigMap does not set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GlobalConfig {
    pub(crate) tracing: TracingConfig,
    /// The settings the proxy applies to every connection and request.
    pub(crate) settings: GlobalSettings,
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
        Self { tracing: reader.tracing(), settings: GlobalSettings { stream: reader.stream() } }
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

/// TCP and UDP services: the `proxy-stream-*` keys.
impl Reader<'_> {
    fn stream(&mut self) -> StreamSettings {
        let defaults = StreamSettings::default();
        let timeout = match self.nginx_duration("proxy-stream-timeout", "600s") {
            Some(timeout) if timeout.is_zero() => {
                self.invalid("proxy-stream-timeout", "a time longer than 0", "600s");
                None
            }
            timeout => timeout,
        };
        let next_upstream_timeout = match self.nginx_duration("proxy-stream-next-upstream-timeout", "600s") {
            Some(timeout) => (!timeout.is_zero()).then_some(timeout),
            None => defaults.next_upstream_timeout,
        };
        let next_upstream_tries = match self.value("proxy-stream-next-upstream-tries") {
            None => defaults.next_upstream_tries,
            Some(tries) => match tries.trim().parse::<u32>() {
                Ok(tries) => NonZeroU32::new(tries),
                Err(_) => {
                    self.invalid("proxy-stream-next-upstream-tries", "a whole number (0: no limit)", "3");
                    defaults.next_upstream_tries
                }
            },
        };
        let responses = match self.value("proxy-stream-responses").map(|n| n.trim().parse::<u32>()) {
            None => defaults.responses,
            Some(Ok(responses)) => Some(responses),
            Some(Err(_)) => {
                self.invalid("proxy-stream-responses", "a whole number", "1");
                defaults.responses
            }
        };
        StreamSettings {
            timeout: timeout.unwrap_or(defaults.timeout),
            next_upstream: self.flag("proxy-stream-next-upstream").unwrap_or(defaults.next_upstream),
            next_upstream_timeout,
            next_upstream_tries,
            responses,
        }
    }

    /// An nginx time (`600s`, `10m`, `1h30m`, `500ms`; a bare number is seconds), `None` when
    /// the key is unset or its value is reported as unreadable (`default` is then used).
    fn nginx_duration(&mut self, key: &str, default: &str) -> Option<Duration> {
        let text = self.value(key)?.trim();
        let parsed = parse_nginx_duration(text);
        if parsed.is_none() {
            self.invalid(key, "an nginx time such as 600s, 10m or 1h", default);
        }
        parsed
    }
}

/// nginx's time syntax (`ngx_parse_time`): numbers with units `ms`, `s`, `m`, `h`, `d`, `w`,
/// `M` (30 days), `y` (365 days), largest first, a unit-less number in seconds.
fn parse_nginx_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 8] = [
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("M", 2_592_000_000),
        ("y", 31_536_000_000),
    ];
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut millis = 0u64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, factor) = match UNITS.iter().find(|(unit, _)| rest.starts_with(unit)) {
            Some(&(unit, factor)) => (unit, factor),
            None if rest.is_empty() => ("", 1_000),
            None => return None,
        };
        rest = &rest[unit.len()..];
        millis = millis.checked_add(number.checked_mul(factor)?)?;
    }
    Some(Duration::from_millis(millis))
}
