//! The ConfigMap named by `--configmap`: ingress-nginx's global settings, same keys, values and
//! defaults (its `internal/ingress/controller/config/config.go`), read into typed values once per
//! translation. Only the OpenTelemetry and `proxy-stream-*` keys are read so far; every other key
//! is left alone quietly. A value ostium cannot read is reported and keeps its default, as
//! ingress-nginx does.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::{
    ACME_CHALLENGE, AccessLogSettings, BlockPattern, Blocked, CidrSet, ClientAddressing, ClientLimits,
    Compression, Encoding, ForwardedHeaders, GlobalSettings, HeaderBlock, HeaderSettings, HttpsSettings,
    InvalidNetwork, LimitStatuses, LogEscape, LogFormat, LogVariable, MediaTypes, NamespacedName,
    ProxyProtocol, Sampler, ServerTls, SetValue, StreamSettings, TlsVersions, TraceExport, UserAgents,
};
use rustls::NamedGroup;

use crate::annotations::{self, CONFIGMAP_DEFAULTS, GLOBAL_AUTH_KEYS, Risk, header_template, is_header_name};
use crate::configmap_keys::{SettingSupport, setting_support};
use crate::kind::Reference;
use crate::{Diagnostic, ObjectKind, ObjectRef, Objects, Options, Reason};

/// The ConfigMap keys read here (besides the annotation defaults); `configmap_keys` says
/// `Supported` for exactly these.
#[cfg(test)]
pub(crate) const APPLIED_CONFIGMAP_KEYS: &[&str] = &[
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
    "hsts",
    "hsts-max-age",
    "hsts-include-subdomains",
    "hsts-preload",
    "http-redirect-code",
    "no-tls-redirect-locations",
    "ssl-protocols",
    "ssl-ciphers",
    "ssl-ecdh-curve",
    "ssl-session-tickets",
    "ssl-session-cache",
    "limit-req-status-code",
    "limit-conn-status-code",
    "allow-cross-namespace-resources",
    "annotations-risk-level",
    "allow-snippet-annotations",
    "global-auth-url",
    "global-auth-method",
    "global-auth-signin",
    "global-auth-signin-redirect-param",
    "global-auth-response-headers",
    "global-auth-request-redirect",
    "global-auth-cache-key",
    "global-auth-cache-duration",
    "global-auth-always-set-cookie",
    "no-auth-locations",
    "retry-non-idempotent",
    "use-gzip",
    "gzip-level",
    "gzip-min-length",
    "gzip-types",
    "gzip-disable",
    "enable-brotli",
    "brotli-level",
    "brotli-min-length",
    "brotli-types",
    "proxy-stream-timeout",
    "proxy-stream-next-upstream",
    "proxy-stream-next-upstream-timeout",
    "proxy-stream-next-upstream-tries",
    "proxy-stream-responses",
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
    "disable-access-log",
    "disable-http-access-log",
    "skip-access-log-urls",
    "enable-access-log-for-default-backend",
    "log-format-upstream",
    "log-format-escape-json",
    "log-format-escape-none",
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
    "client-header-timeout",
    "client-body-timeout",
    "keep-alive",
    "keep-alive-requests",
    "large-client-header-buffers",
    "http2-max-concurrent-streams",
];

