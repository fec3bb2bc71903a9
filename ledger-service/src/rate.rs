//! Rates, as token buckets:
//!
//! - how often callers without a bearer token are answered: one bucket for
//!   all of them (the tiles port cannot tell them apart), filled at
//!   `--public-requests-per-second` up to `--public-burst`; a request that
//!   finds it empty is told when the next one will be there (HTTP 429 with
//!   `Retry-After`) — [`TokenBucket::take`];
//! - how many bytes of entries are read per second for callers who may not
//!   append (`--read-bytes-per-second`): a page is read once the bucket is
//!   out of debt and then charged what it holds, so readers go as fast as
//!   the rate allows, never faster, and never hold a page while they wait
//!   — [`TokenBucket::wait`] and [`TokenBucket::charge`].

use std::time::{Duration, Instant};

/// A token bucket; time is passed in, so it is tested without sleeping.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Full at `now`: `burst` at once, then `per_second`.
    pub(crate) fn new(per_second: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            per_second: per_second.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: now,
        }
    }

    /// Adds what accrued since the last look.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = self.at.max(now);
    }

    /// How long until the bucket is out of debt (zero when it is).
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }

    /// Takes `amount`, into debt if need be.
    pub(crate) fn charge(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.tokens -= amount as f64;
    }

    /// Takes one request's token, or says how long until there is one.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

/// The whole seconds of a `Retry-After` header for `wait` (at least one).
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_a_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        let wait = bucket.take(start).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // A tenth of a second later there is one more.
        let later = start + Duration::from_millis(100);
        bucket.take(later).unwrap();
        assert!(bucket.take(later).is_err());
        // A long quiet spell fills it up to the burst, no further.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            bucket.take(much_later).unwrap();
        }
        assert!(bucket.take(much_later).is_err());
    }

    #[test]
    fn a_flood_is_answered_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 100, start);
        // 1,000 requests a second for 10 s: the burst, then 100 a second.
        let admitted = (0..10_000u64)
            .filter(|i| bucket.take(start + Duration::from_millis(*i)).is_ok())
            .count();
        assert!((1_000..=1_101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn bytes_read_are_paid_for_before_the_next_read() {
        let start = Instant::now();
        let mut bytes = TokenBucket::new(1 << 20, 1 << 20, start);
        assert_eq!(bytes.wait(start), Duration::ZERO);
        // A burst's worth, then four more pages of 1 MiB: the debt is four
        // seconds at 1 MiB/s.
        bytes.charge(1 << 20, start);
        for _ in 0..4 {
            bytes.charge(1 << 20, start);
        }
        assert_eq!(bytes.wait(start), Duration::from_secs(4));
        assert_eq!(
            bytes.wait(start + Duration::from_secs(1)),
            Duration::from_secs(3)
        );
        assert_eq!(bytes.wait(start + Duration::from_secs(4)), Duration::ZERO);
        // Over a long run, the rate: 100 pages of 1 MiB read as soon as
        // allowed take 99 s beyond the burst.
        let mut now = start + Duration::from_secs(100);
        let mut bytes = TokenBucket::new(1 << 20, 1 << 20, now);
        let began = now;
        for _ in 0..100 {
            now += bytes.wait(now);
            bytes.charge(1 << 20, now);
        }
        let took = now - began;
        assert!(
            (Duration::from_secs(98)..=Duration::from_secs(100)).contains(&took),
            "{took:?}"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
    }
}
