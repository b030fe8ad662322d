//! The ConfigMap named by `--configmap`: ingress-nginx's global settings, same keys, values and
//! defaults (its `internal/ingress/controller/config/config.go`), read into typed values once per
//! translation. Only the OpenTelemetry keys are read so far; every other key is left alone
//! quietly. A value ostium cannot read is reported and keeps its default, as ingress-nginx does.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::{
    BlockPattern, GlobalSettings, HeaderBlock, HeaderSettings, NamespacedName, Sampler, SetValue, TraceExport,
};

use crate::annotations::{header_template, is_header_name};
use crate::kind::Reference;
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
    "proxy-set-headers",
    "add-headers",
    "hide-headers",
    "server-tokens",
    "enable-underscores-in-headers",
    "ignore-invalid-headers",
    "generate-request-id",
    "proxy-add-original-uri-header",
    "block-user-agents",
    "block-referers",
    "global-allowed-response-headers",
];

/// The global settings, each with ingress-nginx's default when the ConfigMap does not set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GlobalConfig {
    pub(crate) tracing: TracingConfig,
    /// The settings the proxy applies to every connection and request.
    pub(crate) settings: GlobalSettings,
    /// `global-allowed-response-headers`: the header names a `custom-headers` ConfigMap may set.
    pub(crate) allowed_response_headers: Box<[Box<str>]>,
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
        let (headers, allowed_response_headers) = reader.headers(objects);
        Self { tracing: reader.tracing(), settings: GlobalSettings { headers }, allowed_response_headers }
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

/// The ConfigMaps `proxy-set-headers` and `add-headers` name: a change to one is a change of the
/// settings.
pub(crate) fn header_config_maps(config_map: &ConfigMap) -> Vec<Reference> {
    let data = config_map.data.iter().flatten();
    let named = data.filter(|(key, _)| *key == "proxy-set-headers" || *key == "add-headers");
    named
        .filter_map(|(_, value)| config_map_key(value))
        .map(|key| Reference::new(ObjectKind::ConfigMap, &key))
        .collect()
}

/// `namespace/name`, the form ingress-nginx looks these ConfigMaps up by (any namespace).
fn config_map_key(value: &str) -> Option<NamespacedName> {
    let (namespace, name) = value.trim().split_once('/')?;
    let valid = |part: &str| !part.is_empty() && !part.contains('/');
    (valid(namespace) && valid(name)).then(|| NamespacedName::new(namespace, name))
}

