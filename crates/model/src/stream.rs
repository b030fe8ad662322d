//! TCP and UDP services (`--tcp-services-configmap`, `--udp-services-configmap`): a port of the
//! proxy whose connections or datagrams go, unchanged, to the endpoints of a Service port, as
//! ingress-nginx's `stream` servers do. Their endpoint sets are the table's, so endpoints move
//! without a rebuild, as for HTTP backends.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

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

/// How TCP and UDP services behave: ingress-nginx's `proxy-stream-*` ConfigMap keys (its
/// `config.go`; nginx's stream `proxy_*` directives). `Default` is ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// `proxy-stream-timeout` (600 s): a TCP connection or UDP session with nothing moving either
    /// way for this long is closed.
    pub timeout: Duration,
    /// `proxy-stream-next-upstream` (on): when an endpoint cannot be connected to, the next one
    /// is tried.
    pub next_upstream: bool,
    /// `proxy-stream-next-upstream-timeout` (600 s): no other endpoint is tried after this long;
    /// `None` (`0`): no limit.
    pub next_upstream_timeout: Option<Duration>,
    /// `proxy-stream-next-upstream-tries` (3): endpoints tried at most; `None` (`0`): each once.
    pub next_upstream_tries: Option<NonZeroU32>,
    /// `proxy-stream-responses` (1): a UDP session ends once its endpoint has sent this many
    /// datagrams per datagram of the client (so each DNS query is balanced on its own); `None`
    /// (nginx's own default, which the ConfigMap cannot express): only the timeout ends it.
    pub responses: Option<u32>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            next_upstream: true,
            next_upstream_timeout: Some(Duration::from_secs(600)),
            next_upstream_tries: NonZeroU32::new(3),
            responses: Some(1),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}
