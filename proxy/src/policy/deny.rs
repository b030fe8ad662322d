//! A route whose Ingress asks for a restriction ostium cannot apply serves nobody (503).

use std::ops::ControlFlow;

use ostium_model::Policy;

use crate::ProxyError;
use crate::outcome::Outcome;

pub(super) fn check(policy: &Policy) -> ControlFlow<Outcome> {
    match policy.denied {
        Some(_) => ControlFlow::Break(Outcome::Refuse(ProxyError::RouteDenied)),
        None => ControlFlow::Continue(()),
    }
}