/// The ConfigMap's external auth for every Ingress without its own.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum GlobalAuth {
    /// The `auth-*` annotation values it stands for, checked.
    Checked(BTreeMap<&'static str, String>),
    /// This key makes it unusable: the routes it would guard are denied (503), where
    /// ingress-nginx would serve them without it.
    Unusable(&'static str),
}

/// The global settings, each with ingress-nginx's default when the ConfigMap does not set it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GlobalConfig {
    pub(crate) tracing: TracingConfig,
    /// The settings the proxy applies to every connection and request.
    pub(crate) settings: GlobalSettings,
    /// `ssl-protocols`, `ssl-ciphers`, `ssl-ecdh-curve`, `ssl-session-*`: the handshake
    /// settings of every host (an annotation's win for its hosts).
    pub(crate) server_tls: ServerTls,
    /// `allow-cross-namespace-resources`: annotations may name Secrets and ConfigMaps of other
    /// namespaces (off: an Ingress reads its own namespace's only).
    pub(crate) allow_cross_namespace: bool,
    /// `global-auth-*`: the external auth of every Ingress without its own.
    pub(crate) global_auth: Option<GlobalAuth>,
    /// `no-auth-locations`: routes whose path starts with one of these skip authentication.
    pub(crate) no_auth_locations: Box<[Box<str>]>,
    /// A key that restricts access and cannot be applied (a snippet, ModSecurity): every
    /// route is denied (503).
    pub(crate) denies_every_route: Option<&'static str>,
    /// `retry-non-idempotent`: POST, LOCK and PATCH are tried again like other requests.
    pub(crate) retry_non_idempotent: bool,
    /// `annotations-risk-level`: annotations graded above it deny their routes.
    pub(crate) risk_level: Risk,
    /// `limit-req-status-code`, `limit-conn-status-code`.
    pub(crate) limit_statuses: LimitStatuses,
    /// The values of [`CONFIGMAP_DEFAULTS`] keys, checked: the defaults of the annotations of
    /// the same names.
    pub(crate) annotation_defaults: BTreeMap<&'static str, String>,
    /// `global-allowed-response-headers`: the header names a `custom-headers` ConfigMap may set.
    pub(crate) allowed_response_headers: Box<[Box<str>]>,
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

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            tracing: TracingConfig::default(),
            settings: GlobalSettings::default(),
            server_tls: ServerTls::default(),
            allow_cross_namespace: false,
            global_auth: None,
            no_auth_locations: Box::new([ACME_CHALLENGE.into()]),
            denies_every_route: None,
            retry_non_idempotent: false,
            risk_level: Risk::High,
            limit_statuses: LimitStatuses::default(),
            annotation_defaults: BTreeMap::new(),
            allowed_response_headers: Box::new([]),
            source_ranges: SourceRanges::default(),
        }
    }
}

impl GlobalConfig {
    /// The settings of the ConfigMap `key` (the defaults when there is none).
    pub(crate) fn new(objects: &Objects, options: &Options, diagnostics: &mut Vec<Diagnostic>) -> Self {
        let Some(key) = options.configmap.as_ref() else { return Self::default() };
        let object = ObjectRef::new(ObjectKind::ConfigMap, Some(&key.namespace), &key.name);
        let Some(config_map) = objects.config_maps.get(key) else {
            let message = "named by --configmap and does not exist; every setting keeps its default";
            diagnostics.push(Diagnostic::warning(object, Reason::MissingConfigMap, message));
            return Self::default();
        };
        let defaults = CONFIGMAP_DEFAULTS
            .iter()
            .filter_map(|key| Some((*key, config_map.data.as_ref()?.get(*key)?.clone())))
            .collect();
        let annotation_defaults =
            annotations::annotation_defaults(&object, defaults, objects, options, diagnostics);
        let mut reader = Reader { object, config_map, diagnostics };
        let (headers, allowed_response_headers) = reader.headers(objects);
        let settings = GlobalSettings {
            https: reader.https(),
            compression: reader.compression(),
            stream: reader.stream(),
            headers,
            access_log: reader.access_log(),
            client_address: reader.client_address(),
            client_limits: reader.client_limits(),
        };
        let server_tls = reader.server_tls(options);
        let limit_statuses = LimitStatuses {
            requests: reader.status("limit-req-status-code", 503),
            connections: reader.status("limit-conn-status-code", 503),
        };
        let denies_every_route = reader.report_keys();
        let retry_non_idempotent = reader.flag("retry-non-idempotent").unwrap_or(false);
        let allow_cross_namespace = reader.flag("allow-cross-namespace-resources").unwrap_or(false);
        let global_auth = reader.global_auth(objects, options);
        let no_auth_locations = match reader.value("no-auth-locations") {
            None => Box::new([ACME_CHALLENGE.into()]) as Box<[Box<str>]>,
            Some(list) => list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(Into::into).collect(),
        };
        let risk_level = reader.value("annotations-risk-level").map_or(Risk::High, Risk::from_setting);
        if reader.flag("allow-snippet-annotations") == Some(true) {
            let message = "allow-snippet-annotations: ostium never interprets configuration snippets, whatever this says; Ingresses with snippets keep their routes denied (503)";
            reader.diagnostics.push(Diagnostic::warning(
                reader.object.clone(),
                Reason::UnsupportedSetting,
                message,
            ));
        }
        Self {
            tracing: reader.tracing(),
            settings,
            server_tls,
            allow_cross_namespace,
            global_auth,
            no_auth_locations,
            denies_every_route,
            retry_non_idempotent,
            risk_level,
            limit_statuses,
            annotation_defaults,
            allowed_response_headers,
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

    /// An HTTP status from 400 to 599 (nginx's `limit_req_status` range), else `default`.
    fn status(&mut self, key: &str, default: u16) -> u16 {
        match self.value(key).map(|code| code.trim().parse::<u16>()) {
            None => default,
            Some(Ok(code)) if (400..=599).contains(&code) => code,
            Some(_) => {
                self.invalid(key, "a status from 400 to 599", &default.to_string());
                default
            }
        }
    }

    fn invalid(&mut self, key: &str, expected: &str, default: &str) {
        let message = format!("{key}: expected {expected}; {default} is used");
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidSetting, message));
    }
}

