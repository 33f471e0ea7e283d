//! Token-bucket rate limits (`--rate-limit-objects`, `--rate-limit-bandwidth`) shared by all workers.
//!
//! Taking more than is available puts the bucket in debt and the taker sleeps until the debt is paid,
//! so large chunks and small ones are shaped alike and the long-run rate equals the limit.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens per second, holding at most one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter of `rate` units per second (at least 1).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        RateLimiter {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` units, waiting as long as the limit requires.
    pub async fn acquire(&self, n: u64) {
        let wait = {
            // A poisoned lock still holds a valid bucket: limiting never switches itself off.
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate) - n as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The limits of a run.
#[derive(Debug, Default)]
pub struct Limits {
    /// Objects per second.
    pub objects: Option<RateLimiter>,
    /// Bytes per second.
    pub bytes: Option<RateLimiter>,
}

impl Limits {
    /// Limits from the configured rates.
    pub fn new(objects: Option<u64>, bytes: Option<u64>) -> Self {
        Limits {
            objects: objects.map(RateLimiter::new),
            bytes: bytes.map(RateLimiter::new),
        }
    }

    /// Waits for one object's turn.
    pub async fn object(&self) {
        if let Some(l) = &self.objects {
            l.acquire(1).await;
        }
    }

    /// Waits until `n` more bytes may move.
    pub async fn bytes(&self, n: u64) {
        if let Some(l) = &self.bytes {
            l.acquire(n).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn long_run_rate_equals_the_limit() {
        let l = RateLimiter::new(1000);
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            l.acquire(100).await; // 3000 units at 1000/s: 1 s of burst credit, then 2 s
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&secs), "{secs}");
    }
}
