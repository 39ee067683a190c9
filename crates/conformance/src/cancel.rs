//! Cancellation at a chosen await point.
//!
//! mockall cannot cancel a future half-way, and timeouts hit await points
//! only by luck; [`CancelAfterPolls`] is exact: it polls the inner future at
//! most `k` times and drops it right after the k-th poll if that poll did
//! not complete it — exactly what happens to a request future when a client
//! disconnects while a statement is in flight. Sweeping k = 1, 2, … until the
//! future completes reaches every await point of the use case.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls the inner future at most `polls` times; if it is still pending
/// after the last of them, drops it (running its destructors right there)
/// and resolves to `None`. Resolves to `Some(output)` when the inner future
/// completed within its budget.
pub struct CancelAfterPolls<F> {
    inner: Option<Pin<Box<F>>>,
    remaining: usize,
}

impl<F: Future> CancelAfterPolls<F> {
    /// Wraps `fut` with a budget of `polls` polls (at least one poll is always made).
    pub fn new(fut: F, polls: usize) -> Self {
        Self {
            inner: Some(Box::pin(fut)),
            remaining: polls.max(1),
        }
    }
}

impl<F: Future> Future for CancelAfterPolls<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `CancelAfterPolls` is Unpin: the inner future is boxed.
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll(cx) {
            Poll::Ready(out) => {
                this.inner = None;
                Poll::Ready(Some(out))
            }
            Poll::Pending => {
                this.remaining -= 1;
                if this.remaining == 0 {
                    // The cancellation under test: drop mid-flight.
                    this.inner = None;
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_future_that_needs_more_polls_than_its_budget_is_dropped() {
        let fut = async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            7
        };
        assert_eq!(CancelAfterPolls::new(fut, 2).await, None);
    }

    #[tokio::test]
    async fn a_future_within_its_budget_completes() {
        let fut = async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            7
        };
        assert_eq!(CancelAfterPolls::new(fut, 3).await, Some(7));
    }
}
