//! Settings of the whole proxy rather than of one route: the `--configmap` keys that apply to
//! every connection and request (client address, PROXY protocol, compression, access log …).
//! They travel in the [`crate::Table`], so that a ConfigMap change is one more table swap.
//! Keys that only give routes a default are applied by translation to each route's
//! [`crate::Policy`] instead.

/// The global settings of one table; `Default` is ingress-nginx's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalSettings {
    /// Where client addresses come from (PROXY protocol, forwarded headers), and `block-cidrs`.
    pub client_address: crate::ClientAddressing,
}
