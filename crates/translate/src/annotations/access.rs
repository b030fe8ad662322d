//! `allowlist-source-range`, `whitelist-source-range`, `denylist-source-range` and `satisfy`.

use ostium_model::{CidrSet, Denial, Satisfy, SourceAccess};

use super::Parser;
use crate::global_config::{SourceRange, SourceRanges};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] =
    &["allowlist-source-range", "whitelist-source-range", "denylist-source-range", "satisfy"];

impl Parser<'_> {
    /// `allowlist-source-range` (or its older spelling `whitelist-source-range`; the newer one
    /// wins, as in ingress-nginx) and `denylist-source-range`. A list that does not parse denies
    /// the route (503), as ingress-nginx denies the location. Without its annotation, a list is
    /// the ConfigMap's (`global`), as ingress-nginx's ipallowlist and ipdenylist parsers default
    /// to it: an annotation replaces the global list, never adds to it.
    pub(super) fn source_access(
        &mut self,
        denied: &mut Option<Denial>,
        global: &SourceRanges,
    ) -> Option<SourceAccess> {
        let allow_key = match self.value("allowlist-source-range") {
            Some(_) if self.value("whitelist-source-range").is_some() => {
                let message = format!(
                    "annotation {0}/whitelist-source-range is ignored: {0}/allowlist-source-range is set",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                "allowlist-source-range"
            }
            Some(_) => "allowlist-source-range",
            None => "whitelist-source-range",
        };
        let allow = match self.value(allow_key) {
            Some(_) => self.networks(allow_key, denied),
            None => global_range(global.allow.as_ref(), "whitelist-source-range", denied),
        };
        let deny = match self.value("denylist-source-range") {
            Some(_) => self.networks("denylist-source-range", denied),
            None => global_range(global.deny.as_ref(), "denylist-source-range", denied),
        };
        (allow.is_some() || deny.is_some()).then_some(SourceAccess { allow, deny })
    }

    /// A list of addresses and networks; one that does not parse denies the route (503).
    pub(super) fn networks(&mut self, name: &str, denied: &mut Option<Denial>) -> Option<CidrSet> {
        let error = match self.value(name)?.parse::<CidrSet>() {
            Ok(networks) => return Some(networks),
            Err(error) => error,
        };
        let annotation = format!("{}/{name}", self.prefix);
        let message =
            format!("annotation {annotation}: {error}; every request to these paths is refused (503)");
        self.diagnostics.push(Diagnostic::error(self.object.clone(), Reason::InvalidAnnotation, message));
        denied.get_or_insert(Denial::InvalidAnnotation { annotation: annotation.into() });
        None
    }

    /// `satisfy`: `all` (the default) or `any`; anything else is reported and `all` kept.
    pub(super) fn satisfy(&mut self) -> Satisfy {
        match self.value("satisfy") {
            None | Some("all") => Satisfy::All,
            Some("any") => Satisfy::Any,
            Some(_) => {
                self.invalid("satisfy", "any or all");
                Satisfy::All
            }
        }
    }
}

/// A route's list from the ConfigMap's `key`; one that does not parse denies the route (503).
fn global_range(range: Option<&SourceRange>, key: &str, denied: &mut Option<Denial>) -> Option<CidrSet> {
    match range? {
        SourceRange::Networks(networks) => Some(networks.clone()),
        SourceRange::Invalid => {
            denied.get_or_insert(Denial::InvalidSetting { key: key.into() });
            None
        }
    }
}
