//! `annotations-risk-level`: ingress-nginx grades each annotation by the harm a wrong value
//! could do (each parser's `Risk`, `internal/ingress/annotations/*/main.go`), and refuses
//! Ingresses whose annotations are graded above the ConfigMap's level (`High` by default, so
//! only the `Critical` ones, the snippets, are refused).

/// How much harm an annotation could do, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    /// The ConfigMap's value, as ingress-nginx reads it: any case; anything else is `Low`.
    pub(crate) fn from_setting(value: &str) -> Risk {
        match value.to_ascii_lowercase().as_str() {
            "critical" => Risk::Critical,
            "high" => Risk::High,
            "medium" => Risk::Medium,
            _ => Risk::Low,
        }
    }

    /// The risk ingress-nginx gives an annotation (its name without the prefix), aliases
    /// included; `None` for names it does not know.
    pub(crate) fn of(name: &str) -> Option<Risk> {
        RISKS.binary_search_by(|(key, _)| key.cmp(&name)).ok().map(|index| RISKS[index].1)
    }
}

/// Every annotation ingress-nginx grades, sorted by name.
const RISKS: &[(&str, Risk)] = &[
    ("affinity", Risk::Low),
    ("affinity-canary-behavior", Risk::Low),
    ("affinity-mode", Risk::Medium),
    ("allowlist-source-range", Risk::Medium),
    ("app-root", Risk::Medium),
    ("auth-always-set-cookie", Risk::Low),
    ("auth-cache-duration", Risk::Medium),
    ("auth-cache-key", Risk::Medium),
    ("auth-keepalive", Risk::Low),
    ("auth-keepalive-requests", Risk::Low),
    ("auth-keepalive-share-vars", Risk::Low),
    ("auth-keepalive-timeout", Risk::Low),
    ("auth-method", Risk::Low),
    ("auth-proxy-set-headers", Risk::Medium),
    ("auth-realm", Risk::Medium),
    ("auth-request-redirect", Risk::Medium),
    ("auth-response-headers", Risk::Medium),
    ("auth-secret", Risk::Medium),
    ("auth-secret-type", Risk::Low),
    ("auth-signin", Risk::High),
    ("auth-signin-redirect-param", Risk::Medium),
    ("auth-snippet", Risk::Critical),
    ("auth-tls-error-page", Risk::High),
    ("auth-tls-match-cn", Risk::High),
    ("auth-tls-pass-certificate-to-upstream", Risk::Low),
    ("auth-tls-secret", Risk::Medium),
    ("auth-tls-verify-client", Risk::Medium),
    ("auth-tls-verify-depth", Risk::Low),
    ("auth-type", Risk::Low),
    ("auth-url", Risk::High),
    ("backend-protocol", Risk::Low),
    ("canary", Risk::Low),
    ("canary-by-cookie", Risk::Medium),
    ("canary-by-header", Risk::Medium),
    ("canary-by-header-pattern", Risk::Medium),
    ("canary-by-header-value", Risk::Medium),
    ("canary-weight", Risk::Low),
    ("canary-weight-total", Risk::Low),
    ("client-body-buffer-size", Risk::Low),
    ("configuration-snippet", Risk::Critical),
    ("connection-proxy-header", Risk::Low),
    ("cors-allow-credentials", Risk::Low),
    ("cors-allow-headers", Risk::Medium),
    ("cors-allow-methods", Risk::Medium),
    ("cors-allow-origin", Risk::Medium),
    ("cors-expose-headers", Risk::Medium),
    ("cors-max-age", Risk::Low),
    ("custom-headers", Risk::Medium),
    ("custom-http-errors", Risk::Low),
    ("default-backend", Risk::Low),
    ("denylist-source-range", Risk::Medium),
    ("disable-proxy-intercept-errors", Risk::Low),
    ("enable-access-log", Risk::Low),
    ("enable-cors", Risk::Low),
    ("enable-global-auth", Risk::Low),
    ("enable-modsecurity", Risk::Low),
    ("enable-opentelemetry", Risk::Low),
    ("enable-owasp-core-rules", Risk::Low),
    ("enable-rewrite-log", Risk::Low),
    ("fastcgi-index", Risk::Medium),
    ("fastcgi-params-configmap", Risk::Medium),
    ("force-ssl-redirect", Risk::Medium),
    ("from-to-www-redirect", Risk::Low),
    ("http2-push-preload", Risk::Low),
    ("limit-allowlist", Risk::Low),
    ("limit-burst-multiplier", Risk::Low),
    ("limit-connections", Risk::Low),
    ("limit-rate", Risk::Low),
    ("limit-rate-after", Risk::Low),
    ("limit-rpm", Risk::Low),
    ("limit-rps", Risk::Low),
    ("limit-whitelist", Risk::Low),
    ("load-balance", Risk::Low),
    ("mirror-host", Risk::High),
    ("mirror-request-body", Risk::Low),
    ("mirror-target", Risk::High),
    ("modsecurity-snippet", Risk::Critical),
    ("modsecurity-transaction-id", Risk::High),
    ("opentelemetry-operation-name", Risk::Medium),
    ("opentelemetry-trust-incoming-span", Risk::Low),
    ("permanent-redirect", Risk::Medium),
    ("permanent-redirect-code", Risk::Low),
    ("preserve-trailing-slash", Risk::Medium),
    ("proxy-body-size", Risk::Medium),
    ("proxy-buffer-size", Risk::Low),
    ("proxy-buffering", Risk::Low),
    ("proxy-buffers-number", Risk::Low),
    ("proxy-busy-buffers-size", Risk::Low),
    ("proxy-connect-timeout", Risk::Low),
    ("proxy-cookie-domain", Risk::Medium),
    ("proxy-cookie-path", Risk::Medium),
    ("proxy-http-version", Risk::Low),
    ("proxy-max-temp-file-size", Risk::Low),
    ("proxy-next-upstream", Risk::Medium),
    ("proxy-next-upstream-timeout", Risk::Low),
    ("proxy-next-upstream-tries", Risk::Low),
    ("proxy-read-timeout", Risk::Low),
    ("proxy-redirect-from", Risk::Medium),
    ("proxy-redirect-to", Risk::Medium),
    ("proxy-request-buffering", Risk::Low),
    ("proxy-send-timeout", Risk::Low),
    ("proxy-ssl-ciphers", Risk::Medium),
    ("proxy-ssl-name", Risk::High),
    ("proxy-ssl-protocols", Risk::Low),
    ("proxy-ssl-secret", Risk::Medium),
    ("proxy-ssl-server-name", Risk::Low),
    ("proxy-ssl-verify", Risk::Low),
    ("proxy-ssl-verify-depth", Risk::Low),
    ("relative-redirects", Risk::Low),
    ("rewrite-target", Risk::Medium),
    ("satisfy", Risk::Low),
    ("server-alias", Risk::High),
    ("server-snippet", Risk::Critical),
    ("service-upstream", Risk::Low),
    ("session-cookie-change-on-failure", Risk::Low),
    ("session-cookie-conditional-samesite-none", Risk::Low),
    ("session-cookie-domain", Risk::Medium),
    ("session-cookie-expires", Risk::Medium),
    ("session-cookie-max-age", Risk::Medium),
    ("session-cookie-name", Risk::Medium),
    ("session-cookie-path", Risk::Medium),
    ("session-cookie-samesite", Risk::Low),
    ("session-cookie-secure", Risk::Low),
    ("ssl-ciphers", Risk::Low),
    ("ssl-passthrough", Risk::Low),
    ("ssl-prefer-server-ciphers", Risk::Low),
    ("ssl-redirect", Risk::Low),
    ("stream-snippet", Risk::Critical),
    ("temporal-redirect", Risk::Medium),
    ("temporal-redirect-code", Risk::Low),
    ("upstream-hash-by", Risk::High),
    ("upstream-hash-by-subset", Risk::Low),
    ("upstream-hash-by-subset-size", Risk::Low),
    ("upstream-vhost", Risk::Low),
    ("use-port-in-redirects", Risk::Low),
    ("use-regex", Risk::Low),
    ("whitelist-source-range", Risk::Medium),
    ("x-forwarded-prefix", Risk::Medium),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_grades_snippets_critical() {
        assert!(RISKS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert_eq!(Risk::of("configuration-snippet"), Some(Risk::Critical));
        assert_eq!(Risk::of("auth-url"), Some(Risk::High));
        assert_eq!(Risk::of("whitelist-source-range"), Some(Risk::Medium), "an alias");
        assert_eq!(Risk::of("ssl-redirect"), Some(Risk::Low));
        assert_eq!(Risk::of("no-such-annotation"), None);
        assert_eq!(Risk::from_setting("MEDIUM"), Risk::Medium);
        assert_eq!(Risk::from_setting("unknown"), Risk::Low);
    }

    #[test]
    fn every_annotation_ostium_reads_is_graded() {
        for name in super::super::SUPPORTED.iter().flat_map(|family| family.iter()) {
            assert!(Risk::of(name).is_some(), "{name}");
        }
    }
}
