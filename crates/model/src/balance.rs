//! `load-balance`: how a route's requests choose among its endpoints.
//!
//! `ewma` follows ingress-nginx's Lua balancer (`rootfs/etc/nginx/lua/balancer/ewma.lua`): each
//! endpoint keeps a moving average of its response times that decays with time (not with the
//! number of samples), two endpoints not yet tried by the request are drawn at random, and the
//! one with the lower decayed average wins. Like ingress-nginx's version (and unlike Finagle's
//! peak-EWMA it comes from) the score is the latency alone; the in-flight count plays no part.

/// The decay time of the average, as ingress-nginx's `DECAY_TIME` (10 seconds): a sample
/// `t` microseconds old weighs `exp(-t / DECAY_TIME_US)` against the newer one.
pub const DECAY_TIME_US: f64 = 10_000_000.0;

/// A route's balancing algorithm (`load-balance`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalance {
    /// ingress-nginx's default: each endpoint in turn (ostium also lets a random second
    /// candidate with fewer requests in flight go first, see the proxy's balancer).
    #[default]
    RoundRobin,
    /// The lower latency average of two random candidates.
    Ewma,
}

/// The average after a sample of `sample_us` at `now_us`, from `average_us` last updated at
/// `touched_us` (0: never, so the sample is the whole average). As ingress-nginx's
/// `decay_ewma`; with a sample of 0 it gives the score an endpoint is judged by at `now_us`.
pub fn decay_ewma(average_us: f64, touched_us: u64, sample_us: f64, now_us: u64) -> f64 {
    if touched_us == 0 {
        return sample_us;
    }
    let elapsed = now_us.saturating_sub(touched_us) as f64;
    let weight = (-elapsed / DECAY_TIME_US).exp();
    average_us * weight + sample_us * (1.0 - weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_is_the_average_and_old_ones_fade_with_time() {
        assert_eq!(decay_ewma(0.0, 0, 500.0, 1), 500.0);
        // A new sample right after the last barely moves the average ...
        let soon = decay_ewma(1000.0, 1_000_000, 0.0, 1_000_001);
        assert!((soon - 1000.0).abs() < 0.01, "{soon}");
        // ... one a decay time later weighs 1 - 1/e.
        let later = decay_ewma(1000.0, 1_000_000, 0.0, 11_000_000);
        assert!((later - 1000.0 / std::f64::consts::E).abs() < 0.01, "{later}");
    }
}
