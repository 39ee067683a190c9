//! The data lifecycle's use cases (API.md "Data lifecycle" and
//! `WEFT_IDEMPOTENCY_RETENTION`): drivers that repeat the
//! [`Maintenance`] port's bounded batches, pausing between them, until the
//! work is done.
//!
//! Why the pause: each batch is one short transaction (or one per owner),
//! so a writer that needs a row or the write lock a batch holds waits for
//! that batch only. On SQLite a writer of *another process* (the server,
//! while `weft purge` runs) polls for the write lock with sleeps of up to
//! 100 ms; the default pause is twice that, so it finds the lock free
//! between two batches instead of being overtaken by the next one even
//! when its sleep overruns on a busy machine (with a pause of exactly
//! 100 ms, a writer on 2 loaded cores was seen overtaken by two batches).
//!
//! What runs where: the server runs [`Lifecycle::run_idempotency_expiry`]
//! in the background; `weft purge`, `weft erase-user` and `weft export`
//! call [`Lifecycle::purge`], [`Lifecycle::erase_user`] and
//! [`Lifecycle::export_user`] once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_domain::{Retention, Timestamp, UserId};
use weft_ports::error::BoxError;
use weft_ports::{Clock, ExpiryObserver, Exported, Maintenance, PortError};

/// How maintenance work is cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows of one kind one batch changes (at least 1).
    pub batch_size: u32,
    /// Pause after each batch that did work.
    pub pause: Duration,
    /// Attempts of one batch that keeps failing with a transient conflict
    /// (SQLite busy past its timeout, a PostgreSQL deadlock), the first
    /// included.
    pub conflict_attempts: u32,
}

impl Default for BatchPolicy {
    /// 1,000 rows, 200 ms pauses, 5 attempts.
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            pause: Duration::from_millis(200),
            conflict_attempts: 5,
        }
    }
}

/// One batch that did work, as it happened (for progress output and the
/// tests that measure how long writers wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// When the batch began.
    pub started: Instant,
    /// How long it took, its transactions included (and any conflict retries).
    pub took: Duration,
    /// Rows it changed.
    pub rows: u64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Everything archived strictly before this instant was purged.
    pub deleted_before: Timestamp,
    /// Archived threads removed, each with all its messages.
    pub threads: u64,
    /// Messages removed (of the removed threads, and archived ones of live threads).
    pub messages: u64,
    /// Batches that removed something.
    pub batches: u64,
    /// The longest of them.
    pub longest_batch: Duration,
}

/// What erasing a user removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EraseReport {
    /// Threads deleted (live and archived).
    pub threads: u64,
    /// Messages deleted (live and archived).
    pub messages: u64,
    /// Idempotency records deleted.
    pub idempotency_records: u64,
    /// The user's thread sequence (0 or 1 row).
    pub owner_rows: u64,
    /// Batches that changed something.
    pub batches: u64,
    /// The longest of them.
    pub longest_batch: Duration,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Live threads.
    pub threads: u64,
    /// Live messages of those threads.
    pub messages: u64,
}

/// A lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The database failed (the source says how); batches done before
    /// stay done, and running the operation again continues the work.
    #[error("the database failed")]
    Storage(#[from] PortError),
    /// The user created data faster than erase-user could remove it.
    #[error(
        "user '{user}' kept writing while being erased (found new data {rounds} times); \
         block their access and run erase-user again"
    )]
    StillWriting {
        /// The user.
        user: String,
        /// How many times new data of the user was found (a thread created
        /// after all were closed, or data the final check had not seen).
        rounds: u32,
    },
    /// The export's output could not be written.
    #[error("writing the export failed")]
    Output(#[source] BoxError),
}

/// How many times erase-user may find new data of the user (a thread
/// created after all were closed, or data its final check had not seen)
/// before it gives up.
const ERASE_RACES: u32 = 10;

