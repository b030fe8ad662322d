//! Canary releases: `canary`, `canary-by-header`, `canary-by-header-value`,
//! `canary-by-header-pattern`, `canary-by-cookie`, `canary-weight`, `canary-weight-total`, and
//! `affinity-canary-behavior`, as ingress-nginx reads them
//! (internal/ingress/annotations/canary/main.go; the last one in its sessionaffinity parser).
//! An invalid value falls back to the default there (with a log line); here it is reported too.

use http::{HeaderName, HeaderValue};
use ostium_model::{CanaryAffinity, CanaryHeader, DEFAULT_WEIGHT_TOTAL, HeaderRule};

use super::{Parser, is_basic_char};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    "affinity-canary-behavior",
];

/// Annotations a canary Ingress keeps (ingress-nginx builds the canary's upstream from them, or
/// applies them to the hosts it serves); every other one is the main Ingress's to set. A
/// trailing `*` matches by prefix.
const KEPT_BY_A_CANARY: &[&str] = &[
    "canary*",
    "auth-tls-*",
    "affinity*",
    "session-cookie-*",
    "load-balance",
    "upstream-hash-by*",
    "service-upstream",
];

/// What a canary Ingress (`canary: "true"`) asks of the routes it joins.
#[derive(Clone, Debug)]
pub(crate) struct CanaryRules {
    pub(crate) header: Option<CanaryHeader>,
    pub(crate) cookie: Option<Box<str>>,
    pub(crate) weight: u64,
    pub(crate) weight_total: u64,
    pub(crate) affinity: CanaryAffinity,
}

impl<'a> Parser<'a> {
    /// The canary rules of a canary Ingress; `None` for any other Ingress. Rules set while
    /// `canary` is not true are reported and ignored, as ingress-nginx does.
    pub(super) fn canary(&mut self) -> Option<CanaryRules> {
        let enabled = self.flag("canary").unwrap_or(false);
        let weight = match self.value("canary-weight").map(str::parse::<i64>) {
            None => 0,
            Some(Ok(weight)) => u64::try_from(weight).unwrap_or(0),
            Some(Err(_)) => {
                self.warn_default("canary-weight", "0");
                0
            }
        };
        let header = self.basic_chars("canary-by-header");
        let value = self.basic_chars("canary-by-header-value");
        let pattern = self.header_pattern();
        let cookie = self.basic_chars("canary-by-cookie");
        if !enabled {
            if weight > 0 || header.is_some() || value.is_some() || pattern.is_some() || cookie.is_some() {
                let message = format!(
                    "annotations {}/canary-* are set but canary is not \"true\"; they are ignored and the Ingress is served as any other",
                    self.prefix
                );
                self.warn(message);
            }
            return None;
        }
        let weight_total = match self.value("canary-weight-total").map(str::parse::<i64>) {
            None => DEFAULT_WEIGHT_TOTAL,
            Some(Ok(total)) if total >= DEFAULT_WEIGHT_TOTAL as i64 => total as u64,
            Some(Ok(_)) => {
                // The balancer keeps 100 unless the total is larger.
                let message = format!(
                    "annotation {}/canary-weight-total below 100 is not used; the total is 100",
                    self.prefix
                );
                self.warn(message);
                DEFAULT_WEIGHT_TOTAL
            }
            Some(Err(_)) => {
                self.warn_default("canary-weight-total", "100");
                DEFAULT_WEIGHT_TOTAL
            }
        };
        let affinity = match self.value("affinity-canary-behavior").map(str::trim) {
            None | Some("sticky") => CanaryAffinity::Sticky,
            Some("legacy") => CanaryAffinity::Legacy,
            Some(_) => {
                self.warn_default("affinity-canary-behavior", "sticky");
                CanaryAffinity::Sticky
            }
        };
        let header = self.canary_header(header, value, pattern);
        self.report_ignored_on_a_canary();
        let cookie = cookie.map(Into::into);
        Some(CanaryRules { header, cookie, weight: weight.min(weight_total), weight_total, affinity })
    }