/// Headers that frame a message or its connection: never set nor hidden from a ConfigMap.
const FRAMING_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The header keys: nginx.tmpl's `proxy_set_header` and `more_set_headers` loops,
/// `proxy_hide_header`, `server_tokens`, `underscores_in_headers`, `ignore_invalid_headers`,
/// the `$req_id` map, `X-Original-URI` and the `$block_ua`/`$block_ref` maps; the lists split
/// at `,` and trimmed as configmap.go's `splitAndTrimSpace`.
impl Reader<'_> {
    fn headers(&mut self, objects: &Objects) -> (HeaderSettings, Box<[Box<str>]>) {
        let defaults = HeaderSettings::default();
        let settings = HeaderSettings {
            proxy_set_headers: self.header_config_map("proxy-set-headers", objects, set_value),
            add_headers: self.header_config_map("add-headers", objects, text_value),
            hide_headers: self.hide_headers(),
            server_tokens: self.flag("server-tokens").unwrap_or(defaults.server_tokens),
            underscores_in_headers: self
                .flag("enable-underscores-in-headers")
                .unwrap_or(defaults.underscores_in_headers),
            ignore_invalid_headers: self
                .flag("ignore-invalid-headers")
                .unwrap_or(defaults.ignore_invalid_headers),
            generate_request_id: self.flag("generate-request-id").unwrap_or(defaults.generate_request_id),
            original_uri_header: self
                .flag("proxy-add-original-uri-header")
                .unwrap_or(defaults.original_uri_header),
            block_user_agents: self.block("block-user-agents"),
            block_referers: self.block("block-referers"),
        };
        (settings, self.allowed_response_headers())
    }

    /// The data of the ConfigMap `key` names, as headers, each value read by `read`. Names nginx
    /// would not read and headers that frame the message are skipped; so is a value `read`
    /// refuses. An empty value removes the header (nginx sends no header with an empty value).
    fn header_config_map<T>(
        &mut self,
        key: &str,
        objects: &Objects,
        read: impl Fn(&str) -> Result<T, String>,
    ) -> Box<[(HeaderName, T)]> {
        let Some(value) = self.value(key).map(str::trim).filter(|value| !value.is_empty()) else {
            return Box::default();
        };
        let Some(name) = config_map_key(value) else {
            self.invalid(key, "a ConfigMap as namespace/name", "none");
            return Box::default();
        };
        let Some(config_map) = objects.config_maps.get(&name) else {
            let message = format!("{key}: ConfigMap {name} does not exist; no headers are set from it");
            self.warn(Reason::MissingConfigMap, message);
            return Box::default();
        };
        let mut headers = Vec::new();
        for (header, value) in config_map.data.iter().flatten() {
            let header_name =
                HeaderName::from_bytes(header.as_bytes()).ok().filter(|_| is_header_name(header));
            let problem = match header_name {
                None => "is not a name of letters, digits, - and _".to_owned(),
                Some(name) if FRAMING_HEADERS.contains(&name.as_str()) => {
                    "frames the message and cannot be set".to_owned()
                }
                Some(name) => match read(value) {
                    Ok(value) => {
                        headers.push((name, value));
                        continue;
                    }
                    Err(why) => why,
                },
            };
            let message = format!("{key}: ConfigMap {name}: header `{header}` {problem}; it is skipped");
            self.warn(Reason::InvalidSetting, message);
        }
        headers.into()
    }

    /// `hide-headers`: endpoint headers not passed to the client.
    fn hide_headers(&mut self) -> Box<[HeaderName]> {
        let mut hidden = Vec::new();
        for header in list(self.value("hide-headers")) {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) if !FRAMING_HEADERS.contains(&name.as_str()) => hidden.push(name),
                _ => {
                    let message = format!(
                        "hide-headers: `{header}` is not a header name that can be hidden; it is skipped"
                    );
                    self.warn(Reason::InvalidSetting, message);
                }
            }
        }
        hidden.into()
    }

    /// `block-user-agents` or `block-referers`: entries of an nginx map, an exact value or, after
    /// `~` (`~*` ignoring case), a regular expression. One that does not compile (Rust `regex`
    /// syntax: no look-around nor back references) or is too large is reported and skipped.
    fn block(&mut self, key: &str) -> Option<HeaderBlock> {
        let (mut exact, mut patterns) = (Vec::new(), Vec::new());
        for entry in list(self.value(key)) {
            let pattern = match entry.strip_prefix("~*") {
                Some(source) => BlockPattern::new(source, true),
                None => match entry.strip_prefix('~') {
                    Some(source) => BlockPattern::new(source, false),
                    None => {
                        // nginx's map reads a leading `\` as an escape of what follows.
                        exact.push(entry.strip_prefix('\\').unwrap_or(entry).to_owned());
                        continue;
                    }
                },
            };
            match pattern {
                Ok(pattern) => patterns.push(pattern),
                Err(why) => {
                    let why = why.lines().last().unwrap_or_default().trim().to_owned();
                    self.warn(
                        Reason::InvalidSetting,
                        format!("{key}: `{entry}` is not a usable regular expression ({why}); it is skipped"),
                    );
                }
            }
        }
        if exact.is_empty() && patterns.is_empty() {
            return None;
        }
        match HeaderBlock::new(exact, patterns) {
            Ok(block) => Some(block),
            Err(_) => {
                self.warn(
                    Reason::InvalidSetting,
                    format!("{key}: the expressions together are too large; nothing is blocked"),
                );
                None
            }
        }
    }

    /// `global-allowed-response-headers`: names ingress-nginx's `headerRegexp` accepts.
    fn allowed_response_headers(&mut self) -> Box<[Box<str>]> {
        let mut allowed = Vec::new();
        for header in list(self.value("global-allowed-response-headers")) {
            match is_header_name(header) {
                true => allowed.push(header.into()),
                false => {
                    let message = format!(
                        "global-allowed-response-headers: `{header}` is not a name of letters, digits, - and _; it is skipped"
                    );
                    self.warn(Reason::InvalidSetting, message);
                }
            }
        }
        allowed.into()
    }

    fn warn(&mut self, reason: Reason, message: String) {
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), reason, message));
    }
}

/// A `proxy-set-headers` value: nginx expands its variables (nginx.tmpl puts it in a quoted
/// `proxy_set_header` argument); ostium fills the few it knows, parsed here once, and refuses
/// the others.
fn set_value(value: &str) -> Result<SetValue, String> {
    let template = header_template(value).map_err(|why| format!("has a value ostium cannot send: {why}"))?;
    match template.as_text().map(HeaderValue::from_str) {
        Some(Ok(text)) => Ok(SetValue::Text(text)),
        Some(Err(_)) => Err("has a value with control characters".to_owned()),
        None => Ok(SetValue::Template(template)),
    }
}

/// An `add-headers` value: text only. nginx would expand `$variables` in it; ostium never
/// does, and does not send such a value as other text either.
fn text_value(value: &str) -> Result<HeaderValue, String> {
    if value.contains('$') {
        return Err("has a value with $ (an nginx variable, not filled in answers)".to_owned());
    }
    HeaderValue::from_str(value).map_err(|_| "has a value with control characters".to_owned())
}

/// A comma-separated list, each entry trimmed, empty ones left out.
fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|entry| !entry.is_empty())
}
