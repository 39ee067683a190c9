//! The unit of work on SQLite: one pooled connection inside a transaction
//! this adapter opened itself, and the factory that opens it.
//!
//! # Cancellation design
//!
//! The unit of work owns a raw [`PoolConnection`] and issues `BEGIN`,
//! `COMMIT` and `ROLLBACK` itself instead of using `sqlx::Transaction`: sqlx
//! up to 0.9.0 can hand a connection back to the pool still inside a
//! transaction when `begin()` is cancelled mid round trip (launchbadge/sqlx
//! 4385, 4393). [`TxConn`] records two facts: whether a `COMMIT`/`ROLLBACK`
//! *completed* (`clean`), and whether a statement is in flight
//! (`in_statement`: set before a statement is sent, cleared when its result
//! came back, so still set after a dropped await). When it is dropped
//! without a completed end:
//!
//! - **a statement is in flight** (the future owning the unit of work was
//!   dropped mid-`BEGIN`, mid-query or mid-`COMMIT`): the connection's state
//!   is unknown, so it is marked [`PoolConnection::close_on_drop`] and sqlx
//!   closes it instead of returning it. Closing a SQLite connection rolls
//!   back its open transaction (`sqlite3_close` does that itself), and the
//!   pool slot stays taken until the close is done, so the next writer
//!   never meets a half-closed transaction or a stale write lock.
//! - **no statement is in flight** (the unit of work was simply dropped, e.g.
//!   on an error path, or its COMMIT failed): nothing of ours is queued on
//!   the connection, so a spawned task sends `ROLLBACK` and returns the
//!   connection only if that ROLLBACK completed; if it fails, or the task is
//!   itself dropped (runtime shutdown), the connection is closed. This keeps
//!   the common "drop on error" path cheap (measured in release: ~0.1 ms for
//!   a rollback vs ~1 ms to close and reopen a connection) while the single
//!   writer connection is busy either way until it is clean.
//!
//! Why not an `after_release` check: SQLite has no SQL-level "am I in a
//! transaction?" query (the C call `sqlite3_get_autocommit` needs `unsafe`,
//! forbidden here), so the check would be an unconditional `ROLLBACK` round
//! trip on every release, and it would run after the connection was already
//! considered released. The guard costs nothing on the normal path.
//!
//! A repository call whose future is dropped mid-statement leaves the unit
//! of work "interrupted": the statement may or may not have run, so every
//! later call, `commit` included, fails with `Unexpected` and the
//! connection is closed on drop.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult, SqliteRow};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use weft_domain::UserId;
use weft_ports::{Mode, PortError, RequestContext, UnitOfWork, UnitOfWorkFactory};

use crate::error::{map_sqlx, Misuse};

/// A pooled connection inside a transaction this adapter began. Unless a
/// `COMMIT` or `ROLLBACK` completed, dropping it rolls the connection back
/// before reuse (no statement in flight) or closes it (one in flight); see
/// the module docs.
pub(crate) struct TxConn {
    /// Always `Some` until dropped; an `Option` so `Drop` can take it.
    conn: Option<PoolConnection<Sqlite>>,
    /// A `COMMIT`/`ROLLBACK` completed (or `BEGIN` certainly opened nothing):
    /// the connection is clean and may go back to the pool.
    clean: bool,
    /// A statement was sent and its result not yet received. Still `true`
    /// after an await point means that statement's future was dropped.
    in_statement: bool,
    /// On an unclean drop with no statement in flight, try a ROLLBACK on a
    /// spawned task before giving up on the connection. `false` for that
    /// task's own guard, so a failing ROLLBACK closes instead of recursing.
    rollback_on_drop: bool,
}

impl TxConn {
    /// Takes a connection from `pool`, arms its deadline `timeout` from now,
    /// and runs `begin_sql` on it.
    async fn begin(
        pool: &SqlitePool,
        begin_sql: &'static str,
        timeout: Duration,
    ) -> Result<Self, PortError> {
        // `acquire` is cancel-safe: a connection it had not yet handed out
        // goes back to the pool unchanged.
        let conn = pool.acquire().await.map_err(map_sqlx)?;
        // From here on an unclean drop rolls back or closes; a drop while
        // BEGIN is in flight (cancellation) closes.
        let mut tx = Self {
            conn: Some(conn),
            clean: false,
            in_statement: false,
            rollback_on_drop: true,
        };
        tx.arm_deadline(Instant::now() + timeout).await?;
        if let Err(e) = tx.execute(sqlx::query(begin_sql)).await {
            // BEGIN [IMMEDIATE] that fails with SQLITE_BUSY has opened no
            // transaction, so the connection can be reused; for anything
            // stranger, closing it is the safe choice.
            if matches!(e, PortError::Conflict) {
                tx.clean = true;
            } else {
                tx.rollback_on_drop = false;
            }
            return Err(e);
        }
        Ok(tx)
    }

