//! A token bucket per user: stream opens (and so repository lookups) per
//! second, with a burst.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// Users tracked at most before idle (full) buckets are dropped.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `rate` opens per second per user, `burst` at once. A rate of 0 (or less)
/// lets everything through.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    // std Mutex: one map operation per call, never across an `.await`.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
    }

    /// Whether `user` may open one more stream now (takes a token).
    pub(crate) fn allow(&self, user: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens + elapsed * self.rate < self.burst
            });
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
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

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        assert!((0..3).all(|_| limiter.allow("u")));
        assert!(!limiter.allow("u"));
        assert!(limiter.allow("v"), "per user");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.allow("u"));
        assert!(!limiter.allow("u"));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            (0..3).all(|_| limiter.allow("u")),
            "refills up to the burst only"
        );
        assert!(!limiter.allow("u"));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let limiter = RateLimiter::new(0.0, 1);
        assert!((0..1000).all(|_| limiter.allow("u")));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_users_are_forgotten() {
        let limiter = RateLimiter::new(100.0, 1);
        for n in 0..PRUNE_AT {
            limiter.allow(&format!("u{n}"));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.allow("late");
        assert_eq!(limiter.buckets.lock().map(|b| b.len()).unwrap_or(0), 1);
    }
}