/// HTTPS redirects and HSTS (ingress-nginx's `lua_ingress.lua` `redirect_to_https` and
/// `header`, and `template/configmap.go` for `http-redirect-code`).
impl Reader<'_> {
    fn https(&mut self) -> HttpsSettings {
        let defaults = HttpsSettings::default();
        let redirect_code = match self.value("http-redirect-code").map(|code| code.trim().parse::<u16>()) {
            None => defaults.redirect_code,
            Some(Ok(code @ (301 | 302 | 307 | 308))) => code,
            Some(_) => {
                self.invalid("http-redirect-code", "301, 302, 307 or 308", "308");
                defaults.redirect_code
            }
        };
        let no_redirect_locations = match self.value("no-tls-redirect-locations") {
            None => defaults.no_redirect_locations,
            Some(list) => list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(Into::into).collect(),
        };
        let max_age = match self.value("hsts-max-age").map(str::trim) {
            None => "31536000",
            Some(age) if !age.is_empty() && age.bytes().all(|b| b.is_ascii_digit()) => age,
            Some(_) => {
                self.invalid("hsts-max-age", "a whole number of seconds", "31536000");
                "31536000"
            }
        };
        let mut hsts = format!("max-age={max_age}");
        if self.flag("hsts-include-subdomains").unwrap_or(true) {
            hsts.push_str("; includeSubDomains");
        }
        if self.flag("hsts-preload").unwrap_or(false) {
            hsts.push_str("; preload");
        }
        let hsts = self
            .flag("hsts")
            .unwrap_or(true)
            .then(|| HeaderValue::try_from(hsts).expect("digits and fixed text"));
        HttpsSettings { redirect_code, no_redirect_locations, hsts }
    }
}

