//! The upstream phase: a request goes to an endpoint the balancer picks, and, when that try
//! fails in a way the route's `proxy-next-upstream` lists, to another, as nginx's
//! `proxy_next_upstream` decides:
//!
//! - a try follows only a listed failure (`error`, `timeout`, `invalid_header`, `http_<code>`),
//!   while tries are left (`proxy-next-upstream-tries`, the first included; 0: each endpoint
//!   once) and before `proxy-next-upstream-timeout` has passed since the first began;
//! - a POST, LOCK or PATCH that reached an endpoint is not sent again unless `non_idempotent` is
//!   listed (a refused connection sent nothing, so it moves on);
//! - a streamed body (`proxy-request-buffering: off`) is not sent again once a try sent it; a
//!   buffered one is replayed from the start;
//! - endpoints already tried are avoided while others are left (then each may be tried again);
//! - nothing is tried again once the response head is taken: the answer is decided before a
//!   byte goes to the client. When the last try ends in a listed status, that response is it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper::upgrade::OnUpgrade;
use ostium_model::{
    BackendTls, Endpoint, Endpoints, LoadBalance, NextUpstream, Protocol, RetryCondition, Target,
};

use crate::affinity::Stickiness;
use crate::body::{BodyClock, client_body_fault};
use crate::buffer::ReplayError;
use crate::error::find_cause;
use crate::forward::{Clocks, Trace};
use crate::pool::{Destination, PooledBody};
use crate::rewrite::Outgoing;
use crate::upstream::{self, scheme};
use crate::upstream_body::UpstreamBody;
use crate::{Proxy, ProxyError};

/// Where a request's tries go: a name (an ExternalName Service), or the backend's endpoints.
#[derive(Debug)]
enum Peers {
    Name(Authority),
    Endpoints(Arc<Endpoints>),
}

/// How a try failed.
#[derive(Debug)]
struct Failed {
    error: ProxyError,
    /// The `proxy_next_upstream` condition the failure meets; `None` for failures no other
    /// endpoint can help with (the client's body, our own temporary file).
    condition: Option<RetryCondition>,
    /// Whether the request reached the endpoint (anything but a failed connection).
    sent: bool,
}

/// The count and clock of a request's tries against its route's `proxy-next-upstream`.
#[derive(Debug)]
struct Tries<'a> {
    policy: &'a NextUpstream,
    /// POST, LOCK and PATCH: not sent again once sent, unless `non_idempotent`.
    idempotent: bool,
    max: u32,
    made: u32,
    started: Instant,
}

