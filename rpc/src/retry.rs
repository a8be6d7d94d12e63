//! When and how a client sends a call again: attempts, exponential backoff with jitter, and a
//! per-attempt timeout for idempotent methods, all inside the call's one deadline.
//!
//! A [`RetryPolicy`] never extends a call: the deadline is fixed when the call starts, every
//! attempt carries the budget that is left, and a backoff that would end past the deadline is
//! not slept, the call ends with the last attempt's error instead. Every attempt reuses the call
//! id (so servers de-duplicate it) and bumps `x-warren-attempt`.
//!
//! What is retried:
//! - failures that happen before a server ran the call, or that are transient
//!   ([`Error::is_retryable`]): the service is unavailable (no queue yet: a server may be
//!   starting), the connection was lost before the reply came, the broker nacked the publish,
//!   a server answered `unavailable`;
//! - for idempotent methods only, an attempt that got no reply within the policy's
//!   [`attempt_timeout`](RetryPolicy::attempt_timeout).
//!
//! Non-idempotent methods are resent too after a lost connection: the server's
//! [`ReplyCache`](crate::ReplyCache) answers a repeated call id without running it again.

use std::time::Duration;

use rand::Rng;

use crate::error::Error;

/// How a client retries a call. Set it per client with
/// [`ClientBuilder::retry`](crate::ClientBuilder::retry), per method with
/// [`ClientBuilder::method_retry`](crate::ClientBuilder::method_retry), or per call with
/// [`CallOptions::retry`](crate::CallOptions::retry).
///
/// ```
/// use std::time::Duration;
/// use warren_rpc::RetryPolicy;
///
/// let policy = RetryPolicy::new()
///     .max_attempts(8)
///     .backoff(Duration::from_millis(20), Duration::from_secs(1))
///     // Idempotent methods give up on an attempt after 500 ms and send it again.
///     .attempt_timeout(Duration::from_millis(500));
/// assert_eq!(policy.attempts(), 8);
/// assert!(RetryPolicy::never().attempts() == 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
    attempt_timeout: Option<Duration>,
}

// The float fields are kept finite by the setters, so equality is total.
impl Eq for RetryPolicy {}

impl Default for RetryPolicy {
    /// Five attempts, backoff from 100 ms doubling up to 2 s with 50% jitter, no per-attempt
    /// timeout: a missing service is reported within about 1.5 s, a lost connection is survived
    /// a few times over, and a slow idempotent call is not sent twice.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.5,
            attempt_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy (see [`RetryPolicy::default`]).
    pub fn new() -> Self {
        RetryPolicy::default()
    }

    /// One attempt, no retries.
    pub fn never() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// At most `attempts` publications of a call, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff before the second attempt (`initial`), multiplied by the
    /// [`multiplier`](RetryPolicy::multiplier) for each later one, never above `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// How much each backoff grows (2.0 unless set; values below 1.0 count as 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The fraction of each backoff that is random (0.5 unless set, clamped to 0..=1): a
    /// backoff `b` becomes a uniform pick in `[b * (1 - jitter), b]`, so clients that failed
    /// together do not retry together.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// For idempotent methods: give up on an attempt that has no reply after `timeout` and send
    /// the call again (the call's deadline still bounds the whole). Ignored for other methods,
    /// which wait for their one reply until the deadline.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The maximum number of attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The per-attempt timeout of idempotent methods, if any.
    pub fn attempt_timeout_of(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The backoff to sleep after attempt `attempt` (1-based) failed, jitter applied.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let base = base.min(self.max_backoff.as_secs_f64());
        let low = base * (1.0 - self.jitter);
        let picked = if base > low {
            rand::thread_rng().gen_range(low..=base)
        } else {
            base
        };
        Duration::from_secs_f64(picked.max(0.0))
    }

    /// Whether a failed attempt may be followed by another.
    pub(crate) fn retries(&self, failure: &AttemptFailure, idempotent: bool) -> bool {
        match failure {
            AttemptFailure::Error(err) => err.is_retryable(),
            AttemptFailure::TimedOut => idempotent && self.attempt_timeout.is_some(),
        }
    }
}

/// How one attempt of a call ended, when it did not end with a reply.
#[derive(Debug)]
pub(crate) enum AttemptFailure {
    /// The attempt failed with this error.
    Error(Error),
    /// The attempt's own timeout passed (the call's deadline had not).
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_within_its_jitter() {
        let policy = RetryPolicy::new()
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .jitter(0.5);
        for _ in 0..100 {
            let first = policy.delay_after(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = policy.delay_after(2);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = policy.delay_after(30);
            assert!(capped >= Duration::from_millis(250) && capped <= Duration::from_millis(500));
        }
        let exact = policy.jitter(0.0);
        assert_eq!(exact.delay_after(3), Duration::from_millis(400));
        assert_eq!(exact.delay_after(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn what_is_retried() {
        let policy = RetryPolicy::new();
        let lost = AttemptFailure::Error(Error::Connection {
            reason: "reset".into(),
        });
        assert!(policy.retries(&lost, false));
        let unavailable = AttemptFailure::Error(Error::ServiceUnavailable {
            service: "s".into(),
        });
        assert!(policy.retries(&unavailable, false));
        let decode = AttemptFailure::Error(Error::Decode { reason: "x".into() });
        assert!(!policy.retries(&decode, true));
        // A timed-out attempt is resent only for idempotent methods with an attempt timeout.
        assert!(!policy.retries(&AttemptFailure::TimedOut, true));
        let timed = policy.attempt_timeout(Duration::from_millis(10));
        assert!(timed.retries(&AttemptFailure::TimedOut, true));
        assert!(!timed.retries(&AttemptFailure::TimedOut, false));
    }

    #[test]
    fn never_means_one_attempt() {
        assert_eq!(RetryPolicy::never().attempts(), 1);
        assert_eq!(RetryPolicy::new().max_attempts(0).attempts(), 1);
    }
}