/// The TLS listener's handshake (nginx's `ssl_*` directives at the http level, config.go's
/// defaults: TLS 1.2 and 1.3, curves `auto`, no session tickets, a session cache).
impl Reader<'_> {
    fn server_tls(&mut self, options: &Options) -> ServerTls {
        let provider = &options.crypto_provider;
        let tls12_cipher_suites = self
            .value("ssl-ciphers")
            .and_then(|value| annotations::configmap_ciphers(&self.object, value, self.diagnostics))
            .map(|names| {
                let offered =
                    |name| provider.cipher_suites.iter().find(|suite| suite.suite() == name).copied();
                names.into_iter().filter_map(offered).collect::<Arc<[_]>>()
            })
            .filter(|suites| !suites.is_empty());
        let kx_groups = self.kx_groups(options);
        ServerTls {
            tls12_cipher_suites,
            prefer_server_ciphers: None,
            versions: self.versions(),
            kx_groups,
            session_tickets: self.flag("ssl-session-tickets").filter(|on| *on),
            session_cache: self.flag("ssl-session-cache").filter(|on| !on),
        }
    }

    /// `ssl-protocols`: of OpenSSL's names, rustls speaks TLSv1.2 and TLSv1.3 only.
    fn versions(&mut self) -> Option<TlsVersions> {
        let value = self.value("ssl-protocols")?;
        let (mut tls12, mut tls13, mut older) = (false, false, Vec::new());
        for name in value.split_whitespace() {
            match name {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => older.push(name),
                _ => {
                    self.invalid(
                        "ssl-protocols",
                        "TLS versions such as `TLSv1.2 TLSv1.3`",
                        "TLSv1.2 TLSv1.3",
                    );
                    return None;
                }
            }
        }
        if !older.is_empty() {
            let message = format!(
                "ssl-protocols: {} cannot be offered (ostium speaks TLS 1.2 and 1.3 only) and were left out",
                older.join(", ")
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::UnsupportedSetting,
                message,
            ));
        }
        match (tls12, tls13) {
            (true, true) => Some(TlsVersions::Both),
            (true, false) => Some(TlsVersions::Tls12),
            (false, true) => Some(TlsVersions::Tls13),
            (false, false) => {
                self.invalid("ssl-protocols", "TLSv1.2, TLSv1.3 or both", "TLSv1.2 TLSv1.3");
                None
            }
        }
    }

    /// `ssl-ecdh-curve`: `auto`, or OpenSSL's curve names separated by `:`.
    fn kx_groups(&mut self, options: &Options) -> Option<Arc<[NamedGroup]>> {
        let value = self.value("ssl-ecdh-curve")?.trim();
        if value.is_empty() || value == "auto" {
            return None;
        }
        let offered = &options.crypto_provider.kx_groups;
        let mut groups = Vec::new();
        for name in value.split(':') {
            let group = match name {
                "X25519" | "x25519" => NamedGroup::X25519,
                "prime256v1" | "P-256" | "secp256r1" => NamedGroup::secp256r1,
                "secp384r1" | "P-384" => NamedGroup::secp384r1,
                "secp521r1" | "P-521" => NamedGroup::secp521r1,
                "X448" | "x448" => NamedGroup::X448,
                "X25519MLKEM768" => NamedGroup::X25519MLKEM768,
                _ => {
                    self.invalid("ssl-ecdh-curve", "auto or curve names such as X25519:prime256v1", "auto");
                    return None;
                }
            };
            if offered.iter().any(|kx| kx.name() == group) {
                groups.push(group);
            } else {
                let message = format!("ssl-ecdh-curve: {name} is not offered by ostium and was left out");
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::UnsupportedSetting,
                    message,
                ));
            }
        }
        if groups.is_empty() {
            self.invalid(
                "ssl-ecdh-curve",
                "at least one curve ostium offers (X25519, prime256v1, secp384r1)",
                "auto",
            );
            return None;
        }
        Some(groups.into())
    }
}

/// `global-auth-*` (ingress-nginx's template/configmap.go, nginx.tmpl's shouldApplyGlobalAuth).
impl Reader<'_> {
    fn global_auth(&mut self, objects: &Objects, options: &Options) -> Option<GlobalAuth> {
        let url = self.value("global-auth-url").filter(|url| !url.trim().is_empty())?;
        if self.value("global-auth-snippet").is_some_and(|snippet| !snippet.trim().is_empty()) {
            let message = "global-auth-snippet is a configuration snippet, never interpreted; the routes global auth guards are refused (503)";
            self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::RefusedAnnotation, message));
            return Some(GlobalAuth::Unusable("global-auth-snippet"));
        }
        let mut values: BTreeMap<&'static str, String> = GLOBAL_AUTH_KEYS
            .iter()
            .filter_map(|(global, name)| Some((*name, self.value(global)?.to_owned())))
            .collect();
        values.insert("auth-url", url.to_owned());
        if annotations::check_global_auth(&self.object, &values, objects, options, self.diagnostics) {
            Some(GlobalAuth::Checked(values))
        } else {
            let message = "global-auth-url: the global external auth cannot be applied; the routes it guards are refused (503)";
            self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::InvalidSetting, message));
            Some(GlobalAuth::Unusable("global-auth-url"))
        }
    }
}

