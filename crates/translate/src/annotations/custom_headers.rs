//! `custom-headers`: response headers for every answer of the Ingress's routes, from the data of
//! a ConfigMap. Follows ingress-nginx's internal/ingress/annotations/customheaders/main.go: a
//! header name of letters, digits, `-` and `_`, a value of its `valueRegexp` characters, and
//! every name listed in the ConfigMap's `global-allowed-response-headers` (none by default);
//! otherwise, or when the ConfigMap does not exist, the location is denied (503). nginx.tmpl
//! escapes `$` in these values (`escapeLiteralDollar`): they are literal text.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use ostium_model::Denial;

use super::{Parser, auth_headers_config_map};
use crate::{Diagnostic, Objects, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &["custom-headers"];

impl Parser<'_> {
    /// The route's headers, or `None` (with the route denied when the annotation cannot be
    /// applied). `allowed` is `global-allowed-response-headers`.
    pub(super) fn custom_headers(
        &mut self,
        objects: &Objects,
        allowed: &[Box<str>],
        denied: &mut Option<Denial>,
    ) -> Option<Arc<[(HeaderName, HeaderValue)]>> {
        let reference = self.value("custom-headers").filter(|value| !value.is_empty())?;
        match custom_headers(
            self.object.namespace.as_deref().unwrap_or_default(),
            reference,
            self.cross_namespace,
            objects,
            allowed,
        ) {
            Ok(headers) if headers.is_empty() => None,
            Ok(headers) => Some(headers.into()),
            Err(why) => {
                let annotation = format!("{}/custom-headers", self.prefix);
                let message =
                    format!("annotation {annotation}: {why}; every request to these paths is refused (503)");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                denied.get_or_insert(Denial::InvalidAnnotation { annotation: annotation.into() });
                None
            }
        }
    }
}

/// The headers of the ConfigMap `reference` names (`name` or `namespace/name`, in the Ingress's
/// own namespace unless `cross_namespace`), each checked as ingress-nginx checks them.
fn custom_headers(
    namespace: &str,
    reference: &str,
    cross_namespace: bool,
    objects: &Objects,
    allowed: &[Box<str>],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let key = auth_headers_config_map(namespace, reference, cross_namespace)
        .map_err(|why| format!("`{reference}` {why}"))?;
    let config_map =
        objects.config_maps.get(&key).ok_or_else(|| format!("ConfigMap {key} does not exist"))?;
    let mut headers = Vec::new();
    for (name, value) in config_map.data.iter().flatten() {
        if !is_header_name(name) {
            return Err(format!(
                "ConfigMap {key}: `{name}` is not a header name of letters, digits, - and _"
            ));
        }
        if !is_header_value(value) {
            return Err(format!("ConfigMap {key}: header {name} has characters ingress-nginx refuses"));
        }
        if !allowed.iter().any(|allowed| **allowed == **name) {
            return Err(format!(
                "ConfigMap {key}: header {name} is not in the ConfigMap's global-allowed-response-headers"
            ));
        }
        let (Ok(header), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        else {
            return Err(format!("ConfigMap {key}: header {name} is not a valid header"));
        };
        headers.push((header, value));
    }
    Ok(headers)
}

/// ingress-nginx's `headerRegexp`: letters, digits, `-` and `_`.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// ingress-nginx's `valueRegexp`: not empty, letters, digits, space and
/// ``_:;.,\/"'?!(){}[]@<>=-+*#$&`|~^%``.
fn is_header_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" _:;.,\\/\"'?!(){}[]@<>=-+*#$&`|~^%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_follow_ingress_nginx_regexps() {
        assert!(is_header_name("My_Custom-Header2"));
        assert!(!is_header_name("My.Header") && !is_header_name(""));
        assert!(is_header_value("$remote_addr (literal) \"quoted\" a=b; c"));
        assert!(!is_header_value("") && !is_header_value("tab\there") && !is_header_value("é"));
    }
}