/// The lifecycle use cases over a [`Maintenance`] port. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    port: Arc<dyn Maintenance>,
    clock: Arc<dyn Clock>,
    policy: BatchPolicy,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// The use cases over `port`, reading time from `clock`, batching by
    /// `policy` (a batch size of 0 is taken as 1).
    pub fn new(port: Arc<dyn Maintenance>, clock: Arc<dyn Clock>, policy: BatchPolicy) -> Self {
        let policy = BatchPolicy {
            batch_size: policy.batch_size.max(1),
            conflict_attempts: policy.conflict_attempts.max(1),
            ..policy
        };
        Self {
            port,
            clock,
            policy,
        }
    }

    /// The batching in force.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Runs one batch, again after a pause when it failed with a transient
    /// conflict (nothing of it committed), at most `conflict_attempts` times.
    async fn batch<T, F, Fut>(&self, mut run: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let mut attempt = 1;
        loop {
            match run().await {
                Err(PortError::Conflict) if attempt < self.policy.conflict_attempts => {
                    attempt += 1;
                    tracing::debug!(attempt, "maintenance batch conflicted; trying it again");
                    tokio::time::sleep(self.policy.pause.max(Duration::from_millis(10))).await;
                }
                other => return other,
            }
        }
    }

    /// One expiry sweep: deletes, batch by batch, every idempotency record
    /// older than `retention` at the clock's current time, telling
    /// `observer` each batch's count. A record still inside its replay
    /// window is never deleted ([`Retention`] is at least the window).
    ///
    /// # Errors
    /// [`LifecycleError::Storage`]; batches done before stay done.
    pub async fn expire_idempotency(
        &self,
        retention: Retention,
        observer: &dyn ExpiryObserver,
    ) -> Result<u64, LifecycleError> {
        let before = retention.expired_before(self.clock.now());
        let limit = self.policy.batch_size;
        let mut total = 0u64;
        loop {
            let n = self
                .batch(|| self.port.expire_idempotency(before, limit))
                .await?;
            if n > 0 {
                observer.expired(n);
            }
            total = total.saturating_add(n);
            if n < u64::from(limit) {
                return Ok(total);
            }
            tokio::time::sleep(self.policy.pause).await;
        }
    }

    /// The server's background expiry: a sweep at once, then one every
    /// `every`, until `stop` resolves — which ends it at once, even inside
    /// a sweep (an interrupted batch rolls back whole: the unit-of-work
    /// guard's rules). A failed sweep is logged and tried again at the next
    /// turn.
    pub async fn run_idempotency_expiry(
        &self,
        retention: Retention,
        every: Duration,
        observer: &dyn ExpiryObserver,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                swept = self.expire_idempotency(retention, observer) => match swept {
                    Ok(0) => {}
                    Ok(records) => tracing::info!(records, "expired idempotency records"),
                    Err(e) => tracing::warn!(
                        error = %chain(&e),
                        "idempotency expiry failed; trying again at the next sweep"
                    ),
                },
            }
            tokio::select! {
                biased;
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Physically deletes threads and messages archived more than
    /// `older_than` ago (by the clock), batch by batch, calling `on_batch`
    /// after each batch that removed something.
    ///
    /// # Errors
    /// [`LifecycleError::Storage`]; batches done before stay done, and a
    /// second run continues.
    pub async fn purge(
        &self,
        older_than: Duration,
        on_batch: &mut (dyn FnMut(&BatchReport) + Send),
    ) -> Result<PurgeReport, LifecycleError> {
        let age = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
        let before = self.clock.now().minus_seconds(age);
        let limit = self.policy.batch_size;
        let mut report = PurgeReport {
            deleted_before: before,
            threads: 0,
            messages: 0,
            batches: 0,
            longest_batch: Duration::ZERO,
        };
        loop {
            let started = Instant::now();
            let purged = self
                .batch(|| self.port.purge_archived(before, limit))
                .await?;
            if purged.rows() == 0 {
                return Ok(report);
            }
            let batch = BatchReport {
                started,
                took: started.elapsed(),
                rows: purged.rows(),
            };
            report.threads = report.threads.saturating_add(purged.threads);
            report.messages = report.messages.saturating_add(purged.messages);
            report.batches += 1;
            report.longest_batch = report.longest_batch.max(batch.took);
            on_batch(&batch);
            tokio::time::sleep(self.policy.pause).await;
        }
    }

    /// Deletes every row of `user` — threads, messages, archived ones,
    /// idempotency records, and last the user's thread sequence — batch by
    /// batch, calling `on_batch` after each batch that changed something.
    /// Idempotent: a second run finds nothing and reports zeros.
    ///
    /// # Errors
    /// [`LifecycleError::Storage`] (batches done stay done; run it again);
    /// [`LifecycleError::StillWriting`] when the user's clients kept
    /// creating data through the final check.
    pub async fn erase_user(
        &self,
        user: &UserId,
        on_batch: &mut (dyn FnMut(&BatchReport) + Send),
    ) -> Result<EraseReport, LifecycleError> {
        let limit = self.policy.batch_size;
        let mut report = EraseReport::default();
        let mut races = 0;
        // Set once a step did anything but close live threads: every live
        // thread the user had was closed by then, so closing one again means
        // the user's clients created it since — they are still writing.
        let mut closed_all = false;
        loop {
            let started = Instant::now();
            let now = self.clock.now();
            let step = self
                .batch(|| self.port.erase_user_step(user, limit, now))
                .await?;
            let rows = step.rows();
            if rows > 0 {
                let batch = BatchReport {
                    started,
                    took: started.elapsed(),
                    rows,
                };
                report.threads = report.threads.saturating_add(step.threads);
                report.messages = report.messages.saturating_add(step.messages);
                report.idempotency_records = report
                    .idempotency_records
                    .saturating_add(step.idempotency_records);
                report.owner_rows = report.owner_rows.saturating_add(step.owner_rows);
                report.batches += 1;
                report.longest_batch = report.longest_batch.max(batch.took);
                on_batch(&batch);
            }
            if step.done {
                return Ok(report);
            }
            let new_thread = closed_all && step.threads_closed > 0;
            if step.threads_closed == 0 {
                closed_all = true;
            }
            if rows == 0 || new_thread {
                // The final check found data the earlier steps had not seen,
                // or a thread appeared after every thread was closed: the
                // user's clients are still writing.
                races += 1;
                if races >= ERASE_RACES {
                    return Err(LifecycleError::StillWriting {
                        user: user.as_str().to_owned(),
                        rounds: races,
                    });
                }
            }
            tokio::time::sleep(self.policy.pause).await;
        }
    }

    /// Hands `sink` every live thread of `user`, each followed by its live
    /// messages in id order, all read from one snapshot, a page at a time
    /// (memory does not grow with the user's data).
    ///
    /// # Errors
    /// [`LifecycleError::Storage`]; [`LifecycleError::Output`] when `sink`
    /// fails (the export stops there and its transaction rolls back).
    pub async fn export_user(
        &self,
        user: &UserId,
        sink: &mut (dyn FnMut(&Exported) -> Result<(), BoxError> + Send),
    ) -> Result<ExportReport, LifecycleError> {
        let mut reader = self.port.export_user(user).await?;
        let mut report = ExportReport::default();
        loop {
            let batch = reader.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for item in &batch {
                sink(item).map_err(LifecycleError::Output)?;
                match item {
                    Exported::Thread(_) => report.threads += 1,
                    Exported::Message(_) => report.messages += 1,
                }
            }
        }
        reader.finish().await?;
        Ok(report)
    }
}

/// An error and its sources on one line, for a log field.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
