//! The ConfigMap named by `--configmap`: ingress-nginx's global settings, same keys, values and
//! defaults (its `internal/ingress/controller/config/config.go`), read into typed values once per
//! translation. Only the OpenTelemetry keys are read so far; every other key is left alone
//! quietly. A value ostium cannot read is reported and keeps its default, as ingress-nginx does.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::{
    AccessLogSettings, GlobalSettings, LogEscape, LogFormat, LogVariable, NamespacedName, Sampler,
    TraceExport,
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
    "disable-access-log",
    "disable-http-access-log",
    "skip-access-log-urls",
    "enable-access-log-for-default-backend",
    "log-format-upstream",
    "log-format-escape-json",
    "log-format-escape-none",
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
        Self { tracing: reader.tracing(), settings: GlobalSettings { access_log: reader.access_log() } }
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

/// The access log keys (ingress-nginx's config.go, and nginx.tmpl's `log_format upstreaminfo`,
/// `map $request_uri $loggable` and `access_log`).
impl Reader<'_> {
    fn access_log(&mut self) -> AccessLogSettings {
        for key in ["access-log-path", "http-access-log-path", "error-log-path", "access-log-params"] {
            if self.value(key).is_some() {
                self.no_effect(key, "the access log goes to stdout and every other log to stderr");
            }
        }
        for key in ["log-format-stream", "stream-access-log-path", "disable-stream-access-log"] {
            if self.value(key).is_some() {
                self.no_effect(key, "TCP and UDP services are not logged");
            }
        }
        if self.flag("enable-auth-access-log") == Some(true) {
            self.no_effect("enable-auth-access-log", "requests to auth services are not logged");
        }
        let escape = if self.flag("log-format-escape-none").unwrap_or(false) {
            LogEscape::None
        } else if self.flag("log-format-escape-json").unwrap_or(false) {
            LogEscape::Json
        } else {
            LogEscape::Default
        };
        let format = self.value("log-format-upstream").and_then(|template| {
            match LogFormat::parse(template, escape) {
                Ok((format, unknown)) => {
                    for variable in unknown {
                        let name = variable.name();
                        let message = match variable {
                            LogVariable::Withheld(_) => format!(
                                "log-format-upstream: ${name} would log credentials; it is logged as missing"
                            ),
                            _ => format!(
                                "log-format-upstream: ${name} is not a variable ostium knows; it is logged as missing"
                            ),
                        };
                        self.diagnostics.push(Diagnostic::warning(
                            self.object.clone(),
                            Reason::UnsupportedSetting,
                            message,
                        ));
                    }
                    Some(Arc::new(format))
                }
                Err(error) => {
                    let expected = format!("an nginx log format ({error})");
                    self.invalid("log-format-upstream", &expected, "ostium's own access log event");
                    None
                }
            }
        });
        let urls = self.value("skip-access-log-urls").unwrap_or_default();
        let urls = urls.split(',').map(str::trim).filter(|url| !url.is_empty());
        let (patterns, urls): (Vec<&str>, Vec<&str>) = urls.partition(|url| url.starts_with('~'));
        if !patterns.is_empty() {
            let why = format!(
                "regular expressions ({}) are not supported; they match nothing",
                patterns.join(", ")
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::UnsupportedSetting,
                format!("skip-access-log-urls: {why}"),
            ));
        }
        let skip_urls = urls.into_iter().map(Box::from).collect();
        let disabled = self.flag("disable-access-log").unwrap_or(false);
        AccessLogSettings {
            disabled: disabled || self.flag("disable-http-access-log").unwrap_or(false),
            skip_urls,
            default_backend: self.flag("enable-access-log-for-default-backend").unwrap_or(false),
            format,
        }
    }

    fn no_effect(&mut self, key: &str, why: &str) {
        let message = format!("{key} has no effect: {why}");
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::UnsupportedSetting, message));
    }
}