    /// The connection for the next statement, marked as in a statement until
    /// [`TxConn::settle`].
    fn start(&mut self) -> Result<&mut SqliteConnection, PortError> {
        if self.in_statement {
            return Err(PortError::unexpected(Misuse::Interrupted));
        }
        match self.conn.as_deref_mut() {
            Some(conn) => {
                self.in_statement = true;
                Ok(conn)
            }
            // Unreachable: only Drop takes the connection.
            None => Err(PortError::unexpected(Misuse::Interrupted)),
        }
    }

    /// Records that the statement begun by [`TxConn::start`] came back.
    fn settle<T>(&mut self, r: Result<T, sqlx::Error>) -> Result<T, PortError> {
        self.in_statement = false;
        r.map_err(map_sqlx)
    }

    /// Runs a statement that returns no rows.
    pub(crate) async fn execute<'q>(
        &mut self,
        q: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> Result<SqliteQueryResult, PortError> {
        let conn = self.start()?;
        let r = q.execute(conn).await;
        self.settle(r)
    }

    /// Runs a query expected to return at most one row.
    pub(crate) async fn fetch_optional<'q>(
        &mut self,
        q: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> Result<Option<SqliteRow>, PortError> {
        let conn = self.start()?;
        let r = q.fetch_optional(conn).await;
        self.settle(r)
    }

