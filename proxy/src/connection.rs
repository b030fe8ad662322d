//! The clocks of a client connection, as nginx keeps them: from accept to the first complete
//! request head (`client_header_timeout`, TLS handshake and protocol detection included), from
//! the first byte of a later head to its end (the same), and idle between requests
//! (`keepalive_timeout` for HTTP/1, `http2` idle for HTTP/2). A connection whose clock runs out
//! while no request is in flight is shut down gracefully (HTTP/1: closed; HTTP/2: GOAWAY), and
//! dropped if it has not closed a short while later.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::framing::FramingFlags;

/// Timeouts and limits of client connections; the defaults are nginx's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to a complete first request head, and from the first byte of any later head
    /// to its end (`client_header_timeout`, 60 s).
    pub client_header_timeout: Duration,
    /// Longest pause between two reads of a request body (`client_body_timeout`, 60 s): 408.
    pub client_body_timeout: Duration,
    /// An HTTP/1 connection with no request in flight is closed after this (`keepalive_timeout`,
    /// 75 s).
    pub keepalive_timeout: Duration,
    /// An HTTP/2 connection with no open stream is closed after this (nginx's 3 min).
    pub http2_idle_timeout: Duration,
    /// Open client connections per listener; new ones are closed at once beyond it.
    pub max_connections: usize,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Requests served on one HTTP/1 connection before it closes (`keepalive_requests`, 1000).
    pub keepalive_requests: u32,
    /// Streams an HTTP/2 client may open at once (ingress-nginx's 128).
    pub http2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            http2_idle_timeout: Duration::from_secs(180),
            max_connections: default_max_connections(),
            max_header_bytes: 64 * 1024,
            keepalive_requests: 1000,
            http2_max_concurrent_streams: 128,
        }
    }
}

impl ConnectionLimits {
    /// These limits, with the ConfigMap's where it sets them.
    pub(crate) fn with(&self, settings: &ostium_model::ClientLimits) -> ConnectionLimits {
        ConnectionLimits {
            client_header_timeout: settings.header_timeout.unwrap_or(self.client_header_timeout),
            client_body_timeout: settings.body_timeout.unwrap_or(self.client_body_timeout),
            keepalive_timeout: settings.keepalive_timeout.unwrap_or(self.keepalive_timeout),
            max_header_bytes: settings.max_header_bytes.unwrap_or(self.max_header_bytes),
            keepalive_requests: settings.keepalive_requests,
            http2_max_concurrent_streams: settings.http2_max_concurrent_streams,
            ..self.clone()
        }
    }
}

/// A quarter of the file-descriptor limit per listener: each client connection may hold an
/// upstream connection too, and the HTTP and HTTPS listeners share the limit.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    usize::try_from(limit / 4).unwrap_or(usize::MAX).clamp(16, 1 << 20)
}

/// What a connection's clock needs to know, shared by the connection's requests.
#[derive(Debug)]
pub(crate) struct Activity {
    accepted: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `accepted` when the last request finished; `NEVER` before the first.
    idle_since: AtomicU64,
    is_http2: AtomicBool,
    became_idle: Notify,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    pub(crate) fn new(accepted: Instant) -> Self {
        Self {
            accepted,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(NEVER),
            is_http2: AtomicBool::new(false),
            became_idle: Notify::new(),
        }
    }

    /// Counts a request as in flight until the returned guard is dropped (with its response
    /// body, so a long download is not idle time).
    pub(crate) fn start_request(self: &std::sync::Arc<Self>, is_http2: bool) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if is_http2 {
            self.is_http2.store(true, Ordering::Relaxed);
        }
        RequestGuard(self.clone())
    }

    /// When the connection's clock runs out, given what is going on now; `None` while a request
    /// is in flight.
    fn deadline(&self, limits: &ConnectionLimits, framing: Option<&FramingFlags>) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.idle_since.load(Ordering::Acquire);
        if idle_since == NEVER {
            return Some(self.accepted + limits.client_header_timeout);
        }
        if let Some(started) = framing.and_then(FramingFlags::head_started) {
            return Some(started + limits.client_header_timeout);
        }
        let idle = match self.is_http2.load(Ordering::Relaxed) {
            true => limits.http2_idle_timeout,
            false => limits.keepalive_timeout,
        };
        Some(self.accepted + Duration::from_millis(idle_since) + idle)
    }

    /// Whether a request has arrived on the connection.
    pub(crate) fn has_had_requests(&self) -> bool {
        self.idle_since.load(Ordering::Acquire) != NEVER || self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Resolves when the connection should be shut down: its clock ran out with no request in
    /// flight.
    pub(crate) async fn expired(&self, limits: &ConnectionLimits, framing: Option<&FramingFlags>) {
        loop {
            let became_idle = self.became_idle.notified();
            match self.deadline(limits, framing) {
                None => became_idle.await,
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => {
                    // Re-judged at the deadline: a request may have come and gone meanwhile.
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = became_idle => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(crate) struct RequestGuard(std::sync::Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.accepted.elapsed().as_millis() as u64;
        activity.idle_since.store(now, Ordering::Release);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.became_idle.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            client_header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            http2_idle_timeout: Duration::from_secs(180),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_must_come_within_the_header_timeout() {
        let activity = Activity::new(Instant::now());
        let started = Instant::now();
        activity.expired(&limits(), None).await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_stops_the_clock_and_idle_time_restarts_it() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let guard = activity.start_request(false);
        let started = Instant::now();
        let finish = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            drop(guard);
        };
        let limits = limits();
        tokio::join!(activity.expired(&limits, None), finish);
        assert_eq!(started.elapsed(), Duration::from_secs(175), "100 s in flight, then 75 s idle");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_idle_for_their_own_timeout() {
        let activity = Arc::new(Activity::new(Instant::now()));
        drop(activity.start_request(true));
        let started = Instant::now();
        activity.expired(&limits(), None).await;
        assert_eq!(started.elapsed(), Duration::from_secs(180));
    }

    #[test]
    fn the_default_connection_cap_follows_the_descriptor_limit() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap();
        assert_eq!(default_max_connections() as u64, (limit / 4).clamp(16, 1 << 20));
    }
}
