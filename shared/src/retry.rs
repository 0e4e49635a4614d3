//! The one retry helper: exponential backoff with jitter, retrying only what
//! [`Classify`] calls transient. Every retried call in the product (Postgres
//! writes, Snowflake deletes, replays) goes through [`retry`]; the retrier's
//! visibility-timeout backoff uses the same [`Backoff`].
//!
//! Hand-written rather than a crate such as `backon`: the calls retried here
//! borrow a writer mutably across attempts, which an `AsyncFnMut` closure
//! expresses directly and the crates' `FnMut() -> Future` signatures do not.

use std::fmt::Display;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::failure::Classify;

/// Waits that double with each attempt, up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// No wait at all (unit tests, and callers that wait elsewhere).
    pub const ZERO: Self = Self {
        first: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The wait after failed attempt `attempt` (counted from 1), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] with "equal jitter": half of it fixed, the other
    /// half random, so that many callers failing together do not retry
    /// together.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let delay = self.delay(attempt);
        let half = delay / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    pub fn new(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
            backoff: Backoff::default(),
        }
    }

    /// Retries without waiting (unit tests over in-memory adapters).
    pub fn immediate(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
            backoff: Backoff::ZERO,
        }
    }
}

/// Runs `op` until it succeeds, fails with an error that is not transient,
/// has used `policy.attempts` attempts, or the invocation's deadline is near
/// (no retry is started then); returns the last result.
///
/// `op` is a closure that returns a future (`async || …` or `|| async …`).
/// Not `AsyncFnMut`: with it, a retry inside a boxed `Send` future (an
/// `async_trait` method, such as a sink's write) cannot be proven `Send` by
/// today's compiler.
pub async fn retry<T, E, Fut>(
    policy: RetryPolicy,
    deadline: &Deadline,
    what: &'static str,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Classify + Display,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < policy.attempts && !deadline.is_near() => {
                let delay = policy.backoff.jittered(attempt);
                tracing::warn!(
                    what,
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %e,
                    "transient error; retrying"
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::WriteError;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_stays_in_the_upper_half() {
        let b = Backoff {
            first: Duration::from_secs(30),
            max: Duration::from_secs(600),
        };
        assert_eq!(b.delay(1), Duration::from_secs(30));
        assert_eq!(b.delay(3), Duration::from_secs(120));
        assert_eq!(b.delay(20), Duration::from_secs(600));
        for attempt in 1..8 {
            let j = b.jittered(attempt);
            assert!(j >= b.delay(attempt) / 2 && j <= b.delay(attempt), "{j:?}");
        }
    }

    #[tokio::test]
    async fn only_transient_errors_are_retried_and_attempts_are_bounded() {
        let mut calls = 0;
        let result: Result<(), WriteError> =
            retry(RetryPolicy::immediate(3), &Deadline::none(), "test", || {
                calls += 1;
                async { Err(WriteError::transient("reset")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result: Result<(), WriteError> =
            retry(RetryPolicy::immediate(3), &Deadline::none(), "test", || {
                calls += 1;
                async { Err(WriteError::row_level("23514", "check")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "a row-level error is not retried");

        let mut calls = 0;
        let result = retry(RetryPolicy::immediate(5), &Deadline::none(), "test", || {
            calls += 1;
            let result = if calls < 3 {
                Err(WriteError::transient("reset"))
            } else {
                Ok(calls)
            };
            async move { result }
        })
        .await;
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let near = Deadline::after(Duration::ZERO, Duration::from_secs(1));
        let result: Result<(), WriteError> =
            retry(RetryPolicy::immediate(5), &near, "test", || {
                calls += 1;
                async { Err(WriteError::transient("reset")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "no retry starts near the deadline");
    }
}
