//! Non-database services the core needs: time, ids, titles.

use async_trait::async_trait;
use weft_domain::{MessageId, ThreadId, Timestamp, Title};

/// The current time. A port so tests are deterministic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in whole Unix seconds.
    fn now(&self) -> Timestamp;
}

/// Mints ids. Implementations MUST return ids that sort in creation order
/// within the process (e.g. monotonic UUIDv7), never repeat, and are
/// greater than the `above` id they are given: the storage's newest id,
/// which another process may have minted with a clock ahead of ours (the
/// unit-of-work contract's rule 8 relies on it).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait IdSource: Send + Sync {
    /// A fresh thread id, greater than `above` when given.
    // The named lifetimes are mockall's need (it cannot mock an elided
    // lifetime inside an Option).
    #[allow(clippy::needless_lifetimes)]
    fn thread_id<'a>(&self, above: Option<&'a ThreadId>) -> ThreadId;
    /// A fresh message id, greater than `above` when given.
    #[allow(clippy::needless_lifetimes)]
    fn message_id<'a>(&self, above: Option<&'a MessageId>) -> MessageId;
}

/// The title generator could not produce a title.
#[derive(Debug, thiserror::Error)]
#[error("title generation failed: {0}")]
pub struct TitleError(pub String);

/// Derives a thread title from its first user message. May be slow or remote
/// (a model call): callers MUST NOT hold a unit of work open while awaiting
/// it, and apply their own timeout.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TitleGenerator: Send + Sync {
    /// A title for a conversation opened by `first_user_text`.
    ///
    /// # Errors
    /// [`TitleError`] when no title can be produced.
    async fn generate(&self, first_user_text: &str) -> Result<Title, TitleError>;
}

/// How a unit of work ended, as seen by the app's transaction helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Committed.
    Committed,
    /// Rolled back (explicitly, or because its body failed).
    RolledBack,
    /// Failed with a transient conflict and is being run again.
    Retried,
    /// The connection was lost during COMMIT: whether it committed is
    /// unknown to the server too (the client's idempotency key resolves it).
    CommitUnknown,
}

/// Receives transaction outcomes, for metrics. Must be cheap and never fail.
pub trait TxObserver: Send + Sync {
    /// Called once per ended attempt (`Committed`/`RolledBack`) and once per retry.
    fn observe(&self, mode: crate::Mode, outcome: TxOutcome);
}

/// A [`TxObserver`] that records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl TxObserver for NoopObserver {
    fn observe(&self, _mode: crate::Mode, _outcome: TxOutcome) {}
}
