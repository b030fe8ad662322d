//! Rate limits: `limit-rps`, `limit-rpm` and `limit-connections` by client address (the TCP
//! peer unless a trusted proxy names another, see `client`), checked where nginx runs `limit_req` and `limit_conn` (its preaccess phase: after the
//! redirects of the rewrite phase, before access control and authentication), and `limit-rate`,
//! which paces the response body. The per-client state is the route's zone, in the model; a
//! request over a limit gets 503, as ingress-nginx's default `limit-req-status-code` and
//! `limit-conn-status-code`.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use ostium_model::{ConnectionSlot, Limited, Policy, ResponseRate};
use tokio::time::{Instant, Sleep};

use crate::client::Client;
use crate::outcome::Outcome;
use crate::{ProxyBody, ProxyError};

/// What an admitted request keeps until its response is sent: its place under
/// `limit-connections` and the pace of its response.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    slot: Option<ConnectionSlot>,
    response_rate: Option<(ResponseRate, Instant)>,
}

/// A response body sent at `limit-rate` (see [`ResponseRate`]): it is read from the endpoint no
/// faster than it may be sent, and a frame larger than the allowance is sent in parts.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: ResponseRate,
    started: Instant,
    /// Body bytes let through so far.
    sent: u64,
    /// The rest of a frame that was larger than the allowance.
    held: Option<Bytes>,
    sleep: Pin<Box<Sleep>>,
    sleeping: bool,
}

pub(super) fn check(policy: &Policy, client: &Client) -> ControlFlow<Outcome, Admission> {
    let slot = match &policy.rate_limit {
        None => None,
        Some(limit) => match limit.admit(client.address.ip(), now_ms()) {
            Ok(slot) => slot,
            Err(Limited::Requests) => {
                return ControlFlow::Break(ProxyError::RateLimited(limit.statuses.requests).into());
            }
            Err(Limited::Connections) => {
                return ControlFlow::Break(ProxyError::TooManyConnections(limit.statuses.connections).into());
            }
        },
    };
    // nginx counts the allowance from the start of the request.
    let response_rate = policy.response_rate.map(|rate| (rate, Instant::now()));
    ControlFlow::Continue(Admission { slot, response_rate })
}

/// Milliseconds on the one clock every zone is read with.
fn now_ms() -> u64 {
    static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_millis() as u64
}

// === impl Admission ===

impl Admission {
    /// The response body, paced at the route's rate, holding the request's place under
    /// `limit-connections` until it is done.
    pub(crate) fn limit(self, body: ProxyBody) -> ProxyBody {
        let throttle = self.response_rate.map(|(rate, started)| Throttle::new(rate, started));
        body.limited(self.slot, throttle)
    }
}

// === impl Throttle ===

impl Throttle {
    fn new(rate: ResponseRate, started: Instant) -> Self {
        Self {
            rate,
            started,
            sent: 0,
            held: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            sleeping: false,
        }
    }

    /// Ready once some bytes may be sent; otherwise the task is woken when they may.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleeping {
                ready!(self.sleep.as_mut().poll(cx));
                self.sleeping = false;
            }
            let now = Instant::now();
            if self.allowance(now) > 0 {
                return Poll::Ready(());
            }
            // Wait for a tenth of a second's worth (or the held part, if smaller), so the body
            // goes in a few frames a second rather than byte by byte.
            let wanted = (self.rate.bytes_per_second / 10).max(1);
            let wanted = self.held.as_ref().map_or(wanted, |held| wanted.min(held.len() as u64));
            let wait = Duration::from_millis((wanted * 1000).div_ceil(self.rate.bytes_per_second));
            self.sleep.as_mut().reset(now + wait);
            self.sleeping = true;
        }
    }

    /// The held part of a frame, if any, to send before reading on.
    pub(crate) fn take_held(&mut self) -> Option<Bytes> {
        self.held.take()
    }

    /// What may be sent now of `data`; the rest is held for later.
    pub(crate) fn pass(&mut self, mut data: Bytes) -> Bytes {
        let allowance = usize::try_from(self.allowance(Instant::now())).unwrap_or(usize::MAX);
        if data.len() > allowance {
            self.held = Some(data.split_off(allowance));
        }
        self.sent += data.len() as u64;
        data
    }

    /// Bytes held back, not yet sent.
    pub(crate) fn held_len(&self) -> u64 {
        self.held.as_ref().map_or(0, |held| held.len() as u64)
    }

    /// nginx's write filter: `limit_rate × (seconds since the request started + 1) −
    /// (sent − limit_rate_after)`, counted here in milliseconds rather than whole seconds.
    fn allowance(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_millis() as u64;
        let paced = self.rate.bytes_per_second.saturating_mul(elapsed + 1000) / 1000;
        self.rate.after.saturating_add(paced).saturating_sub(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(bytes_per_second: u64, after: u64) -> Throttle {
        Throttle::new(ResponseRate { bytes_per_second, after }, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_bytes_and_a_second_of_allowance_go_at_once_then_the_rate() {
        let mut throttle = throttle(1000, 500);
        assert_eq!(throttle.pass(Bytes::from(vec![0; 2000])).len(), 1500, "after + one second");
        assert_eq!(throttle.held_len(), 500);
        tokio::time::advance(Duration::from_millis(250)).await;
        let held = throttle.take_held().unwrap();
        assert_eq!(throttle.pass(held).len(), 250, "a quarter of a second's worth");
        assert_eq!(throttle.held_len(), 250);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_allowance_it_waits_for_a_tenth_of_a_second_worth() {
        let mut throttle = throttle(1000, 0);
        assert_eq!(throttle.pass(Bytes::from(vec![0; 5000])).len(), 1000);
        let started = Instant::now();
        std::future::poll_fn(|cx| throttle.poll_ready(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let held = throttle.take_held().unwrap();
        assert_eq!(throttle.pass(held).len(), 100);
    }
}