    /// Runs a query returning at most one `O`.
    pub(crate) async fn fetch_optional_as<'q, O>(
        &mut self,
        q: sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
    ) -> Result<Option<O>, PortError>
    where
        O: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let conn = self.start()?;
        let r = q.fetch_optional(conn).await;
        self.settle(r)
    }

    /// Runs a query returning any number of `O`.
    pub(crate) async fn fetch_all_as<'q, O>(
        &mut self,
        q: sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
    ) -> Result<Vec<O>, PortError>
    where
        O: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let conn = self.start()?;
        let r = q.fetch_all(conn).await;
        self.settle(r)
    }

    /// Bounds every statement of this transaction: SQLite has no statement
    /// timeout, so a progress handler (called every ~1,000 VM instructions,
    /// a clock read each time) interrupts any statement still running after
    /// `deadline`. The statement fails with SQLITE_INTERRUPT (→
    /// `Unavailable`) and the unit of work is rolled back by its owner.
    /// Costs one hop to the connection's worker thread, not a database call.
    async fn arm_deadline(&mut self, deadline: Instant) -> Result<(), PortError> {
        let conn = self.start()?;
        let r = conn.lock_handle().await.map(|mut handle| {
            handle.set_progress_handler(1_000, move || Instant::now() < deadline);
        });
        self.settle(r)
    }

    /// Removes the deadline so the ending statement, and whoever uses the
    /// connection next outside a unit of work (migrations, readiness), is
    /// never interrupted by a stale one.
    async fn disarm_deadline(&mut self) -> Result<(), PortError> {
        let conn = self.start()?;
        let r = conn
            .lock_handle()
            .await
            .map(|mut handle| handle.remove_progress_handler());
        self.settle(r)
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`); only a
    /// completed end makes the connection reusable.
    async fn end(mut self, sql: &'static str) -> Result<(), PortError> {
        self.disarm_deadline().await?;
        self.execute(sqlx::query(sql)).await?;
        self.clean = true;
        Ok(())
    }
}

impl Drop for TxConn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.clean {
            // Dropping a clean PoolConnection returns it to the pool.
            return;
        }
        if self.rollback_on_drop && !self.in_statement {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                tracing::debug!("unit of work dropped without commit/rollback: rolling back");
                let tx = TxConn {
                    conn: Some(conn),
                    clean: false,
                    in_statement: false,
                    rollback_on_drop: false,
                };
                rt.spawn(async move {
                    if let Err(error) = tx.end("ROLLBACK").await {
                        tracing::warn!(%error, "rollback of a dropped unit of work failed: closing its connection");
                    }
                });
                return;
            }
        }
        tracing::debug!(
            in_statement = self.in_statement,
            "unit of work dropped mid-statement (or rollback failed): closing its connection"
        );
        // sqlx closes it on a spawned task; SQLite rolls back on close.
        conn.close_on_drop();
    }
}

/// An open SQLite transaction scoped to one owner.
pub(crate) struct SqliteUnitOfWork {
    pub(crate) tx: TxConn,
    pub(crate) owner: UserId,
    mode: Mode,
}

#[async_trait]
impl UnitOfWork for SqliteUnitOfWork {
    fn mode(&self) -> Mode {
        self.mode
    }

    #[tracing::instrument(level = "debug", skip_all, fields(mode = ?self.mode))]
    async fn commit(self: Box<Self>) -> Result<(), PortError> {
        // A COMMIT that fails (e.g. SQLITE_BUSY → Conflict) leaves the
        // transaction open and uncommitted; the connection is then closed,
        // which rolls it back, so Conflict really means "did not commit".
        self.tx.end("COMMIT").await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(mode = ?self.mode))]
    async fn rollback(self: Box<Self>) -> Result<(), PortError> {
        self.tx.end("ROLLBACK").await
    }
}

/// Opens SQLite units of work: read-write ones on the single writer
/// connection with `BEGIN IMMEDIATE`, read-only ones on the read-only pool
/// with a deferred `BEGIN`. Cheap to clone; shares the store's pools.
#[derive(Debug, Clone)]
pub struct SqliteUnitOfWorkFactory {
    writer: SqlitePool,
    reader: SqlitePool,
    transaction_timeout: Duration,
}

impl SqliteUnitOfWorkFactory {
    pub(crate) fn new(
        writer: SqlitePool,
        reader: SqlitePool,
        transaction_timeout: Duration,
    ) -> Self {
        Self {
            writer,
            reader,
            transaction_timeout,
        }
    }
}

#[async_trait]
impl UnitOfWorkFactory for SqliteUnitOfWorkFactory {
    #[tracing::instrument(level = "debug", skip_all, fields(mode = ?mode, request_id = %ctx.request_id()))]
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let tx = match mode {
            // IMMEDIATE takes the write lock now (waiting up to the busy
            // timeout), so a write transaction never has to upgrade a read
            // lock later — the upgrade is what deadlocks (SQLITE_BUSY that
            // no waiting can resolve) in deferred transactions. Holding the
            // lock from BEGIN is also what makes the plain reads of
            // lock_thread/lock_message locking reads.
            Mode::ReadWrite => {
                TxConn::begin(&self.writer, "BEGIN IMMEDIATE", self.transaction_timeout).await?
            }
            // Deferred: takes a WAL read snapshot at the first read. The
            // connection itself is read-only (SQLITE_OPEN_READONLY), so a
            // write fails in SQLite whatever SQL is sent.
            Mode::ReadOnly => {
                TxConn::begin(&self.reader, "BEGIN", self.transaction_timeout).await?
            }
        };
        Ok(Box::new(SqliteUnitOfWork {
            tx,
            owner: ctx.user().clone(),
            mode,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteConfig, SqliteStore};

    /// A statement that would run forever is interrupted at the unit of
    /// work's deadline, reported as Unavailable (the API's 503), and the
    /// writer connection is usable again afterwards.
    #[tokio::test]
    async fn a_statement_past_the_transaction_deadline_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SqliteConfig::new(format!("sqlite://{}/t.db", dir.path().display()));
        cfg.transaction_timeout = Duration::from_millis(200);
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let factory = store.uow_factory();

        let mut tx = TxConn::begin(
            &factory.writer,
            "BEGIN IMMEDIATE",
            factory.transaction_timeout,
        )
        .await
        .unwrap();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            tx.fetch_optional(sqlx::query(endless)),
        )
        .await
        .expect("the deadline must interrupt the statement long before 60 s");
        assert!(
            matches!(r, Err(PortError::Unavailable(_))),
            "got {:?}",
            r.map(|row| row.is_some())
        );
        drop(tx);

        // The next unit of work gets a fresh deadline and works normally.
        let mut tx = TxConn::begin(&factory.writer, "BEGIN IMMEDIATE", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(tx
            .fetch_optional(sqlx::query("SELECT 1"))
            .await
            .unwrap()
            .is_some());
        tx.end("COMMIT").await.unwrap();
    }
}