impl Proxy {
    /// Sends a request to its backend, spoken to with its protocol and the route's TLS
    /// settings, trying endpoints as the route's `proxy-next-upstream` allows (the endpoint a
    /// session or hash key ties the request to, if any). Returns the response to pass on, with
    /// the client's side of an upgrade it asked for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn to_backend(
        &self,
        outgoing: Outgoing,
        target: Target,
        (protocol, tls): (Protocol, Option<&Arc<BackendTls>>),
        clocks: Clocks,
        (next_upstream, balance): (&NextUpstream, LoadBalance),
        mut stickiness: Option<&mut Stickiness>,
        trace: &mut Trace,
    ) -> Result<(Response<PooledBody>, Option<OnUpgrade>), ProxyError> {
        let Outgoing { mut parts, path_and_query, mut body, client_upgrade } = outgoing;
        let peers = match target {
            Target::Unavailable => return Err(ProxyError::BackendUnavailable),
            Target::ExternalName(authority) => Peers::Name(authority),
            Target::Endpoints(set) | Target::ClusterIp(set) => Peers::Endpoints(set.load()),
        };
        let (scheme, _) = scheme(protocol);
        let mut tries = Tries::new(next_upstream, &parts.method, peers.count());
        let mut tried = Vec::new();
        let mut this_try = body.for_try().ok_or(ProxyError::BadRequest("request body"))?;
        loop {
            let retry = tries.made > 0;
            let (authority, endpoint) =
                peers.pick(self, balance, &mut tried, stickiness.as_deref_mut(), retry)?;
            // A try that may be followed by another sends a copy of the head.
            let mut head = match tries.left_after_this() {
                true => copy_head(&parts),
                false => std::mem::replace(&mut parts, Request::new(()).into_parts().0),
            };
            head.uri = upstream_uri(head.version, scheme.clone(), &authority, path_and_query.clone())?;
            if head.version != Version::HTTP_2 && !head.headers.contains_key(HOST) {
                // HTTP/1.1 requires a Host; an HTTP/1.0 client may have sent none.
                head.headers.insert(
                    HOST,
                    HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest("URI"))?,
                );
            }
            let destination = match &endpoint {
                Some(endpoint) => Destination::Endpoint(endpoint),
                None => Destination::Name(&authority),
            };
            let (upstream_body, clock) = this_try;
            let request = Request::from_parts(head, upstream_body);
            let no_body = BodyClock::new(false);
            let clock = clock.as_deref().unwrap_or(&no_body);
            let result = self.send((protocol, tls), destination, request, clock, clocks, trace).await;
            let (condition, sent) = match &result {
                Ok(response) => (Some(RetryCondition::Status(response.status().as_u16())), true),
                Err(failed) => (failed.condition, failed.sent),
            };
            let again = condition.is_some_and(|c| tries.another(c, sent)) && body.can_resend(sent);
            let Some(next) = again.then(|| body.for_try()).flatten() else {
                return result.map(|response| (response, client_upgrade)).map_err(|failed| failed.error);
            };
            if let Ok(response) = &result {
                tracing::debug!(
                    status = response.status().as_u16(),
                    "trying another endpoint after this answer"
                );
            }
            self.inner.metrics.retry();
            tried.extend(endpoint.map(|e| e.addr));
            this_try = next;
        }
    }

    /// One try, under nginx's clocks: `proxy_send_timeout` while the endpoint is not taking the
    /// body, `proxy_read_timeout` from the end of the request to the response head (the client's
    /// own pauses are timed by the request body itself).
    async fn send(
        &self,
        (protocol, tls): (Protocol, Option<&Arc<BackendTls>>),
        destination: Destination<'_>,
        request: Request<UpstreamBody>,
        clock: &BodyClock,
        clocks: Clocks,
        trace: &mut Trace,
    ) -> Result<Response<PooledBody>, Failed> {
        let started = Instant::now();
        let endpoint = match destination {
            Destination::Endpoint(endpoint) => Some(endpoint),
            Destination::Name(_) => None,
        };
        let _in_flight = endpoint.map(InFlight::start);
        trace.upstream = endpoint.map(|e| e.addr);
        trace.upstream_started = Some(started);
        let upstream = self.inner.upstream.request(protocol, tls, clocks.connect, destination, request);
        let result = tokio::select! {
            result = upstream => Some(result),
            () = clock.upstream_stalled(clocks.send, clocks.read) => None,
        };
        let took = started.elapsed();
        trace.upstream_duration = Some(took);
        // The latency average takes every answer and every failure after the request was sent
        // (a refused connection goes to passive health instead).
        let record_latency = || {
            let now = self.inner.upstream.now_us();
            endpoint.inspect(|e| e.record_latency(took.as_micros() as u64, now));
        };
        let error = match result {
            Some(Ok(response)) => {
                endpoint.inspect(|e| e.record_success());
                record_latency();
                return Ok(response);
            }
            Some(Err(error)) => error,
            None => {
                record_latency();
                return Err(Failed::sent(ProxyError::UpstreamTimeout, RetryCondition::Timeout));
            }
        };
        if let Some(fault) = client_body_fault(&error) {
            return Err(Failed { error: fault, condition: None, sent: true });
        }
        if let Some(replay) = find_cause::<ReplayError>(&error) {
            tracing::warn!(error = %replay, "request failed");
            return Err(Failed { error: ProxyError::BodyBufferFailed, condition: None, sent: true });
        }
        if !error.is_connect() {
            record_latency();
            tracing::debug!(%error, "upstream request failed");
            if find_cause::<hyper::Error>(&error).is_some_and(hyper::Error::is_parse) {
                return Err(Failed::sent(ProxyError::UpstreamInvalidResponse, RetryCondition::InvalidHeader));
            }
            return Err(Failed::sent(ProxyError::UpstreamReset, RetryCondition::Error));
        }
        self.inner.metrics.connect_error();
        let upstream = &self.inner.upstream;
        if let Some(e) = endpoint
            && e.record_failure(upstream.now_ms(), upstream.eject_for_ms())
        {
            tracing::warn!(endpoint = %e.addr, "endpoint refuses connections; skipping it for a while");
        }
        let (error, condition) = match find_cause::<std::io::Error>(&error) {
            Some(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                (ProxyError::UpstreamTimeout, RetryCondition::Timeout)
            }
            _ => (ProxyError::ConnectFailed, RetryCondition::Error),
        };
        Err(Failed { error, condition: Some(condition), sent: false })
    }
}

