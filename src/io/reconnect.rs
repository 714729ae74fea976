//! When to try the broker again after a connection failed or was lost: exponential backoff
//! with jitter, capped. A connection that dies soon after it was made does not count as a
//! recovery, so a broker that accepts and then drops us at once (a poison message, a refused
//! session) is retried at a growing pace, not 35 times a second. Pure: `now` passed in.

use std::time::{Duration, Instant};

/// Exponential backoff with jitter (each delay between half and all of its ceiling).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempts: u32,
    /// A connection must last this long to reset the backoff.
    stable_after: Duration,
    connected_at: Option<Instant>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, stable_after: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempts: 0,
            stable_after,
            connected_at: None,
        }
    }

    /// Failed attempts since the last stable connection.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempts.min(16));
        self.attempts = self.attempts.saturating_add(1);
        let ceiling = exp.min(self.cap);
        ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
    }

    /// A connection was made at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection made last ended at `now`: if it lasted, the next failure starts over
    /// from the base delay.
    pub fn lost(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= self.stable_after {
                self.attempts = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn grows_with_jitter_up_to_the_cap() {
        let mut b = backoff();
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10), "{d:?}");
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_secs(5), "{capped:?}");
    }

    #[test]
    fn only_a_lasting_connection_resets_it() {
        let t0 = Instant::now();
        let mut b = backoff();
        for _ in 0..5 {
            b.next_delay();
        }
        // Connected, then dropped after a second: still backing off.
        b.connected(t0);
        b.lost(t0 + Duration::from_secs(1));
        assert_eq!(b.attempts(), 5);
        assert!(b.next_delay() >= Duration::from_millis(1600));
        // A connection that lasted resets it.
        b.connected(t0 + Duration::from_secs(2));
        b.lost(t0 + Duration::from_secs(60));
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
