//! The SQLite unit of work: the shared cancellation-safe guard
//! ([`weft_adapters_sqlx::TxConn`]) with SQLite's `BEGIN`, and the factory
//! that opens it.
//!
//! # SQLite's half of the guard
//!
//! - **Begin.** Read-write units of work run on the single writer
//!   connection with `BEGIN IMMEDIATE` (the write lock taken up front, so no
//!   lock upgrade can deadlock); read-only ones on the read-only pool with
//!   a deferred `BEGIN` (one WAL snapshot from the first read).
//! - **Time bound (DESIGN.md rule 6).** SQLite has no statement timeout: a
//!   progress handler armed at `BEGIN` (called every ~1,000 VM
//!   instructions, a clock read each time) interrupts any statement still
//!   running past the unit of work's deadline — the lesser of the
//!   transaction timeout and the request's remaining deadline. The
//!   statement fails with `SQLITE_INTERRUPT` (→ `Unavailable`, the API's
//!   503). The handler is removed before `COMMIT`/`ROLLBACK`, so neither
//!   the end nor the connection's next user (migrations, readiness) is
//!   interrupted by a stale deadline. Limitation: a unit of work that idles
//!   between statements is not interrupted (only its next statement is);
//!   the app never idles inside one.
//! - **A refused `BEGIN IMMEDIATE`** (`SQLITE_BUSY`: another *process*
//!   holds the write lock past the busy timeout) opened nothing, so the
//!   connection goes back to the pool as it is.
//! - Closing a SQLite connection rolls back its open transaction
//!   (`sqlite3_close` does that itself), which is what the guard relies on
//!   when it closes a connection dropped mid-statement; the writer's pool
//!   slot stays taken until the close is done, so the next writer never
//!   meets a stale write lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::{Executor, Sqlite, SqliteConnection};
use weft_adapters_sqlx::{Opened, Pool, TxConn, TxManager, TxSpec};
use weft_domain::UserId;
use weft_ports::{Mode, PortError, RequestContext, UnitOfWork, UnitOfWorkFactory};

use crate::error::{is_busy, port_error};

/// SQLite's half of the guard.
#[derive(Debug, Clone)]
pub(crate) struct SqliteTx {
    /// How long a unit of work's statements may run in all, from `BEGIN`.
    pub(crate) transaction_timeout: Duration,
}

/// `COMMIT` or `ROLLBACK` after removing the deadline's progress handler,
/// so neither the end nor the connection's next user is interrupted by a
/// stale one: the end of every SQLite transaction manager here (units of
/// work and the export's read transaction).
pub(crate) fn end_transaction<'c>(
    conn: &'c mut SqliteConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.lock_handle().await?.remove_progress_handler();
        conn.execute(sqlx::raw_sql(sql)).await?;
        Ok(())
    })
}

impl TxManager for SqliteTx {
    type Db = Sqlite;

    fn begin<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
        spec: TxSpec,
    ) -> BoxFuture<'c, Result<Opened, sqlx::Error>> {
        let deadline = Instant::now() + spec.budget(self.transaction_timeout);
        let begin = match spec.mode {
            Mode::ReadWrite => "BEGIN IMMEDIATE",
            Mode::ReadOnly | Mode::SingleRead => "BEGIN",
        };
        Box::pin(async move {
            // One hop to the connection's worker thread, not a database call.
            conn.lock_handle()
                .await?
                .set_progress_handler(1_000, move || Instant::now() < deadline);
            // Always a transaction, single reads included: SQLite is in
            // process, so BEGIN/COMMIT cost no round trip worth saving.
            match conn.execute(sqlx::raw_sql(begin)).await {
                Ok(_) => Ok(Opened::Transaction),
                Err(e) => {
                    conn.lock_handle().await?.remove_progress_handler();
                    Err(e)
                }
            }
        })
    }

    fn end<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        end_transaction(conn, sql)
    }

    fn begin_opened_nothing(&self, e: &sqlx::Error) -> bool {
        is_busy(e)
    }

    fn port_error(&self, e: sqlx::Error) -> PortError {
        port_error(e)
    }
}

/// An open SQLite transaction scoped to one owner. The repositories on it
/// are in `repo.rs`.
pub(crate) struct SqliteUnitOfWork {
    pub(crate) tx: TxConn<SqliteTx>,
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
        // transaction open and uncommitted; the guard then closes the
        // connection, which rolls it back, so Conflict really means "did
        // not commit".
        self.tx.commit().await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(mode = ?self.mode))]
    async fn rollback(self: Box<Self>) -> Result<(), PortError> {
        self.tx.rollback().await
    }
}

/// Opens SQLite units of work: read-write ones on the single writer
/// connection, read-only ones on the read-only pool. Cheap to clone;
/// shares the store's pools.
#[derive(Debug, Clone)]
pub(crate) struct SqliteUnitOfWorkFactory {
    pub(crate) writer: Pool<Sqlite>,
    pub(crate) reader: Pool<Sqlite>,
    pub(crate) tx: Arc<SqliteTx>,
}

#[async_trait]
impl UnitOfWorkFactory for SqliteUnitOfWorkFactory {
    #[tracing::instrument(level = "debug", skip_all, fields(mode = ?mode, request_id = %ctx.request_id()))]
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let pool = match mode {
            Mode::ReadWrite => &self.writer,
            // The connection itself is read-only (SQLITE_OPEN_READONLY), so a
            // write fails in SQLite whatever SQL is sent.
            Mode::ReadOnly | Mode::SingleRead => &self.reader,
        };
        let spec = TxSpec {
            mode,
            deadline: ctx.deadline(),
        };
        let tx = TxConn::begin(pool, Arc::clone(&self.tx), spec).await?;
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
        let spec = TxSpec {
            mode: Mode::ReadWrite,
            deadline: None,
        };

        let mut tx = TxConn::begin(&factory.writer, Arc::clone(&factory.tx), spec)
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
        let mut tx = TxConn::begin(&factory.writer, Arc::clone(&factory.tx), spec)
            .await
            .unwrap();
        assert!(tx
            .fetch_optional(sqlx::query("SELECT 1"))
            .await
            .unwrap()
            .is_some());
        tx.commit().await.unwrap();
    }

    /// The request's deadline bounds a statement too, when it comes before
    /// the transaction timeout.
    #[tokio::test]
    async fn a_statement_past_the_request_deadline_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SqliteConfig::new(format!("sqlite://{}/t.db", dir.path().display()));
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let factory = store.uow_factory();
        let spec = TxSpec {
            mode: Mode::ReadOnly,
            deadline: Some(Instant::now() + Duration::from_millis(200)),
        };
        let mut tx = TxConn::begin(&factory.reader, Arc::clone(&factory.tx), spec)
            .await
            .unwrap();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            tx.fetch_optional(sqlx::query(endless)),
        )
        .await
        .expect("the request deadline must interrupt the statement long before 60 s");
        assert!(matches!(r, Err(PortError::Unavailable(_))));
    }
}