/// What the ConfigMap sets and ostium does not apply.
impl Reader<'_> {
    /// Reports each key that is not applied, once; the snippet or WAF key that denies every
    /// route, if one is set.
    fn report_keys(&mut self) -> Option<&'static str> {
        let mut denies = None;
        let keys: Vec<&str> = self.config_map.data.iter().flatten().map(|(key, _)| key.as_str()).collect();
        for key in keys {
            let (severity, reason, message) = match setting_support(key) {
                SettingSupport::Supported => continue,
                SettingSupport::NoEffect => (
                    false,
                    Reason::NoEffectSetting,
                    format!("{key} has no effect in ostium (docs/configmap.md)"),
                ),
                SettingSupport::NotSupported => {
                    (false, Reason::UnsupportedSetting, format!("{key} is not supported and was ignored"))
                }
                SettingSupport::Unknown { did_you_mean } => {
                    let hint = did_you_mean.map(|k| format!(" (did you mean {k}?)")).unwrap_or_default();
                    (
                        false,
                        Reason::UnknownSetting,
                        format!("{key} is not an ingress-nginx ConfigMap key{hint}; it was ignored"),
                    )
                }
                SettingSupport::Refused => match key {
                    "http-snippet" | "server-snippet" | "location-snippet" => {
                        denies = denies.or(DENYING.iter().copied().find(|k| *k == key));
                        (
                            true,
                            Reason::RefusedAnnotation,
                            format!(
                                "{key} is a configuration snippet, never interpreted; every route is refused (503)"
                            ),
                        )
                    }
                    "enable-modsecurity" | "enable-owasp-modsecurity-crs" => {
                        if self.flag(key) != Some(true) {
                            continue;
                        }
                        denies = denies.or(DENYING.iter().copied().find(|k| *k == key));
                        (
                            true,
                            Reason::UnsupportedAccessControl,
                            format!(
                                "{key}: ostium has no WAF; every route is refused (503) rather than served unprotected"
                            ),
                        )
                    }
                    // global-auth-snippet is judged with the global auth.
                    "global-auth-snippet" => continue,
                    _ => (
                        true,
                        Reason::RefusedAnnotation,
                        format!("{key} is a configuration snippet, never interpreted; it was ignored"),
                    ),
                },
            };
            let object = self.object.clone();
            self.diagnostics.push(if severity {
                Diagnostic::error(object, reason, message)
            } else {
                Diagnostic::warning(object, reason, message)
            });
        }
        denies
    }
}

/// The refused keys that deny every route when set.
const DENYING: &[&str] = &[
    "http-snippet",
    "server-snippet",
    "location-snippet",
    "enable-modsecurity",
    "enable-owasp-modsecurity-crs",
];
/// Response compression: the `use-gzip` and `enable-brotli` families (config.go's defaults;
/// nginx.tmpl turns them into `gzip_*` and `brotli_*` directives).
impl Reader<'_> {
    fn compression(&mut self) -> Compression {
        let defaults = Compression::default();
        let gzip = Encoding {
            enabled: self.flag("use-gzip").unwrap_or(defaults.gzip.enabled),
            // nginx's bounds for `gzip_comp_level`.
            level: self.level("gzip-level", 1..=9, defaults.gzip.level),
            min_length: self.length("gzip-min-length", defaults.gzip.min_length),
            types: self.media_types("gzip-types", defaults.gzip.types),
        };
        let brotli = Encoding {
            enabled: self.flag("enable-brotli").unwrap_or(defaults.brotli.enabled),
            // ngx_brotli's bounds for `brotli_comp_level`.
            level: self.level("brotli-level", 0..=11, defaults.brotli.level),
            min_length: self.length("brotli-min-length", defaults.brotli.min_length),
            types: self.media_types("brotli-types", defaults.brotli.types),
        };
        let gzip_disable = match self.value("gzip-disable").filter(|value| !value.is_empty()) {
            None => None,
            Some(value) => match UserAgents::parse(value) {
                Ok(user_agents) => Some(user_agents),
                Err(_) => {
                    self.invalid("gzip-disable", "msie6 or a regular expression", "none");
                    None
                }
            },
        };
        Compression { gzip, gzip_disable, brotli }
    }

    fn level(&mut self, key: &str, bounds: std::ops::RangeInclusive<u32>, default: u32) -> u32 {
        match self.value(key).map(|level| level.trim().parse::<u32>()) {
            None => default,
            Some(Ok(level)) if bounds.contains(&level) => level,
            Some(_) => {
                let expected = format!("a whole number from {} to {}", bounds.start(), bounds.end());
                self.invalid(key, &expected, &default.to_string());
                default
            }
        }
    }

    /// A length in bytes, 0 included.
    fn length(&mut self, key: &str, default: u64) -> u64 {
        match self.value(key).map(|length| length.trim().parse::<u64>()) {
            None => default,
            Some(Ok(length)) => length,
            Some(Err(_)) => {
                self.invalid(key, "a whole number of bytes", &default.to_string());
                default
            }
        }
    }

    fn media_types(&mut self, key: &str, default: MediaTypes) -> MediaTypes {
        let Some(value) = self.value(key) else { return default };
        MediaTypes::parse(value).unwrap_or_else(|| {
            self.invalid(key, "media types separated by spaces", "the default list");
            default
        })
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
        let (user_agents, referers) = (self.block("block-user-agents"), self.block("block-referers"));
        let blocks_unusable = user_agents.is_err() || referers.is_err();
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
            block_user_agents: user_agents.unwrap_or_default(),
            block_referers: referers.unwrap_or_default(),
            blocks_unusable,
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
    /// A block list; `Err` when some entry cannot be applied: the list restricts access, so
    /// every request is then refused (503) rather than let through.
    fn block(&mut self, key: &str) -> Result<Option<HeaderBlock>, ()> {
        let (mut exact, mut patterns) = (Vec::new(), Vec::new());
        let mut unusable = false;
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
                    let message = format!(
                        "{key}: `{entry}` is not a usable regular expression ({why}); every request is refused (503)"
                    );
                    self.diagnostics.push(Diagnostic::error(
                        self.object.clone(),
                        Reason::InvalidSetting,
                        message,
                    ));
                    unusable = true;
                }
            }
        }
        if unusable {
            return Err(());
        }
        if exact.is_empty() && patterns.is_empty() {
            return Ok(None);
        }
        match HeaderBlock::new(exact, patterns) {
            Ok(block) => Ok(Some(block)),
            Err(_) => {
                let message =
                    format!("{key}: the expressions together are too large; every request is refused (503)");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidSetting,
                    message,
                ));
                Err(())
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

