//! `ssl-passthrough`, `ssl-ciphers` and `ssl-prefer-server-ciphers`: settings of the TLS
//! frontend, which ingress-nginx keeps per `server` (host). The translator applies them to the
//! Ingress's hosts.

use rustls::CipherSuite;

use super::Parser;
use std::collections::BTreeMap;

use crate::{Diagnostic, ObjectRef, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &["ssl-passthrough", "ssl-ciphers", "ssl-prefer-server-ciphers"];

/// What the TLS frontend annotations ask of an Ingress's hosts.
#[derive(Debug, Default)]
pub(crate) struct FrontendTls {
    /// `ssl-passthrough`: TLS connections go to the backend of `/` undecrypted.
    pub(crate) passthrough: bool,
    /// `ssl-ciphers`: the TLS 1.2 suites, in the order written; `None`: the defaults.
    pub(crate) tls12_ciphers: Option<Vec<CipherSuite>>,
    /// `ssl-prefer-server-ciphers`.
    pub(crate) prefer_server_ciphers: Option<bool>,
}

/// OpenSSL's names of the TLS 1.2 cipher suites ostium offers (every one rustls implements).
const OFFERED: [(&str, CipherSuite); 6] = [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

/// OpenSSL cipher aliases that match none of the [`OFFERED`] suites: excluding them changes
/// nothing.
const EXCLUDES_NOTHING_OFFERED: [&str; 22] = [
    "aNULL", "eNULL", "NULL", "MD5", "RC4", "DES", "3DES", "EXP", "EXPORT", "EXPORT40", "EXPORT56", "LOW",
    "PSK", "SRP", "DSS", "aDSS", "CAMELLIA", "SEED", "IDEA", "ADH", "AECDH", "kRSA",
];

/// The ConfigMap's `ssl-ciphers`, read as the annotation is (ingress-nginx's `ssl_ciphers` at
/// the http level); problems are reported of the ConfigMap `object`.
pub(crate) fn configmap_ciphers(
    object: &ObjectRef,
    value: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<CipherSuite>> {
    let defaults = BTreeMap::new();
    let ours = [("ssl-ciphers", value)].into();
    let mut found = Vec::new();
    let mut parser = Parser {
        object,
        ours,
        defaults: &defaults,
        cross_namespace: false,
        prefix: "",
        diagnostics: &mut found,
    };
    let ciphers = parser.ssl_ciphers();
    for mut diagnostic in found {
        diagnostic.reason = Reason::InvalidSetting;
        diagnostic.severity = crate::Severity::Warning;
        diagnostic.message = diagnostic.message.replacen("annotation /", "", 1);
        diagnostics.push(diagnostic);
    }
    ciphers
}

impl Parser<'_> {
    pub(super) fn frontend_tls(&mut self) -> FrontendTls {
        FrontendTls {
            passthrough: self.flag("ssl-passthrough").unwrap_or(false),
            tls12_ciphers: self.ssl_ciphers(),
            prefer_server_ciphers: self.flag("ssl-prefer-server-ciphers"),
        }
    }

    /// `ssl-ciphers`, an OpenSSL cipher list (validated as ingress-nginx does), of which ostium
    /// takes the suites it offers by name, in order; `!name` and `-name` remove one. Anything
    /// else is left out with a warning. A list that keeps no suite, or that excludes an alias
    /// ostium cannot resolve, keeps the defaults.
    fn ssl_ciphers(&mut self) -> Option<Vec<CipherSuite>> {
        let value = self.value("ssl-ciphers")?.trim();
        if value.is_empty() {
            return None;
        }
        if !is_cipher_list(value) {
            self.invalid("ssl-ciphers", "an OpenSSL cipher list such as ECDHE-RSA-AES128-GCM-SHA256");
            return None;
        }
        let mut chosen: Vec<CipherSuite> = Vec::new();
        let mut excluded: Vec<CipherSuite> = Vec::new();
        let mut left_out: Vec<&str> = Vec::new();
        for element in value.split(':').filter(|e| !e.is_empty()) {
            let (operator, name) = match element.strip_prefix(['!', '-']) {
                Some(name) => (element.chars().next(), name),
                None => (None, element),
            };
            let suite = OFFERED.iter().find(|(n, _)| *n == name).map(|(_, suite)| *suite);
            match (operator, suite) {
                (None, Some(suite)) => {
                    if !chosen.contains(&suite) && !excluded.contains(&suite) {
                        chosen.push(suite);
                    }
                }
                (Some(operator), Some(suite)) => {
                    chosen.retain(|s| *s != suite);
                    if operator == '!' {
                        excluded.push(suite);
                    }
                }
                (Some(_), None) if EXCLUDES_NOTHING_OFFERED.contains(&name) => {}
                (Some(_), None) => {
                    self.ciphers_warning(format!(
                        "ostium cannot tell which suites `{element}` excludes, so the default cipher suites are used"
                    ));
                    return None;
                }
                (None, None) => left_out.push(element),
            }
        }
        let offered = || OFFERED.map(|(name, _)| name).join(", ");
        if chosen.is_empty() {
            self.ciphers_warning(format!(
                "it names none of the TLS 1.2 suites ostium offers ({}), so the default cipher suites are used",
                offered()
            ));
            return None;
        }
        if !left_out.is_empty() {
            self.ciphers_warning(format!(
                "`{}` are not offered by ostium (it offers {}) and were left out",
                left_out.join("`, `"),
                offered()
            ));
        }
        Some(chosen)
    }

    fn ciphers_warning(&mut self, message: String) {
        let message = format!("annotation {}/ssl-ciphers: {message}", self.prefix);
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
    }
}

/// ingress-nginx's check of `ssl-ciphers`: letters, digits and `!:+-_`, with `@STRENGTH` and
/// `@SECLEVEL=0`…`5` anywhere.
fn is_cipher_list(value: &str) -> bool {
    let allowed = |text: &str| text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!:+-_".contains(&b));
    let mut rest = value;
    while let Some(at) = rest.find('@') {
        if !allowed(&rest[..at]) {
            return false;
        }
        let directive = &rest[at..];
        rest = if let Some(after) = directive.strip_prefix("@STRENGTH") {
            after
        } else if let Some(after) = directive
            .strip_prefix("@SECLEVEL=")
            .filter(|after| after.starts_with(|c| ('0'..='5').contains(&c)))
        {
            &after[1..]
        } else {
            return false;
        };
    }
    allowed(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_lists_are_checked_as_ingress_nginx_does() {
        for valid in [
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ALL:!aNULL:!EXPORT56:RC4+RSA:+HIGH:+MEDIUM:+LOW:+SSLv2:+EXP",
            "ALL:!aNULL:!EXPORT56:RC4+RSA@STRENGTH:+HIGH@SECLEVEL=0:+MEDIUM",
        ] {
            assert!(is_cipher_list(valid), "{valid}");
        }
        for invalid in ["ECDHE-RSA-AES128-GCM-SHA256;", "HIGH@SECLEVEL=6", "HIGH MEDIUM", "a,b", "@FOO"] {
            assert!(!is_cipher_list(invalid), "{invalid}");
        }
    }
}
