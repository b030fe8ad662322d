//! Every key of ingress-nginx's ConfigMap (its `config.go` and `internal/ingress/defaults`), and
//! what ostium does with it; docs/configmap.md has a row for each. A key the ConfigMap of
//! `--configmap` sets is reported unless it is applied.

/// What ostium does with a ConfigMap key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingSupport {
    /// Read and applied.
    Supported,
    /// Accepted and reported as having no effect: it tunes nginx internals, or ostium does the
    /// same on its own.
    NoEffect,
    /// An ingress-nginx key ostium ignores (reported).
    NotSupported,
    /// A snippet or a WAF switch: never interpreted; some deny every route (docs/configmap.md).
    Refused,
    /// Not an ingress-nginx key; the closest one, when some is close.
    Unknown { did_you_mean: Option<&'static str> },
}

/// What ostium does with a ConfigMap key.
pub fn setting_support(key: &str) -> SettingSupport {
    match KEYS.binary_search_by(|(name, _)| name.cmp(&key)) {
        Ok(index) => KEYS[index].1,
        Err(_) => {
            let limit = if key.len() > 16 { 3 } else { 2 };
            let did_you_mean = KEYS
                .iter()
                .map(|(name, _)| (crate::annotations::edit_distance(key, name), *name))
                .filter(|(distance, _)| *distance <= limit)
                .min()
                .map(|(_, name)| name);
            SettingSupport::Unknown { did_you_mean }
        }
    }
}