    /// `canary-by-header` with the rule its value and pattern give.
    fn canary_header(
        &mut self,
        header: Option<&str>,
        value: Option<&str>,
        pattern: Option<&str>,
    ) -> Option<CanaryHeader> {
        let prefix = self.prefix;
        let Some(header) = header else {
            if value.is_some() || pattern.is_some() {
                self.warn(format!(
                    "annotations {prefix}/canary-by-header-value and -pattern have no effect without canary-by-header"
                ));
            }
            return None;
        };
        // nginx's `$http_` variables read `_` in a name as `-`.
        let Ok(name) = HeaderName::from_bytes(header.replace('_', "-").as_bytes()) else {
            self.warn(format!(
                "annotation {prefix}/canary-by-header: `{header}` is not a header name, so no request has it; it was ignored"
            ));
            return None;
        };
        let rule = match (value, pattern) {
            (Some(value), pattern) => {
                if pattern.is_some() {
                    self.warn(format!(
                        "annotation {prefix}/canary-by-header-pattern is ignored: canary-by-header-value is set"
                    ));
                }
                // Letters, digits, spaces and `-._~/:` only (checked above): a valid header value.
                HeaderRule::Value(HeaderValue::from_str(value).ok()?)
            }
            (None, Some(pattern)) => self.compile_pattern(pattern),
            (None, None) => HeaderRule::AlwaysOrNever,
        };
        Some(CanaryHeader { name, rule })
    }

    /// A value ingress-nginx checks with its `BasicCharsRegex` (letters, digits and `-._~/:`,
    /// spaces not counted); empty is unset, anything else is reported and unset.
    fn basic_chars(&mut self, name: &str) -> Option<&'a str> {
        let value = self.value(name)?;
        if !value.bytes().filter(|&b| b != b' ').all(is_basic_char) {
            self.warn_default(name, "");
            return None;
        }
        Some(value.trim()).filter(|value| !value.is_empty())
    }

    /// `canary-by-header-pattern`: the characters ingress-nginx's `IsValidRegex` allows.
    fn header_pattern(&mut self) -> Option<&'a str> {
        let pattern = self.value("canary-by-header-pattern")?.trim();
        if !pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/:^$[](){}*+?|&=\\".contains(&b)) {
            self.warn_default("canary-by-header-pattern", "");
            return None;
        }
        Some(pattern).filter(|pattern| !pattern.is_empty())
    }

    /// A header pattern, compiled once. One that does not compile (a PCRE feature such as a
    /// look-around, or an error) makes requests with the header go to the main backend, as the
    /// balancer's failed match does.
    fn compile_pattern(&mut self, pattern: &str) -> HeaderRule {
        match regex::bytes::Regex::new(pattern) {
            Ok(regex) => HeaderRule::Pattern(regex),
            Err(_) => {
                let message = format!(
                    "annotation {}/canary-by-header-pattern: `{pattern}` is not a regular expression ostium can match; requests with the header go to the main backend",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                HeaderRule::BrokenPattern
            }
        }
    }

    /// A canary Ingress only lends its backend: its other annotations are the main Ingress's to
    /// set, and ingress-nginx ignores them. Says which ones were.
    fn report_ignored_on_a_canary(&mut self) {
        let kept = |name: &str| {
            KEPT_BY_A_CANARY.iter().any(|kept| match kept.strip_suffix('*') {
                Some(start) => name.starts_with(start),
                None => name == *kept,
            })
        };
        let ignored: Vec<&str> = self.ours.keys().copied().filter(|name| !kept(name)).collect();
        if !ignored.is_empty() {
            let message = format!(
                "a canary Ingress takes its other settings from the main Ingress; these annotations are ignored: {}",
                ignored.join(", ")
            );
            self.warn(message);
        }
    }

    fn warn(&mut self, message: String) {
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
    }
}
