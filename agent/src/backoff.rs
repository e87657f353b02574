//! Reconnection delays: exponential from 1 s, doubling to at most 30 s,
//! with jitter so that agents cut off together (a control plane restart)
//! do not all come back in the same instant.
//!
//! [`delay`] is pure; the caller supplies the random factor.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(30);

/// The delay before reconnection attempt `attempt` (0 for the first
/// retry). `jitter` in [0, 1) takes up to a fifth off the nominal delay,
/// so the cap is never exceeded.
pub fn delay(attempt: u32, jitter: f64) -> Duration {
    let nominal = INITIAL
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .unwrap_or(MAX)
        .min(MAX);
    nominal.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// Attempt counting for one reconnect loop.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = delay(self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Called once a connection has proved good.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let nominal: Vec<u64> = (0..8).map(|n| delay(n, 0.0).as_secs()).collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(delay(1000, 0.0), MAX);
    }

    #[test]
    fn jitter_only_shortens() {
        assert_eq!(delay(0, 0.999_999).as_millis(), 800);
        assert_eq!(delay(10, 0.5), Duration::from_secs(27));
        assert!(delay(10, 7.0) >= MAX.mul_f64(0.8));
    }

    #[test]
    fn a_good_connection_resets_the_sequence() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        backoff.next_delay();
        backoff.next_delay();
        assert!(backoff.next_delay() > Duration::from_secs(6));
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL);
        assert!(first <= INITIAL);
    }
}
