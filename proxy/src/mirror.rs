//! Request mirroring (`mirror-target`): a copy of a request that passed the route's policies is
//! sent to the mirror target, and its answer is read and thrown away. The copy never holds up
//! the request it copies: it goes out on a task of its own, with a body of its own (a replay of
//! the buffered body), and at most [`ProxyConfig::mirrors_in_flight`](crate::ProxyConfig)
//! copies are in flight in the process; a copy beyond that is dropped and counted.
//!
//! As ingress-nginx's internal mirror location (`buildMirrorLocations`: `proxy_set_header Host`
//! and `proxy_pass` only), the copy has the client's method and headers as received, the
//! mirror's `Host`, and none of the headers the proxy adds to the request it forwards
//! (`X-Forwarded-*`, `X-Real-IP`, `X-Request-ID`); hop-by-hop headers and the framing are the
//! copy's own, as nginx's proxy module sets them.

use std::sync::Arc;

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use ostium_model::{Mirror, Protocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Proxy;
use crate::body::BodyClock;
use crate::pool::Destination;
use crate::upstream_body::{OutgoingBody, UpstreamBody};

/// The copies in flight in the process, bounded.
#[derive(Debug)]
pub(crate) struct Mirrors {
    slots: Arc<Semaphore>,
}

/// What a copy keeps of a request, taken before the request is rewritten for its endpoint.
#[derive(Debug)]
pub(crate) struct MirrorCopy {
    mirror: Arc<Mirror>,
    method: Method,
    headers: HeaderMap,
    request_uri: PathAndQuery,
}

impl Mirrors {
    pub(crate) fn new(bound: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(bound)) }
    }

    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

impl MirrorCopy {
    /// What a copy of `request` needs, for the route's `mirror`.
    pub(crate) fn capture<B>(mirror: &Arc<Mirror>, request: &Request<B>) -> Self {
        let mut headers = request.headers().clone();
        for name in [HOST, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, TE, EXPECT, UPGRADE] {
            headers.remove(name);
        }
        headers.remove("keep-alive");
        let request_uri =
            request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        Self { mirror: mirror.clone(), method: request.method().clone(), headers, request_uri }
    }

    /// Whether the copy carries the request's body (which must then be read in full first).
    pub(crate) fn wants_body(&self) -> bool {
        self.mirror.request_body
    }
}

impl Proxy {
    /// Sends a copy of a request to its route's mirror, on a task of its own, with `body` when
    /// the mirror takes it. Returns at once; a copy beyond the bound is dropped and counted.
    pub(crate) fn mirror(&self, copy: MirrorCopy, body: &OutgoingBody) {
        let Some(slot) = self.inner.mirrors.slot() else {
            self.inner.metrics.mirror_dropped();
            tracing::debug!("mirror copies in flight at their limit; this one is dropped");
            return;
        };
        let MirrorCopy { mirror, method, mut headers, request_uri } = copy;
        let Some(uri) = mirror.path_and_query(&request_uri).map(Uri::from) else {
            tracing::debug!("the mirror target and the request URI make no valid URI; no copy sent");
            return;
        };
        let body = match body {
            OutgoingBody::Buffered(buffered) if mirror.request_body => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(buffered.len()));
                let clock = Arc::new(BodyClock::new(buffered.len() > 0));
                UpstreamBody::Replay(buffered.replay(clock))
            }
            _ => UpstreamBody::Empty,
        };
        headers.insert(HOST, mirror.host.clone());
        let mut request = Request::new(body);
        (*request.method_mut(), *request.uri_mut(), *request.headers_mut()) = (method, uri, headers);
        let protocol =
            if mirror.scheme == http::uri::Scheme::HTTPS { Protocol::Https } else { Protocol::Http };
        let (proxy, authority) = (self.clone(), mirror.authority.clone());
        // The copy is given as long as a request's endpoint would be to answer.
        let limit = self.inner.config.connect_timeout + self.inner.config.read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = async {
                let target = Destination::Name(&authority);
                let response = proxy.inner.upstream.request(protocol, None, None, target, request).await?;
                let mut body = response.into_body();
                while body.frame().await.transpose()?.is_some() {} // read and thrown away
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            match tokio::time::timeout(limit, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "mirror copy failed"),
                Err(_) => tracing::debug!(after = ?limit, "mirror copy given up"),
            }
        });
    }
}