/// The access log keys (ingress-nginx's config.go, and nginx.tmpl's `log_format upstreaminfo`,
/// `map $request_uri $loggable` and `access_log`).
impl Reader<'_> {
    fn access_log(&mut self) -> AccessLogSettings {
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

/// Client connections (nginx's `client_header_timeout`, `client_body_timeout`,
/// `keepalive_timeout`, `keepalive_requests`, `large_client_header_buffers` and
/// `http2_max_concurrent_streams`, config.go's defaults).
impl Reader<'_> {
    fn client_limits(&mut self) -> ClientLimits {
        let defaults = ClientLimits::default();
        let seconds = |reader: &mut Self, key: &str, zero: bool| match reader
            .value(key)
            .map(|v| v.trim().parse::<u64>())
        {
            None => None,
            Some(Ok(seconds)) if seconds > 0 || zero => Some(Duration::from_secs(seconds)),
            Some(_) => {
                reader.invalid(key, "a whole number of seconds", "the flag's value");
                None
            }
        };
        let header_timeout = seconds(self, "client-header-timeout", false);
        let body_timeout = seconds(self, "client-body-timeout", false);
        let keepalive_timeout = seconds(self, "keep-alive", true);
        let max_header_bytes = self.value("large-client-header-buffers").and_then(|value| {
            let bytes = header_buffers(value);
            if bytes.is_none() {
                self.invalid(
                    "large-client-header-buffers",
                    "a number and a size such as `4 8k`",
                    "the proxy's 64 KiB",
                );
            }
            bytes
        });
        ClientLimits {
            header_timeout,
            body_timeout,
            keepalive_timeout,
            keepalive_requests: self
                .count("keep-alive-requests", defaults.keepalive_requests as usize)
                .min(u32::MAX as usize) as u32,
            max_header_bytes,
            http2_max_concurrent_streams: self
                .count("http2-max-concurrent-streams", defaults.http2_max_concurrent_streams as usize)
                .min(u32::MAX as usize) as u32,
        }
    }
}

/// `large-client-header-buffers`: `<number> <size>` (`4 8k`), the size in bytes, `k` or `m`; the
/// product, raised to 8 KiB (the HTTP/1 parser's least buffer) and at most 1 MiB.
fn header_buffers(value: &str) -> Option<usize> {
    let mut parts = value.split_whitespace();
    let number: usize = parts.next()?.parse().ok()?;
    let size = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (digits, unit) = match size.char_indices().last()? {
        (at, 'k' | 'K') => (&size[..at], 1024),
        (at, 'm' | 'M') => (&size[..at], 1024 * 1024),
        _ => (size, 1),
    };
    let bytes = number.checked_mul(digits.parse::<usize>().ok()?.checked_mul(unit)?)?;
    (1..=1024 * 1024).contains(&bytes).then_some(bytes.max(8 * 1024))
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