// === impl Peers ===

impl Peers {
    fn count(&self) -> usize {
        match self {
            Self::Name(_) => 1,
            Self::Endpoints(endpoints) => endpoints.len(),
        }
    }

    /// Where the next try goes: the endpoint the request is tied to, else an endpoint not in
    /// `tried` if there is one (else `tried` is cleared and every endpoint may be tried again).
    fn pick(
        &self,
        proxy: &Proxy,
        balance: LoadBalance,
        tried: &mut Vec<SocketAddr>,
        stickiness: Option<&mut Stickiness>,
        retry: bool,
    ) -> Result<(Authority, Option<Arc<Endpoint>>), ProxyError> {
        let endpoints = match self {
            Self::Name(authority) => return Ok((authority.clone(), None)),
            Self::Endpoints(endpoints) => endpoints,
        };
        if let Some(endpoint) = stickiness.and_then(|s| s.pick(endpoints, tried, retry)) {
            return Ok((endpoint.authority.clone(), Some(endpoint)));
        }
        let now = proxy.inner.upstream.now_ms();
        let pick = |tried: &[SocketAddr]| match balance {
            LoadBalance::RoundRobin => upstream::pick(endpoints, now, tried),
            LoadBalance::Ewma => upstream::pick_ewma(endpoints, (now, proxy.inner.upstream.now_us()), tried),
        };
        let endpoint = pick(tried)
            .or_else(|| {
                tried.clear();
                pick(tried)
            })
            .ok_or(ProxyError::NoEndpoints)?;
        Ok((endpoint.authority.clone(), Some(endpoint)))
    }
}

// === impl Failed ===

impl Failed {
    /// A failure after the request reached the endpoint.
    fn sent(error: ProxyError, condition: RetryCondition) -> Self {
        Self { error, condition: Some(condition), sent: true }
    }
}

// === impl Tries ===

impl<'a> Tries<'a> {
    /// The tries of a request with `method` to a backend of `peers` endpoints.
    fn new(policy: &'a NextUpstream, method: &Method, peers: usize) -> Self {
        let idempotent = !(method == Method::POST || method == Method::PATCH || method.as_str() == "LOCK");
        let max = match policy.tries {
            0 => u32::try_from(peers).unwrap_or(u32::MAX).max(1),
            tries => tries,
        };
        Self { policy, idempotent, max, made: 0, started: Instant::now() }
    }

    /// Counts the try about to be made; whether another could follow it.
    fn left_after_this(&mut self) -> bool {
        self.made += 1;
        self.made < self.max && self.policy.conditions != Default::default()
    }