/// Every ingress-nginx ConfigMap key, sorted.
const KEYS: &[(&str, SettingSupport)] = &[
    ("access-log-params", SettingSupport::NoEffect),
    ("access-log-path", SettingSupport::NoEffect),
    ("add-headers", SettingSupport::Supported),
    ("allow-backend-server-header", SettingSupport::NotSupported),
    ("allow-cross-namespace-resources", SettingSupport::Supported),
    ("allow-snippet-annotations", SettingSupport::Supported),
    ("annotation-value-word-blocklist", SettingSupport::NotSupported),
    ("annotations-risk-level", SettingSupport::Supported),
    ("app-root", SettingSupport::NoEffect),
    ("bind-address", SettingSupport::NoEffect),
    ("bind-address-ipv4", SettingSupport::NoEffect),
    ("bind-address-ipv6", SettingSupport::NoEffect),
    ("block-cidrs", SettingSupport::Supported),
    ("block-referers", SettingSupport::Supported),
    ("block-user-agents", SettingSupport::Supported),
    ("brotli-level", SettingSupport::Supported),
    ("brotli-min-length", SettingSupport::Supported),
    ("brotli-types", SettingSupport::Supported),
    ("client-body-buffer-size", SettingSupport::Supported),
    ("client-body-timeout", SettingSupport::Supported),
    ("client-header-buffer-size", SettingSupport::NoEffect),
    ("client-header-timeout", SettingSupport::Supported),
    ("compute-full-forwarded-for", SettingSupport::Supported),
    ("custom-http-errors", SettingSupport::Supported),
    ("debug-connections", SettingSupport::NoEffect),
    ("default-type", SettingSupport::NoEffect),
    ("denylist-source-range", SettingSupport::Supported),
    ("disable-access-log", SettingSupport::Supported),
    ("disable-http-access-log", SettingSupport::Supported),
    ("disable-ipv6", SettingSupport::NoEffect),
    ("disable-ipv6-dns", SettingSupport::NoEffect),
    ("disable-proxy-intercept-errors", SettingSupport::Supported),
    ("disable-stream-access-log", SettingSupport::NoEffect),
    ("enable-access-log-for-default-backend", SettingSupport::Supported),
    ("enable-aio-write", SettingSupport::NoEffect),
    ("enable-auth-access-log", SettingSupport::NoEffect),
    ("enable-brotli", SettingSupport::Supported),
    ("enable-modsecurity", SettingSupport::Refused),
    ("enable-multi-accept", SettingSupport::NoEffect),
    ("enable-ocsp", SettingSupport::NotSupported),
    ("enable-opentelemetry", SettingSupport::Supported),
    ("enable-owasp-modsecurity-crs", SettingSupport::Refused),
    ("enable-real-ip", SettingSupport::Supported),
    ("enable-serial-reloads", SettingSupport::NoEffect),
    ("enable-syslog", SettingSupport::NotSupported),
    ("enable-underscores-in-headers", SettingSupport::Supported),
    ("error-log-level", SettingSupport::NoEffect),
    ("error-log-path", SettingSupport::NoEffect),
    ("force-ssl-redirect", SettingSupport::Supported),
    ("forwarded-for-header", SettingSupport::Supported),
    ("forwarded-for-proxy-protocol-header", SettingSupport::NoEffect),
    ("forwarded-host-header", SettingSupport::NotSupported),
    ("generate-request-id", SettingSupport::Supported),
    ("geoip2-autoreload-in-minutes", SettingSupport::NotSupported),
    ("global-allowed-response-headers", SettingSupport::Supported),
    ("global-auth-always-set-cookie", SettingSupport::Supported),
    ("global-auth-cache-duration", SettingSupport::Supported),
    ("global-auth-cache-key", SettingSupport::Supported),
    ("global-auth-method", SettingSupport::Supported),
    ("global-auth-request-redirect", SettingSupport::Supported),
    ("global-auth-response-headers", SettingSupport::Supported),
    ("global-auth-signin", SettingSupport::Supported),
    ("global-auth-signin-redirect-param", SettingSupport::Supported),
    ("global-auth-snippet", SettingSupport::Refused),
    ("global-auth-url", SettingSupport::Supported),
    ("grpc-buffer-size-kb", SettingSupport::NoEffect),
    ("gzip-disable", SettingSupport::Supported),
    ("gzip-level", SettingSupport::Supported),
    ("gzip-min-length", SettingSupport::Supported),
    ("gzip-types", SettingSupport::Supported),
    ("hide-headers", SettingSupport::Supported),
    ("hsts", SettingSupport::Supported),
    ("hsts-include-subdomains", SettingSupport::Supported),
    ("hsts-max-age", SettingSupport::Supported),
    ("hsts-preload", SettingSupport::Supported),
    ("http-access-log-path", SettingSupport::NoEffect),
    ("http-redirect-code", SettingSupport::Supported),
    ("http-snippet", SettingSupport::Refused),
    ("http2-max-concurrent-streams", SettingSupport::Supported),
    ("http2-max-field-size", SettingSupport::NoEffect),
    ("http2-max-header-size", SettingSupport::NoEffect),
    ("http2-max-requests", SettingSupport::NoEffect),
    ("ignore-invalid-headers", SettingSupport::Supported),
    ("jaeger-baggage-header", SettingSupport::NotSupported),
    ("jaeger-collector-host", SettingSupport::NotSupported),
    ("jaeger-collector-port", SettingSupport::NotSupported),
    ("jaeger-debug-header", SettingSupport::NotSupported),
    ("jaeger-endpoint", SettingSupport::NotSupported),
    ("jaeger-propagation-format", SettingSupport::NotSupported),
    ("jaeger-sampler-host", SettingSupport::NotSupported),
    ("jaeger-sampler-param", SettingSupport::NotSupported),
    ("jaeger-sampler-port", SettingSupport::NotSupported),
    ("jaeger-sampler-type", SettingSupport::NotSupported),
    ("jaeger-service-name", SettingSupport::NotSupported),
    ("jaeger-trace-baggage-header-prefix", SettingSupport::NotSupported),
    ("jaeger-trace-context-header-name", SettingSupport::NotSupported),
    ("keep-alive", SettingSupport::Supported),
    ("keep-alive-requests", SettingSupport::Supported),
    ("large-client-header-buffers", SettingSupport::Supported),
    ("limit-conn-status-code", SettingSupport::Supported),
    ("limit-conn-zone-variable", SettingSupport::NoEffect),
    ("limit-rate", SettingSupport::Supported),
    ("limit-rate-after", SettingSupport::Supported),
    ("limit-req-status-code", SettingSupport::Supported),
    ("load-balance", SettingSupport::Supported),
    ("location-snippet", SettingSupport::Refused),
    ("log-format-escape-json", SettingSupport::Supported),
    ("log-format-escape-none", SettingSupport::Supported),
    ("log-format-stream", SettingSupport::NoEffect),
    ("log-format-upstream", SettingSupport::Supported),
    ("lua-shared-dicts", SettingSupport::NoEffect),
    ("main-snippet", SettingSupport::Refused),
    ("map-hash-bucket-size", SettingSupport::NoEffect),
    ("max-worker-connections", SettingSupport::NoEffect),
    ("max-worker-open-files", SettingSupport::NoEffect),
    ("modsecurity-snippet", SettingSupport::Refused),
    ("nginx-status-ipv4-whitelist", SettingSupport::NoEffect),
    ("nginx-status-ipv6-whitelist", SettingSupport::NoEffect),
    ("no-auth-locations", SettingSupport::Supported),
    ("no-tls-redirect-locations", SettingSupport::Supported),
    ("opentelemetry-config", SettingSupport::NotSupported),
    ("opentelemetry-operation-name", SettingSupport::Supported),
    ("opentelemetry-trust-incoming-span", SettingSupport::Supported),
    ("otel-max-export-batch-size", SettingSupport::Supported),
    ("otel-max-queuesize", SettingSupport::Supported),
    ("otel-sampler", SettingSupport::Supported),
    ("otel-sampler-parent-based", SettingSupport::Supported),
    ("otel-sampler-ratio", SettingSupport::Supported),
    ("otel-schedule-delay-millis", SettingSupport::Supported),
    ("otel-service-name", SettingSupport::Supported),
    ("otlp-collector-host", SettingSupport::Supported),
    ("otlp-collector-port", SettingSupport::Supported),
    ("preserve-trailing-slash", SettingSupport::Supported),
    ("proxy-add-original-uri-header", SettingSupport::Supported),
    ("proxy-body-size", SettingSupport::Supported),
    ("proxy-buffer-size", SettingSupport::Supported),
    ("proxy-buffering", SettingSupport::Supported),
    ("proxy-buffers-number", SettingSupport::Supported),
    ("proxy-busy-buffers-size", SettingSupport::Supported),
    ("proxy-connect-timeout", SettingSupport::Supported),
    ("proxy-cookie-domain", SettingSupport::Supported),
    ("proxy-cookie-path", SettingSupport::Supported),
    ("proxy-headers-hash-bucket-size", SettingSupport::NoEffect),
    ("proxy-headers-hash-max-size", SettingSupport::NoEffect),
    ("proxy-http-version", SettingSupport::Supported),
    ("proxy-max-temp-file-size", SettingSupport::Supported),
    ("proxy-next-upstream", SettingSupport::Supported),
    ("proxy-next-upstream-timeout", SettingSupport::Supported),
    ("proxy-next-upstream-tries", SettingSupport::Supported),
    ("proxy-protocol-header-timeout", SettingSupport::Supported),
    ("proxy-read-timeout", SettingSupport::Supported),
    ("proxy-real-ip-cidr", SettingSupport::Supported),
    ("proxy-redirect-from", SettingSupport::Supported),
    ("proxy-redirect-to", SettingSupport::Supported),
    ("proxy-request-buffering", SettingSupport::Supported),
    ("proxy-send-timeout", SettingSupport::Supported),
    ("proxy-set-headers", SettingSupport::Supported),
    ("proxy-ssl-location-only", SettingSupport::NotSupported),
    ("proxy-stream-next-upstream", SettingSupport::Supported),
    ("proxy-stream-next-upstream-timeout", SettingSupport::Supported),
    ("proxy-stream-next-upstream-tries", SettingSupport::Supported),
    ("proxy-stream-responses", SettingSupport::Supported),
    ("proxy-stream-timeout", SettingSupport::Supported),
    ("relative-redirects", SettingSupport::Supported),
    ("retry-non-idempotent", SettingSupport::Supported),
    ("reuse-port", SettingSupport::NoEffect),
    ("server-name-hash-bucket-size", SettingSupport::NoEffect),
    ("server-name-hash-max-size", SettingSupport::NoEffect),
    ("server-snippet", SettingSupport::Refused),
    ("server-tokens", SettingSupport::Supported),
    ("service-upstream", SettingSupport::Supported),
    ("skip-access-log-urls", SettingSupport::Supported),
    ("ssl-buffer-size", SettingSupport::NoEffect),
    ("ssl-ciphers", SettingSupport::Supported),
    ("ssl-dh-param", SettingSupport::NoEffect),
    ("ssl-early-data", SettingSupport::NotSupported),
    ("ssl-ecdh-curve", SettingSupport::Supported),
    ("ssl-protocols", SettingSupport::Supported),
    ("ssl-redirect", SettingSupport::Supported),
    ("ssl-reject-handshake", SettingSupport::NotSupported),
    ("ssl-session-cache", SettingSupport::Supported),
    ("ssl-session-cache-size", SettingSupport::NoEffect),
    ("ssl-session-ticket-key", SettingSupport::NotSupported),
    ("ssl-session-tickets", SettingSupport::Supported),
    ("ssl-session-timeout", SettingSupport::NoEffect),
    ("stream-access-log-path", SettingSupport::NoEffect),
    ("stream-snippet", SettingSupport::Refused),
    ("strict-validate-path-type", SettingSupport::NoEffect),
    ("syslog-host", SettingSupport::NotSupported),
    ("syslog-port", SettingSupport::NotSupported),
    ("upstream-hash-by", SettingSupport::NoEffect),
    ("upstream-hash-by-subset", SettingSupport::NoEffect),
    ("upstream-hash-by-subset-size", SettingSupport::NoEffect),
    ("upstream-keepalive-connections", SettingSupport::NotSupported),
    ("upstream-keepalive-requests", SettingSupport::NotSupported),
    ("upstream-keepalive-time", SettingSupport::NotSupported),
    ("upstream-keepalive-timeout", SettingSupport::NotSupported),
    ("use-forwarded-headers", SettingSupport::Supported),
    ("use-geoip", SettingSupport::NotSupported),
    ("use-geoip2", SettingSupport::NotSupported),
    ("use-gzip", SettingSupport::Supported),
    ("use-http2", SettingSupport::NotSupported),
    ("use-port-in-redirects", SettingSupport::Supported),
    ("use-proxy-protocol", SettingSupport::Supported),
    ("variables-hash-bucket-size", SettingSupport::NoEffect),
    ("variables-hash-max-size", SettingSupport::NoEffect),
    ("whitelist-source-range", SettingSupport::Supported),
    ("worker-cpu-affinity", SettingSupport::NoEffect),
    ("worker-processes", SettingSupport::NoEffect),
    ("worker-shutdown-timeout", SettingSupport::NoEffect),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::CONFIGMAP_DEFAULTS;
    use crate::global_config::APPLIED_CONFIGMAP_KEYS;

    #[test]
    fn the_table_is_sorted_and_says_supported_for_exactly_the_keys_read() {
        assert!(KEYS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let read: std::collections::BTreeSet<&str> =
            APPLIED_CONFIGMAP_KEYS.iter().chain(CONFIGMAP_DEFAULTS).copied().collect();
        let supported: std::collections::BTreeSet<&str> = KEYS
            .iter()
            .filter(|(_, support)| *support == SettingSupport::Supported)
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(read, supported);
    }

    #[test]
    fn docs_have_a_row_per_key_with_its_support() {
        let docs = include_str!("../../../docs/configmap.md");
        let rows: Vec<(&str, &str)> = docs
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (cells.len() > 4 && cells[1].starts_with('`')).then(|| (cells[1].trim_matches('`'), cells[2]))
            })
            .collect();
        assert_eq!(rows.len(), KEYS.len());
        for (key, support) in rows {
            let expected = match setting_support(key) {
                SettingSupport::Supported => "supported",
                SettingSupport::NoEffect => "no effect",
                SettingSupport::NotSupported => "not supported",
                SettingSupport::Refused => "refused",
                SettingSupport::Unknown { .. } => panic!("{key} is not an ingress-nginx key"),
            };
            assert_eq!(support, expected, "{key}");
        }
    }

    #[test]
    fn unknown_keys_get_the_closest_one() {
        assert_eq!(setting_support("use-gzip-typo"), SettingSupport::Unknown { did_you_mean: None });
        assert_eq!(
            setting_support("hsts-max-ages"),
            SettingSupport::Unknown { did_you_mean: Some("hsts-max-age") }
        );
    }
}
