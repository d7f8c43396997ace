//! A token bucket, sans-IO: the caller passes the time. Used for upstream's `messageQPS` /
//! `messageBurst` on the edge and for per-node upstream fairness in the cloud.

use std::time::{Duration, Instant};

/// `qps` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    qps: f64,
    burst: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(qps: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            qps: f64::from(qps.max(1)),
            burst,
            last: None,
        }
    }

    /// Take a token at `now`: `None` when one was available, else the instant one will be.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        }
        self.last = Some(now);
        // Tolerate float rounding: a token that is due now is available now.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            None
        } else {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.qps);
            Some(now + wait.max(Duration::from_micros(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_qps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        for _ in 0..3 {
            assert_eq!(b.take(t0), None);
        }
        let next = b.take(t0).unwrap();
        assert_eq!(next.duration_since(t0), Duration::from_millis(100));
        // Half a period later there is still no token; at the period there is one.
        assert!(b.take(t0 + Duration::from_millis(50)).is_some());
        assert_eq!(b.take(t0 + Duration::from_millis(100)), None);
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), None);
        }
        assert!(b.take(later).is_some());
    }

    #[test]
    fn sustained_rate_is_qps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(30, 60);
        let mut now = t0;
        let mut sent = 0;
        let mut steps = 0;
        while now < t0 + Duration::from_secs(10) {
            steps += 1;
            assert!(steps < 10_000, "the bucket must make progress");
            match b.take(now) {
                None => sent += 1,
                Some(at) => {
                    assert!(at > now, "a wait is always in the future");
                    now = at;
                }
            }
        }
        // 60 at once, then 30 a second for 10 seconds.
        assert!((355..=362).contains(&sent), "{sent}");
    }
}
