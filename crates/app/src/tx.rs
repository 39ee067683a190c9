//! The unit-of-work runner every use case goes through.
//!
//! Why one helper: the classic failure of request/transaction code is a
//! handler that forgets the rollback or commits twice. Here the body never
//! sees `commit` or `rollback`; it receives `&mut dyn UnitOfWork` and
//! returns a result, and this runner alone ends the unit of work.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use weft_domain::ValidationError;
use weft_ports::{Mode, PortError, RequestContext, TxOutcome, UnitOfWork};

use crate::{App, AppError};

/// Why one attempt of a unit of work ended without a value. Private to the
/// app, so the internal retry signal and the public 503 are two things:
/// [`Failure::Retry`] never reaches a caller; once the retries are spent it
/// becomes [`AppError::Busy`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// The attempt certainly did not commit and is worth running again: a
    /// transient conflict ([`PortError::Conflict`]), or an idempotency key
    /// another request recorded while this one ran.
    Retry,
    /// Final: returned to the caller as it is.
    Fail(AppError),
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Self::Fail(e)
    }
}

impl From<PortError> for Failure {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Conflict => Self::Retry,
            other => Self::Fail(other.into()),
        }
    }
}

impl From<ValidationError> for Failure {
    fn from(e: ValidationError) -> Self {
        Self::Fail(e.into())
    }
}

/// How often and how patiently a unit of work is retried on a transient
/// conflict.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// A policy that retries `max_attempts - 1` times without sleeping (tests).
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            base_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// "Full jitter" backoff before attempt `attempt + 1`: uniform in
    /// `0..=min(max, base * 2^(attempt-1))`, so colliding writers spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=cap_us))
    }
}

impl App {
    /// Runs `body` in a unit of work of `mode` for `ctx`: commits exactly once
    /// when it succeeds, rolls back when it fails, and runs the whole unit of
    /// work again — up to the policy's bound, with jittered backoff, never
    /// past the request's deadline — only when it fails with
    /// [`Failure::Retry`] (a transient conflict, which the ports raise only
    /// when the transaction certainly did not commit). Retries spent:
    /// [`AppError::Busy`].
    pub(crate) async fn in_uow<T, F>(
        &self,
        ctx: &RequestContext,
        mode: Mode,
        mut body: F,
    ) -> Result<T, AppError>
    where
        T: Send,
        F: for<'u> FnMut(&'u mut dyn UnitOfWork) -> BoxFuture<'u, Result<T, Failure>> + Send,
    {
        let policy = &self.config.retry;
        let mut attempt = 1u32;
        loop {
            let result = match self.attempt(ctx, mode, &mut body).await {
                Ok(value) => return Ok(value),
                Err(Failure::Fail(e)) => return Err(e),
                Err(Failure::Retry) => Err(AppError::Busy),
            };
            let retry = attempt < policy.max_attempts.max(1)
                && ctx.deadline().is_none_or(|d| Instant::now() < d);
            if !retry {
                tracing::warn!(request_id = %ctx.request_id(), attempts = attempt, "transient conflict outlasted retries");
                return result;
            }
            self.deps.observer.observe(mode, TxOutcome::Retried);
            tracing::debug!(request_id = %ctx.request_id(), attempt, "retrying unit of work after a transient conflict");
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt<T, F>(
        &self,
        ctx: &RequestContext,
        mode: Mode,
        body: &mut F,
    ) -> Result<T, Failure>
    where
        F: for<'u> FnMut(&'u mut dyn UnitOfWork) -> BoxFuture<'u, Result<T, Failure>> + Send,
    {
        let mut uow = self.deps.uow.begin(ctx, mode).await?;
        match body(uow.as_mut()).await {
            Ok(value) => match uow.commit().await {
                Ok(()) => {
                    self.deps.observer.observe(mode, TxOutcome::Committed);
                    Ok(value)
                }
                Err(e) => {
                    let outcome = match e {
                        // Lost during COMMIT: it may have committed.
                        PortError::Unavailable(_) => TxOutcome::CommitUnknown,
                        _ => TxOutcome::RolledBack,
                    };
                    self.deps.observer.observe(mode, outcome);
                    Err(e.into())
                }
            },
            Err(e) => {
                if let Err(rollback) = uow.rollback().await {
                    // The adapter closes a connection whose rollback failed;
                    // the body's error is what the caller needs to see.
                    tracing::warn!(request_id = %ctx.request_id(), error = %rollback, "rollback failed");
                }
                self.deps.observer.observe(mode, TxOutcome::RolledBack);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_never_exceeds_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
        };
        for attempt in 1..40 {
            assert!(p.backoff(attempt) <= Duration::from_millis(40));
        }
        assert_eq!(RetryPolicy::immediate(3).backoff(2), Duration::ZERO);
    }
}
