//! The cancellation shield: use cases run in their own tasks, so a dropped
//! request future (client gone, HTTP/2 reset, shutdown bound reached) never
//! cuts database work off half-way, and shutdown waits for those tasks
//! before it closes the pool.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use crate::error::ApiError;

/// Runs use cases shielded from their request's cancellation and counts
/// the ones still running. Cheap to clone; all clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Shield {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

/// Decrements the count when the task ends, however it ends (even by panic).
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shield {
    /// Runs `work` in its own task (inheriting the current span) and waits
    /// for it. If the caller is dropped, only the wait is cancelled: the
    /// task runs on to its commit or rollback.
    ///
    /// # Errors
    /// 500 if the task panicked (its unit of work was dropped, hence rolled back).
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let guard = Running(self.inner.clone());
        let task = async move {
            let _guard = guard;
            work.await
        };
        tokio::spawn(task.in_current_span()).await.map_err(|e| {
            tracing::error!(error = %e, "use case task failed; answering 500");
            ApiError::internal()
        })
    }

    /// How many shielded use cases are running.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Waits until no shielded use case runs, at most `bound`. Returns
    /// whether they all finished.
    pub async fn wait_idle(&self, bound: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.running() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shielded_task_finishes_after_its_caller_is_dropped() {
        let shield = Shield::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = shield.run(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(42);
        });
        // Poll once so the task is spawned, then drop the caller.
        let _ = tokio::time::timeout(Duration::from_millis(5), caller).await;
        assert_eq!(shield.running(), 1);
        assert!(shield.wait_idle(Duration::from_secs(2)).await);
        assert_eq!(rx.await.unwrap(), 42);
        assert_eq!(shield.running(), 0);
    }
}
