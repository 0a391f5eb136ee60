//! A token bucket: `rate` tokens per second up to `burst`, taken one per request or action. It
//! is given the time of each take, so its arithmetic is tested without a clock.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `rate` per second, bursts of twice that (the request limiter).
    pub fn per_second(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        TokenBucket::new(rate, rate * 2.0, now)
    }

    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        let taken = (0..10).filter(|_| b.take(t0)).count();
        assert_eq!(taken, 3, "the burst, at once");
        assert!(!b.take(t0 + Duration::from_millis(400)), "0.8 of a token");
        assert!(
            b.take(t0 + Duration::from_millis(500)),
            "one token after 0.5 s"
        );
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn the_request_limiter_bursts_twice_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(50, t0);
        assert_eq!(b.burst(), 100);
        assert_eq!((0..200).filter(|_| b.take(t0)).count(), 100);
    }
}
