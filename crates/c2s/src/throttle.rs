//! Slows down password guessing: after `after` failures from one IP address
//! within a window, every further attempt from it waits, doubling per failure.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub struct AuthThrottle {
    failures: DashMap<IpAddr, (u32, Instant)>,
    after: u32,
    window: Duration,
    delay: Duration,
}

/// Entries kept before stale ones are swept, so a scan from many addresses
/// cannot grow the map without bound.
const SWEEP_AT: usize = 10_000;
const MAX_DELAY: Duration = Duration::from_secs(30);

impl AuthThrottle {
    pub fn new(after: u32, window: Duration, delay: Duration) -> Self {
        AuthThrottle { failures: DashMap::new(), after, window, delay }
    }

    /// How long to wait before answering an attempt from `ip`.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let Some(entry) = self.failures.get(&ip) else {
            return Duration::ZERO;
        };
        let (count, since) = *entry;
        if since.elapsed() > self.window || count < self.after {
            return Duration::ZERO;
        }
        let doublings = (count - self.after).min(16);
        (self.delay * 2u32.pow(doublings)).min(MAX_DELAY)
    }

    pub fn failed(&self, ip: IpAddr) {
        if self.failures.len() >= SWEEP_AT {
            self.failures.retain(|_, (_, since)| since.elapsed() <= self.window);
        }
        let mut entry = self.failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() > self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_after_threshold_and_doubles() {
        let t = AuthThrottle::new(2, Duration::from_secs(60), Duration::from_millis(100));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::ZERO);
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::from_millis(100));
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::from_millis(200));
        assert_eq!(t.delay("192.0.2.2".parse().unwrap()), Duration::ZERO, "other addresses unaffected");
        t.succeeded(ip);
        assert_eq!(t.delay(ip), Duration::ZERO);
    }
}
