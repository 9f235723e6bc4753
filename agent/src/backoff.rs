//! Jittered exponential backoff between connection attempts.
//!
//! The base delay starts at `initial`, doubles after each failure up to
//! `max`, and each delay is the base times a random factor in `0.5..1.5`,
//! so a fleet of agents that lost the same controller does not reconnect in
//! lockstep. The jitter is not clipped at `max` (clipping would put half of
//! the agents at exactly `max`, in lockstep again): a delay is at most
//! `1.5 * max`. A session that got a Welcome resets it. [`Backoff::spread`]
//! is full jitter (uniform in `0..=bound`) for the waits that are not
//! failures (see `session.rs`).

use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            base: initial,
            rng,
        }
    }

    /// The delay before the next attempt; doubles the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = (base * 2).min(self.max);
        let factor = 0.5 + self.rng.f64();
        base.mul_f64(factor)
    }

    /// A random delay in `0..=bound` (full jitter), for waits that are not
    /// failures: following a redirect, a lost session's first retry, a busy
    /// controller's hint. The base is left as it is.
    pub fn spread(&mut self, bound: Duration) -> Duration {
        bound.mul_f64(self.rng.f64())
    }

    /// The first delay, as configured.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest base delay, as configured.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Back to `initial` (after a successful session).
    pub fn reset(&mut self) {
        self.base = self.initial;
    }

    /// Straight to `max` (the controller rejected what this agent sends:
    /// retrying fast would not help).
    pub fn jump_to_max(&mut self) {
        self.base = self.max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_within_the_jitter_band_up_to_max() {
        let mut b = Backoff::new(ms(200), ms(10_000), fastrand::Rng::with_seed(7));
        let mut base: f64 = 200.0;
        for _ in 0..12 {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let lo = base * 0.5;
            let hi = base * 1.5;
            assert!(d >= lo - 1e-6 && d <= hi + 1e-6, "{d} not in {lo}..={hi}");
            base = (base * 2.0).min(10_000.0);
        }
    }

    #[test]
    fn delays_never_exceed_one_and_a_half_max() {
        let mut b = Backoff::new(ms(10), ms(50), fastrand::Rng::with_seed(1));
        for _ in 0..1000 {
            assert!(b.next_delay() <= ms(75));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(ms(1000), ms(1000), fastrand::Rng::with_seed(3));
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "delays should vary: {delays:?}");
        assert!(delays.iter().all(|d| *d >= ms(500) && *d <= ms(1500)));
    }

    #[test]
    fn spread_is_uniform_up_to_its_bound_and_leaves_the_base_alone() {
        let mut b = Backoff::new(ms(100), ms(1_000), fastrand::Rng::with_seed(5));
        let delays: Vec<Duration> = (0..1000).map(|_| b.spread(ms(400))).collect();
        assert!(delays.iter().all(|d| *d <= ms(400)));
        assert!(delays.iter().any(|d| *d < ms(40)), "reaches the low end");
        assert!(delays.iter().any(|d| *d > ms(360)), "reaches the high end");
        let mean = delays.iter().sum::<Duration>() / 1000;
        assert!(mean > ms(170) && mean < ms(230), "uniform: mean {mean:?}");
        assert!(b.next_delay() <= ms(150), "the base is still the initial one");
    }

    #[test]
    fn reset_returns_to_initial_and_jump_goes_to_max() {
        let mut b = Backoff::new(ms(100), ms(6_400), fastrand::Rng::with_seed(9));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= ms(150));
        b.jump_to_max();
        assert!(b.next_delay() >= ms(3_200));
    }
}
