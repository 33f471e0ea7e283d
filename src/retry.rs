//! The engine's own retries (of one part, one range, one object), on top of the SDK's per-request
//! retries: one policy for all of them, so they cannot drift apart.
//!
//! Only retryable errors ([`Error::is_retryable`]) are tried again, at most `force_retry_count` times.
//! The pauses grow exponentially from `force_retry_interval` (capped at [`MAX_GROWTH`] times it) with
//! full jitter: workers that failed together (a server that blinked) do not come back together.

use crate::config::RetryConfig;
use crate::error::{Error, Result};
use std::time::Duration;
use tracing::debug;

/// The longest pause is this many times `force_retry_interval`.
pub const MAX_GROWTH: u32 = 8;

/// The pause before retry number `attempt` (1-based): uniformly random in
/// `[0, interval × 2^(attempt-1)]`, capped at `interval × MAX_GROWTH`.
pub fn pause(policy: &RetryConfig, attempt: u32) -> Duration {
    let growth = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(MAX_GROWTH);
    let cap = policy.force_retry_interval.saturating_mul(growth);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=cap_ms))
}

/// The retries left to one operation.
#[derive(Debug)]
pub struct Attempts<'a> {
    policy: &'a RetryConfig,
    done: u32,
}

impl<'a> Attempts<'a> {
    /// No retry made yet.
    pub fn new(policy: &'a RetryConfig) -> Self {
        Attempts { policy, done: 0 }
    }

    /// Whether `e` may be retried now (retryable, and retries left).
    pub fn allow(&self, e: &Error) -> bool {
        e.is_retryable() && self.done < self.policy.force_retry_count
    }

    /// Counts one retry of `what` (e.g. "part") of `key` and waits its pause.
    pub async fn pause(&mut self, key: &str, what: &str, e: &Error) {
        self.done += 1;
        let wait = pause(self.policy, self.done);
        debug!(key, what, attempt = self.done, error = %e, wait_ms = wait.as_millis() as u64, "retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or has no retries left.
pub async fn retry<T, F, Fut>(policy: &RetryConfig, key: &str, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempts = Attempts::new(policy);
    loop {
        match op().await {
            Err(e) if attempts.allow(&e) => attempts.pause(key, what, &e).await,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorKind;

    fn policy(count: u32, ms: u64) -> RetryConfig {
        RetryConfig {
            force_retry_count: count,
            force_retry_interval: Duration::from_millis(ms),
            ..Default::default()
        }
    }

    fn retryable() -> Error {
        Error::s3("GetObject", "b", "k", S3ErrorKind::Retryable, "SlowDown")
    }

    #[test]
    fn pauses_grow_exponentially_up_to_the_cap_with_jitter() {
        let p = policy(10, 100);
        for attempt in 1..=10u32 {
            let cap = 100 * u64::from((1u32 << (attempt - 1)).min(MAX_GROWTH));
            let waits: Vec<u64> = (0..200).map(|_| pause(&p, attempt).as_millis() as u64).collect();
            assert!(waits.iter().all(|w| *w <= cap), "attempt {attempt}: {waits:?}");
            // Full jitter: the pauses spread over the range rather than all being the cap.
            let distinct: std::collections::BTreeSet<u64> = waits.iter().copied().collect();
            assert!(distinct.len() > 10, "attempt {attempt}: {distinct:?}");
        }
        assert_eq!(pause(&policy(1, 0), 3), Duration::ZERO);
        // Far attempts neither overflow nor exceed the cap.
        assert!(pause(&p, 1000) <= Duration::from_millis(100 * u64::from(MAX_GROWTH)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_retryable_errors_and_only_as_often_as_allowed() {
        let p = policy(3, 10);
        let mut calls = 0;
        let r: Result<()> = retry(&p, "k", "part", || {
            calls += 1;
            async { Err(retryable()) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4, "the first try and three retries");

        let mut calls = 0;
        let r: Result<()> = retry(&p, "k", "part", || {
            calls += 1;
            async { Err(Error::InvalidArgument("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "not retryable: no retry");

        let mut calls = 0;
        let r = retry(&p, "k", "part", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(retryable())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
