//! TCP and UDP services (`--tcp-services-configmap`, `--udp-services-configmap`): a port of the
//! proxy whose connections or datagrams go, unchanged, to the endpoints of a Service port, as
//! ingress-nginx's `stream` servers do. Their endpoint sets are the table's, so endpoints move
//! without a rebuild, as for HTTP backends.

use std::fmt;
use std::sync::Arc;

use crate::{EndpointSet, NamespacedName, PortRef};

/// The transport protocol of a Service port (Kubernetes' `protocol`, SCTP aside).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// One entry of a TCP or UDP services ConfigMap: what arrives on `port` (of the address the
/// HTTP listener binds) goes to the endpoints of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamService {
    /// The port listened on (the ConfigMap key).
    pub port: u16,
    pub protocol: Transport,
    pub service: Arc<NamespacedName>,
    /// The Service port as the ConfigMap names it.
    pub service_port: PortRef,
    /// The first `PROXY`: connections start with a PROXY protocol header (v1 or v2), read and
    /// removed before forwarding. TCP only.
    pub decode_proxy_protocol: bool,
    /// The second `PROXY`: each connection to an endpoint starts with a PROXY protocol header
    /// naming the client (the text form, v1, as ingress-nginx's `proxy_protocol on`). TCP only.
    pub send_proxy_protocol: bool,
    /// The Service port's endpoints, shared with the table (and any HTTP backend of the same
    /// port), moved in place.
    pub endpoints: Arc<EndpointSet>,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}
