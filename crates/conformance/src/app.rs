//! The app's real use cases over a target's factory: the cancellation,
//! storm, count and retry cases run these, not hand-written sequences, so
//! they test the transaction handling the service actually does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_app::system::{DerivedTitles, SystemClock, V7Ids};
use weft_app::{App, AppConfig, Deps, Render};
use weft_domain::{Message, StoredResponse, Thread, ThreadId};
use weft_ports::{
    IdSource, Mode, PortError, RequestContext, TxObserver, TxOutcome, UnitOfWork, UnitOfWorkFactory,
};

/// Counts unit-of-work outcomes reported by the app.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Attempts that committed.
    pub committed: AtomicU64,
    /// Attempts that rolled back.
    pub rolled_back: AtomicU64,
    /// Retries after a transient conflict.
    pub retried: AtomicU64,
    /// Commits whose connection was lost mid-flight (outcome unknown).
    pub commit_unknown: AtomicU64,
}

impl TxObserver for Outcomes {
    fn observe(&self, _mode: Mode, outcome: TxOutcome) {
        let counter = match outcome {
            TxOutcome::Committed => &self.committed,
            TxOutcome::RolledBack => &self.rolled_back,
            TxOutcome::Retried => &self.retried,
            TxOutcome::CommitUnknown => &self.commit_unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The app over `factory`, with the production clock, ids and titles, the
/// default retry policy, and `outcomes` as its observer.
pub fn app(factory: Arc<dyn UnitOfWorkFactory>, outcomes: Arc<Outcomes>) -> App {
    app_with_ids(factory, outcomes, Arc::new(V7Ids::default()))
}

/// Like [`app`] with another id source: a second process, say.
pub fn app_with_ids(
    factory: Arc<dyn UnitOfWorkFactory>,
    outcomes: Arc<Outcomes>,
    ids: Arc<dyn IdSource>,
) -> App {
    App::new(
        Deps {
            uow: factory,
            clock: Arc::new(SystemClock),
            ids,
            titles: Arc::new(DerivedTitles),
            observer: outcomes,
        },
        AppConfig::default(),
    )
}

/// The id source of another process whose clock runs `behind` the real
/// one: UUIDv7 ids from its own clock, strictly increasing within it, and
/// above the `above` id it is given, as the port requires. Two apps, one on
/// [`V7Ids`] and one on this, are two Weft instances with skewed clocks.
#[derive(Debug)]
pub struct SkewedIds {
    behind: Duration,
    last: std::sync::Mutex<u128>,
}

impl SkewedIds {
    /// A source whose clock is `behind` the real one.
    pub fn new(behind: Duration) -> Self {
        Self {
            behind,
            last: std::sync::Mutex::new(0),
        }
    }

    fn next(&self, floor: u128) -> uuid::Uuid {
        let now = std::time::SystemTime::now()
            .checked_sub(self.behind)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.as_secs(), now.subsec_nanos());
        let fresh = uuid::Uuid::new_v7(ts).as_u128();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let bound = (*last).max(floor);
        let value = if fresh > bound { fresh } else { bound + 1 };
        *last = value;
        uuid::Uuid::from_u128(value)
    }
}

impl IdSource for SkewedIds {
    fn thread_id(&self, above: Option<&ThreadId>) -> ThreadId {
        ThreadId::from_uuid(self.next(above.map_or(0, ThreadId::value)))
    }

    fn message_id(&self, above: Option<&weft_domain::MessageId>) -> weft_domain::MessageId {
        weft_domain::MessageId::from_uuid(self.next(above.map_or(0, weft_domain::MessageId::value)))
    }
}

/// Renders a thread as its id (the body the app would record).
pub fn render_thread() -> Render<Thread> {
    Arc::new(|t: &Thread| StoredResponse {
        body: t.id.to_string(),
    })
}

/// Renders a message as its id.
pub fn render_message() -> Render<Message> {
    Arc::new(|m: &Message| StoredResponse {
        body: m.id.to_string(),
    })
}

/// A factory whose first `armed` units of work each read `thread` (taking
/// their snapshot) and then wait — at most `patience` — until all of them
/// have, before handing the unit of work to the use case. Makes two
/// read-modify-write use cases overlap deterministically.
pub struct SnapshotBarrier {
    inner: Arc<dyn UnitOfWorkFactory>,
    thread: ThreadId,
    barrier: tokio::sync::Barrier,
    armed: AtomicU64,
    patience: Duration,
}

impl SnapshotBarrier {
    /// Arms the barrier for the first `n` units of work. `patience` bounds
    /// the wait: an adapter that serializes writers blocks the other
    /// `begin` until this unit of work ends, so the barrier cannot fill.
    pub fn new(
        inner: Arc<dyn UnitOfWorkFactory>,
        thread: ThreadId,
        n: usize,
        patience: Duration,
    ) -> Self {
        Self {
            inner,
            thread,
            barrier: tokio::sync::Barrier::new(n),
            armed: AtomicU64::new(n as u64),
            patience,
        }
    }
}

#[async_trait]
impl UnitOfWorkFactory for SnapshotBarrier {
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let mut uow = self.inner.begin(ctx, mode).await?;
        let armed = self
            .armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            uow.get_thread(&self.thread).await?;
            let _ = tokio::time::timeout(self.patience, self.barrier.wait()).await;
        }
        Ok(uow)
    }
}
