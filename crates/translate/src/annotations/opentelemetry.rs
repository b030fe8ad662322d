//! `enable-opentelemetry`, `opentelemetry-trust-incoming-span`, `opentelemetry-operation-name`
//! (ingress-nginx's `internal/ingress/annotations/opentelemetry/main.go`, combined with the
//! ConfigMap's keys as its template's `buildOpentelemetryForLocation` does).

use ostium_model::RouteTracing;

use super::Parser;
use crate::global_config::TracingConfig;
use crate::{Diagnostic, Reason};

pub(super) const KEYS: &[&str] =
    &["enable-opentelemetry", "opentelemetry-trust-incoming-span", "opentelemetry-operation-name"];

impl Parser<'_> {
    /// Whether the Ingress's routes are traced, and how. The annotation turns tracing on or off
    /// whatever the ConfigMap says; the other two are read only when it turns it on (as
    /// ingress-nginx), and then override the ConfigMap's. An invalid operation name makes
    /// ingress-nginx drop all three, so the ConfigMap decides alone.
    pub(super) fn tracing(&mut self, global: &TracingConfig) -> Option<RouteTracing> {
        let mut enabled = self.flag("enable-opentelemetry");
        let (mut trust, mut operation_name) = (None, None);
        if enabled == Some(true) {
            trust = self.flag("opentelemetry-trust-incoming-span");
            operation_name = self.value("opentelemetry-operation-name");
            if let Some(name) = operation_name
                && !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                let message = format!(
                    "annotation {}/opentelemetry-operation-name: expected letters, digits, _ and - only; the Ingress's opentelemetry annotations were all ignored",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                (enabled, trust, operation_name) = (None, None, None);
            }
        } else {
            for key in ["opentelemetry-trust-incoming-span", "opentelemetry-operation-name"] {
                if self.value(key).is_some() {
                    let message = format!(
                        "annotation {}/{key} has no effect without enable-opentelemetry: \"true\"",
                        self.prefix
                    );
                    self.diagnostics.push(Diagnostic::warning(
                        self.object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                }
            }
        }
        if !enabled.unwrap_or(global.enabled) {
            return None;
        }
        let Some(export) = &global.export else {
            if enabled == Some(true) {
                let message = format!(
                    "annotation {}/enable-opentelemetry has no effect: the --configmap sets no otlp-collector-host",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
            }
            return None;
        };
        let operation_name = operation_name.filter(|name| !name.is_empty()).map(Into::into);
        Some(RouteTracing {
            export: export.clone(),
            trust_incoming_span: trust.unwrap_or(global.trust_incoming_span),
            operation_name: operation_name.or_else(|| global.operation_name.clone()),
        })
    }
}
