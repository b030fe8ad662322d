//! Per-route policy: what a route does to a request besides picking a backend.

/// The typed result of a route's annotations, built at translation time and only read by the
/// proxy. Empty until the annotation support lands; a default policy forwards as is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {}
