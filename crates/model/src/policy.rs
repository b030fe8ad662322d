//! Per-route policy: what a route does to a request besides picking a backend.

/// ingress-nginx's default `proxy-body-size`: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// The typed result of a route's annotations, built at translation time and only read by the
/// proxy. A default policy forwards as is, with ingress-nginx's default body limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Largest request body accepted (413 beyond); `None` for no limit.
    pub max_body_size: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_body_size: Some(DEFAULT_MAX_BODY_SIZE) }
    }
}