    /// Whether a try that failed with `condition` is followed by another.
    fn another(&self, condition: RetryCondition, sent: bool) -> bool {
        let timed_out = self.policy.timeout.is_some_and(|limit| self.started.elapsed() >= limit);
        self.policy.conditions.contains(condition)
            && (self.idempotent || !sent || self.policy.non_idempotent)
            && self.made < self.max
            && !timed_out
    }
}

/// Counts a request against an endpoint until dropped (also when the request is cancelled).
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn start(endpoint: &'a Endpoint) -> Self {
        endpoint.start_request();
        Self(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finish_request();
    }
}

/// A copy of a request head for a try (extensions are the server's and stay behind).
fn copy_head(parts: &Parts) -> Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

fn upstream_uri(
    version: Version,
    scheme: Scheme,
    authority: &Authority,
    path_and_query: PathAndQuery,
) -> Result<Uri, ProxyError> {
    // HTTP/1.1 sends the path alone; HTTP/2 the scheme and authority too (`:scheme`,
    // `:authority`).
    if version != Version::HTTP_2 {
        return Ok(Uri::from(path_and_query));
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("URI"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ostium_model::RetryConditions;

    use super::*;

    fn on(conditions: &[RetryCondition]) -> NextUpstream {
        let conditions = conditions.iter().fold(RetryConditions::default(), |set, c| set.with(*c));
        NextUpstream { conditions, ..NextUpstream::default() }
    }

    #[test]
    fn tries_count_the_first_and_zero_means_each_endpoint_once() {
        let policy = NextUpstream::default();
        let mut tries = Tries::new(&policy, &Method::GET, 10);
        assert!(tries.left_after_this() && tries.another(RetryCondition::Error, true));
        assert!(tries.left_after_this() && tries.another(RetryCondition::Error, true));
        assert!(!tries.left_after_this() && !tries.another(RetryCondition::Error, true), "3 in all");
        let each_once = NextUpstream { tries: 0, ..policy };
        let mut tries = Tries::new(&each_once, &Method::GET, 2);
        assert!(tries.left_after_this());
        assert!(!tries.left_after_this());
    }

    #[test]
    fn only_listed_conditions_lead_to_another_try() {
        let policy = on(&[RetryCondition::Status(502), RetryCondition::InvalidHeader]);
        let mut tries = Tries::new(&policy, &Method::GET, 3);
        tries.left_after_this();
        assert!(tries.another(RetryCondition::Status(502), true));
        assert!(tries.another(RetryCondition::InvalidHeader, true));
        assert!(!tries.another(RetryCondition::Status(503), true));
        assert!(!tries.another(RetryCondition::Error, false));
        let off = on(&[]);
        assert!(!Tries::new(&off, &Method::GET, 3).left_after_this(), "off: one try, the head moved");
    }

    #[test]
    fn non_idempotent_methods_move_on_only_unsent_or_when_listed() {
        let policy = NextUpstream::default();
        for method in [Method::POST, Method::PATCH, Method::from_bytes(b"LOCK").unwrap()] {
            let mut tries = Tries::new(&policy, &method, 3);
            tries.left_after_this();
            assert!(!tries.another(RetryCondition::Error, true), "{method} sent");
            assert!(tries.another(RetryCondition::Error, false), "{method} refused");
        }
        let listed = NextUpstream { non_idempotent: true, ..policy };
        let mut tries = Tries::new(&listed, &Method::POST, 3);
        tries.left_after_this();
        assert!(tries.another(RetryCondition::Timeout, true));
        let mut put = Tries::new(&policy, &Method::PUT, 3);
        put.left_after_this();
        assert!(put.another(RetryCondition::Timeout, true), "PUT is idempotent");
    }

    #[test]
    fn no_try_starts_after_the_time_limit() {
        let policy = NextUpstream { timeout: Some(Duration::ZERO), ..NextUpstream::default() };
        let mut tries = Tries::new(&policy, &Method::GET, 3);
        tries.left_after_this();
        assert!(!tries.another(RetryCondition::Error, false));
    }
}
