//! `limit-rps`, `limit-rpm`, `limit-burst-multiplier`, `limit-connections`, `limit-allowlist`
//! (or its older spelling `limit-whitelist`), `limit-rate` and `limit-rate-after`, as
//! ingress-nginx's internal/ingress/annotations/ratelimit/main.go reads them and its template
//! renders them (`limit_req zone=… burst=<n × multiplier> nodelay`, `limit_conn`,
//! `limit_rate <n>k`, `limit_rate_after <n>k`; only values above zero are written).
//!
//! `proxy-buffering` (validated with the buffering keys) matters here: nginx applies `limit_rate` to buffered
//! responses only (ngx_http_upstream.c sets `limit_rate` to 0 when `proxy_buffering` is off, as
//! it is by default in ingress-nginx), so `limit-rate` takes effect only with `proxy-buffering:
//! on`. ostium streams responses either way.

use k8s_openapi::api::networking::v1::Ingress;
use ostium_model::{
    CidrSet, Denial, LimitStatuses, NamespacedName, RateLimit, RateLimitZones, RequestRate, ResponseRate,
};

use super::Parser;
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-allowlist",
    "limit-whitelist",
    "limit-rate",
    "limit-rate-after",
];

/// ingress-nginx's default `limit-burst-multiplier`.
const BURST_MULTIPLIER: u64 = 5;

