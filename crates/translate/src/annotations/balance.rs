//! `load-balance`: `round_robin` (the default) or `ewma`, as ingress-nginx's
//! `internal/ingress/annotations/loadbalancing/main.go` reads it (the exact name, spaces trimmed).

use ostium_model::LoadBalance;

use super::Parser;

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &["load-balance"];

impl Parser<'_> {
    /// An invalid or unsupported name keeps round robin, as ingress-nginx's Lua balancer falls
    /// back to its default. `chash`, `chashsubset` and `sticky_*` pass ingress-nginx's check but
    /// are chosen by `upstream-hash-by` and `affinity`, not by this key: here they warn too.
    pub(super) fn load_balance(&mut self) -> LoadBalance {
        match self.value("load-balance").map(str::trim) {
            None | Some("round_robin") => LoadBalance::RoundRobin,
            Some("ewma") => LoadBalance::Ewma,
            Some(_) => {
                self.warn_default("load-balance", "round_robin");
                LoadBalance::RoundRobin
            }
        }
    }
}
