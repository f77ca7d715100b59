//! A token bucket for the stanzas of one incoming stream: a peer that sends
//! faster than its rate is read more slowly (TCP pushes back on it), so a
//! flood cannot crowd out local delivery, and nothing it sent is dropped.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Rate {
    per_second: f64,
    /// Stanzas that may come without waiting; negative: owed.
    tokens: f64,
    last: Instant,
}

impl Rate {
    /// `per_second` stanzas a second, with a second's worth as the burst.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second);
        Rate { per_second, tokens: per_second, last: now }
    }

    /// Counts one stanza; how long to wait before handling it.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second) - 1.0;
        self.last = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_stanzas_wait_their_turn() {
        let start = Instant::now();
        let mut rate = Rate::new(10, start);
        for _ in 0..10 {
            assert_eq!(rate.take(start), Duration::ZERO, "a second's worth at once");
        }
        assert_eq!(rate.take(start), Duration::from_millis(100));
        assert_eq!(rate.take(start), Duration::from_millis(200), "each one more waits longer");
        // Waiting refills: 300 ms later the debt is paid and one is free again.
        let later = start + Duration::from_millis(300);
        assert_eq!(rate.take(later), Duration::ZERO);
        // Idle time refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(rate.take(much_later), Duration::ZERO);
        }
        assert!(rate.take(much_later) > Duration::ZERO);
    }
}
