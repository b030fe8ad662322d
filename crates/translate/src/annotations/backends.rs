//! Hosts and backends: `server-alias`, `service-upstream`, `default-backend`,
//! `custom-http-errors` and `disable-proxy-intercept-errors`.

use ostium_model::{ErrorPages, HostRule};

use super::Parser;
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "server-alias",
    "service-upstream",
    "default-backend",
    "custom-http-errors",
    "disable-proxy-intercept-errors",
];

impl Parser<'_> {
    /// `server-alias`: comma-separated host names (`*.` wildcards allowed), without repeats.
    /// Names that are not host names (nginx's regex server names among them) are reported and
    /// skipped; the others still apply.
    pub(super) fn aliases(&mut self) -> Vec<HostRule> {
        let Some(list) = self.value("server-alias") else { return Vec::new() };
        let mut aliases = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.parse::<HostRule>() {
                Ok(alias) if !aliases.contains(&alias) => aliases.push(alias),
                Ok(_) => {}
                Err(error) => {
                    let message =
                        format!("annotation {}/server-alias: {error}; the name is skipped", self.prefix);
                    self.diagnostics.push(Diagnostic::error(
                        self.object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                }
            }
        }
        aliases.sort();
        aliases
    }

    /// `default-backend`: a Service in the Ingress's namespace, by name (a DNS-1035 label, as
    /// ingress-nginx validates it).
    pub(super) fn default_backend_service(&mut self) -> Option<String> {
        let name = self.value("default-backend")?.trim();
        if is_dns1035_label(name) {
            return Some(name.to_owned());
        }
        self.invalid("default-backend", "the name of a Service in the Ingress's namespace");
        None
    }

    /// `custom-http-errors`: comma-separated 4xx and 5xx codes (ingress-nginx's pattern); any
    /// other value is reported and the annotation ignored.
    pub(super) fn error_pages(&mut self) -> Option<ErrorPages> {
        let list = self.value("custom-http-errors")?;
        let codes: Option<Vec<u16>> = list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|code| code.parse::<u16>().ok().filter(|c| (400..=599).contains(c) && code.len() == 3))
            .collect();
        let intercept_upstream = !self.flag("disable-proxy-intercept-errors").unwrap_or(false);
        match codes {
            Some(mut codes) if !codes.is_empty() => {
                codes.sort_unstable();
                codes.dedup();
                Some(ErrorPages { codes: codes.into(), intercept_upstream })
            }
            _ => {
                self.invalid("custom-http-errors", "a comma-separated list of 4xx and 5xx status codes");
                None
            }
        }
    }
}

/// A Kubernetes DNS-1035 label: a lower-case letter, then lower-case letters, digits and `-`,
/// not ending with `-`, at most 63 characters.
fn is_dns1035_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns1035_labels() {
        for good in ["web", "a", "default-http-backend", "svc2"] {
            assert!(is_dns1035_label(good), "{good}");
        }
        for bad in ["", "Web", "2svc", "svc-", "ns/svc", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1035_label(bad), "{bad}");
        }
    }
}