impl Parser<'_> {
    /// `limit-rps`, `limit-rpm` and `limit-connections`, with the burst multiplier and the
    /// allowlist, in the Ingress's zone. A limit that is not a whole number denies the route
    /// (503): ingress-nginx refuses such an Ingress (a validation error), and serving it without
    /// the limit would be more open than asked. Zero or less sets no limit, as the template
    /// writes only limits above zero.
    pub(super) fn rate_limit(
        &mut self,
        ingress: &Ingress,
        zones: &RateLimitZones,
        statuses: LimitStatuses,
        denied: &mut Option<Denial>,
    ) -> Option<RateLimit> {
        let per_second = self.limit("limit-rps", denied);
        let per_minute = self.limit("limit-rpm", denied);
        let connections = self.limit("limit-connections", denied);
        let allowlist = self.limit_allowlist(denied);
        if per_second.is_none() && per_minute.is_none() && connections.is_none() {
            if let Some((name, _)) = allowlist {
                self.no_effect(name, "limit-rps, limit-rpm or limit-connections");
            }
            return None;
        }
        // ingress-nginx uses the default for anything Go's `strconv.Atoi` refuses; a negative
        // multiplier would make nginx refuse the whole configuration.
        let multiplier = match self.int("limit-burst-multiplier") {
            None => BURST_MULTIPLIER,
            Some(Ok(n)) if n >= 0 => n.unsigned_abs(),
            Some(_) => {
                self.warn_default("limit-burst-multiplier", "5");
                BURST_MULTIPLIER
            }
        };
        let burst = |n: u64| n.saturating_mul(multiplier);
        let namespace = self.object.namespace.as_deref().unwrap_or_default();
        let uid = ingress.metadata.uid.as_deref().unwrap_or_default();
        Some(RateLimit {
            per_second: per_second.map(|n| RequestRate::per_second(n, burst(n))),
            per_minute: per_minute.map(|n| RequestRate::per_minute(n, burst(n))),
            connections: connections.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            allowlist: allowlist.map(|(_, networks)| networks),
            zone: zones.zone(&NamespacedName::new(namespace, &self.object.name), uid),
            statuses,
        })
    }

    /// `limit-rate` and `limit-rate-after`, in KiB (the template writes `limit_rate <n>k`), when
    /// `proxy-buffering` is `on`. A value that is not a whole number keeps the default, no limit,
    /// as ingress-nginx does; so does a `proxy-buffering` other than `on`.
    pub(super) fn response_rate(&mut self) -> Option<ResponseRate> {
        let buffering = self.value("proxy-buffering").map(str::trim) == Some("on");
        let kib = |parser: &mut Self, name: &str| match parser.int(name) {
            None => 0,
            Some(Ok(n)) if n >= 0 => n.unsigned_abs().saturating_mul(1024),
            Some(Ok(_)) => {
                parser.negative(name);
                0
            }
            Some(Err(_)) => {
                parser.warn_default(name, "0");
                0
            }
        };
        let bytes_per_second = kib(self, "limit-rate");
        let after = kib(self, "limit-rate-after");
        if bytes_per_second == 0 {
            if after > 0 {
                self.no_effect("limit-rate-after", "limit-rate");
            }
            return None;
        }
        if !buffering {
            self.no_effect("limit-rate", "proxy-buffering: on (nginx limits buffered responses only)");
            return None;
        }
        Some(ResponseRate { bytes_per_second, after })
    }

    /// A limit above zero; invalid values deny the route.
    fn limit(&mut self, name: &str, denied: &mut Option<Denial>) -> Option<u64> {
        match self.int(name)? {
            Ok(n) if n > 0 => Some(n.unsigned_abs()),
            Ok(0) => None,
            Ok(_) => {
                self.negative(name);
                None
            }
            Err(_) => {
                let annotation = format!("{}/{name}", self.prefix);
                let message = format!(
                    "annotation {annotation}: expected a whole number; every request to these paths is refused (503)"
                );
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

    /// `limit-allowlist`, else `limit-whitelist` (ingress-nginx reads the alias only when the
    /// newer key is empty), with the key it came from. A list that does not parse denies the
    /// route.
    fn limit_allowlist(&mut self, denied: &mut Option<Denial>) -> Option<(&'static str, CidrSet)> {
        let set = |parser: &Self, name: &str| parser.value(name).is_some_and(|v| !v.is_empty());
        let name = match (set(self, "limit-allowlist"), set(self, "limit-whitelist")) {
            (true, true) => {
                let message = format!(
                    "annotation {0}/limit-whitelist is ignored: {0}/limit-allowlist is set",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                "limit-allowlist"
            }
            (true, false) => "limit-allowlist",
            (false, true) => "limit-whitelist",
            (false, false) => return None,
        };
        Some((name, self.networks(name, denied)?))
    }

    /// A whole number as Go's `strconv.Atoi` reads it; `None` when absent or empty (ingress-nginx
    /// does not validate an empty value and keeps its default).
    fn int(&self, name: &str) -> Option<Result<i64, std::num::ParseIntError>> {
        self.value(name).filter(|v| !v.is_empty()).map(str::parse)
    }

    fn negative(&mut self, name: &str) {
        let message =
            format!("annotation {}/{name} is negative: no limit is set, as ingress-nginx does", self.prefix);
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
    }

    fn no_effect(&mut self, name: &str, without: &str) {
        let message = format!("annotation {}/{name} has no effect without {without}", self.prefix);
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ostium_model::RateLimitZone;

    use crate::{Objects, translate};

    fn ingress(uid: &str, path: &str) -> Objects {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ostium}}\nspec: {{controller: ostium.dev/ingress-controller}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  uid: \"{uid}\"\n  annotations: {{nginx.ingress.kubernetes.io/limit-rps: \"5\"}}\nspec:\n  ingressClassName: ostium\n  rules: [{{http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        );
        Objects::from_yaml(&yaml).unwrap()
    }

    fn zone(objects: &Objects, options: &crate::Options, path: &str) -> Arc<RateLimitZone> {
        let table = translate(objects, options).table;
        let route = table.route(None, path).expect("routed").route;
        route.policy.rate_limit.as_ref().expect("rate limited").zone.clone()
    }

    /// ingress-nginx names an Ingress's zones after its namespace, name and UID, and nginx keeps
    /// a zone across reloads: a table built for another change keeps every client's state, a
    /// recreated Ingress (new UID) starts anew.
    #[test]
    fn a_rebuilt_table_keeps_the_zone_of_each_ingress() {
        let options = crate::tests::options();
        let first = zone(&ingress("1", "/"), &options, "/");
        assert!(Arc::ptr_eq(&first, &zone(&ingress("1", "/other"), &options, "/other")));
        assert!(!Arc::ptr_eq(&first, &zone(&ingress("2", "/"), &options, "/")));
    }
}
