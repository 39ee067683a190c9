//! The data lifecycle on SQLite: the [`Maintenance`] port (idempotency
//! expiry, purge, erase, export; the contract is in
//! `weft_ports::lifecycle`).
//!
//! # One write transaction per batch
//!
//! SQLite admits one writer at a time, so the bound that matters is how
//! long a batch holds the write lock. Each batch is exactly one `BEGIN
//! IMMEDIATE` transaction on the store's writer connection (bounded by the
//! transaction timeout like any unit of work), changing at most `limit`
//! rows of each kind, and rows are picked by `rowid` (`DELETE … WHERE
//! rowid IN (SELECT … LIMIT n)`) over the same indexes PostgreSQL uses
//! (`threads_archived`, `messages_archived`, `idempotency_created_at`, the
//! primary keys). In the server's process, batches queue with the API's
//! writers in the writer pool's FIFO; from another process (`weft purge`
//! while `weft serve` runs), the other process's writers wait in SQLite's
//! busy handler for one batch, and the pause between batches
//! (`weft-app`'s `BatchPolicy`) lets them in.
//!
//! Erase follows the same order as on PostgreSQL (close live threads, then
//! delete records, messages, emptied threads, and last the owner's
//! sequence), so a thread is only deleted once nothing can be added to it.
//!
//! # Export
//!
//! One read transaction on a read-only connection: SQLite's WAL gives it
//! the snapshot of its first read, kept until it ends (the WAL cannot be
//! checkpointed past that snapshot meanwhile, so it grows while a long
//! export runs). The transaction itself has no overall deadline — an export
//! of a large user takes as long as its output takes to write — but each
//! page query is interrupted past the store's transaction timeout, as any
//! statement of a unit of work is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, FromRow, Row, Sqlite, SqliteConnection};
use weft_adapters_sqlx::rows::{MessageRow, ThreadRow};
use weft_adapters_sqlx::{Opened, Pool, TxConn, TxManager, TxSpec};
use weft_domain::{Thread, Timestamp, UserId};
use weft_ports::{Erased, ExportReader, Exported, Maintenance, Mode, PortError, Purged};

use crate::error::port_error;
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::SqliteTx;
use crate::SqliteStore;

/// Objects per export page (threads, or messages of one thread).
const EXPORT_PAGE: u32 = 200;

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

impl SqliteStore {
    /// The data lifecycle's maintenance operations on this store's
    /// connections (the writer for batches, the read-only pool for exports).
    pub fn maintenance(&self) -> Arc<dyn Maintenance> {
        let f = self.uow_factory();
        let statement_timeout = f.tx.transaction_timeout;
        Arc::new(SqliteMaintenance {
            writer: f.writer,
            reader: f.reader,
            tx: f.tx,
            snapshot: Arc::new(SnapshotTx),
            statement_timeout,
        })
    }
}

/// The [`Maintenance`] port on a [`SqliteStore`]'s pools.
#[derive(Debug, Clone)]
struct SqliteMaintenance {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    tx: Arc<SqliteTx>,
    snapshot: Arc<SnapshotTx>,
    statement_timeout: Duration,
}

impl SqliteMaintenance {
    /// A write transaction on the writer connection (`BEGIN IMMEDIATE`,
    /// bounded by the transaction timeout).
    async fn begin(&self) -> Result<TxConn<SqliteTx>, PortError> {
        let spec = TxSpec {
            mode: Mode::ReadWrite,
            deadline: None,
        };
        TxConn::begin(&self.writer, Arc::clone(&self.tx), spec).await
    }

    /// One statement in a write transaction of its own; rows affected.
    async fn write(&self, q: Query<'_>) -> Result<u64, PortError> {
        let mut tx = self.begin().await?;
        let n = tx.execute(q).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

#[async_trait]
impl Maintenance for SqliteMaintenance {
    #[tracing::instrument(name = "sqlite.expire_idempotency", skip_all, fields(limit))]
    async fn expire_idempotency(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, PortError> {
        self.write(
            sqlx::query(
                "DELETE FROM idempotency WHERE (owner, key) IN \
                   (SELECT owner, key FROM idempotency WHERE created_at < ?1 LIMIT ?2)",
            )
            .bind(created_before.unix_seconds())
            .bind(i64::from(limit)),
        )
        .await
    }

    #[tracing::instrument(name = "sqlite.purge_archived", skip_all, fields(limit))]
    async fn purge_archived(
        &self,
        deleted_before: Timestamp,
        limit: u32,
    ) -> Result<Purged, PortError> {
        let before = deleted_before.unix_seconds();
        let mut tx = self.begin().await?;
        // Messages of archived threads (live rows: a thread deleted through
        // the API keeps its messages as they were, unreachable).
        let of_threads = tx
            .execute(
                sqlx::query(
                    // CROSS JOIN keeps the archived threads (threads_archived)
                    // the outer loop: left to itself, the planner may scan
                    // every message and probe the threads instead.
                    "DELETE FROM messages WHERE rowid IN \
                       (SELECT m.rowid FROM threads t \
                          CROSS JOIN messages m ON m.owner = t.owner AND m.thread_id = t.id \
                        WHERE t.deleted_at < ?1 LIMIT ?2)",
                )
                .bind(before)
                .bind(i64::from(limit)),
            )
            .await?
            .rows_affected();
        // Archived threads left without a message.
        let threads = tx
            .execute(
                sqlx::query(
                    "DELETE FROM threads WHERE rowid IN \
                       (SELECT t.rowid FROM threads t WHERE t.deleted_at < ?1 \
                          AND NOT EXISTS (SELECT 1 FROM messages m \
                                          WHERE m.owner = t.owner AND m.thread_id = t.id) \
                        LIMIT ?2)",
                )
                .bind(before)
                .bind(i64::from(limit)),
            )
            .await?
            .rows_affected();
        // Messages deleted through the API, with what is left of the budget.
        let budget = u64::from(limit).saturating_sub(of_threads);
        let loose = if budget > 0 {
            tx.execute(
                sqlx::query(
                    "DELETE FROM messages WHERE rowid IN \
                       (SELECT rowid FROM messages WHERE deleted_at < ?1 LIMIT ?2)",
                )
                .bind(before)
                .bind(i64::try_from(budget).unwrap_or(i64::MAX)),
            )
            .await?
            .rows_affected()
        } else {
            0
        };
        tx.commit().await?;
        Ok(Purged {
            threads,
            messages: of_threads.saturating_add(loose),
        })
    }

    #[tracing::instrument(name = "sqlite.erase_user_step", skip_all, fields(limit))]
    async fn erase_user_step(
        &self,
        user: &UserId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Erased, PortError> {
        let owner = user.as_str();
        let lim = i64::from(limit);
        // 1. Close the live threads, so nothing can be appended to a thread
        //    while it is emptied.
        let closed = self
            .write(
                sqlx::query(
                    "UPDATE threads SET deleted_at = ?2 WHERE rowid IN \
                       (SELECT rowid FROM threads WHERE owner = ?1 AND deleted_at IS NULL LIMIT ?3)",
                )
                .bind(owner)
                .bind(now.unix_seconds())
                .bind(lim),
            )
            .await?;
        if closed > 0 {
            return Ok(Erased {
                threads_closed: closed,
                ..Erased::default()
            });
        }
        // 2. Idempotency records.
        let records = self
            .write(
                sqlx::query(
                    "DELETE FROM idempotency WHERE owner = ?1 AND key IN \
                       (SELECT key FROM idempotency WHERE owner = ?1 LIMIT ?2)",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if records > 0 {
            return Ok(Erased {
                idempotency_records: records,
                ..Erased::default()
            });
        }
        // 3. Messages, live and archived.
        let messages = self
            .write(
                sqlx::query(
                    "DELETE FROM messages WHERE rowid IN \
                       (SELECT rowid FROM messages WHERE owner = ?1 LIMIT ?2)",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if messages > 0 {
            return Ok(Erased {
                messages,
                ..Erased::default()
            });
        }
        // 4. Archived threads left without messages.
        let threads = self
            .write(
                sqlx::query(
                    "DELETE FROM threads WHERE rowid IN \
                       (SELECT t.rowid FROM threads t WHERE t.owner = ?1 AND t.deleted_at IS NOT NULL \
                          AND NOT EXISTS (SELECT 1 FROM messages m \
                                          WHERE m.owner = ?1 AND m.thread_id = t.id) \
                        LIMIT ?2)",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if threads > 0 {
            return Ok(Erased {
                threads,
                ..Erased::default()
            });
        }
        // 5. The owner's sequence, last, under the write lock (so no create
        //    of this owner can interleave), only when nothing else is left.
        let mut tx = self.begin().await?;
        let left = tx
            .fetch_optional(
                sqlx::query(
                    "SELECT EXISTS (SELECT 1 FROM threads WHERE owner = ?1) \
                         OR EXISTS (SELECT 1 FROM messages WHERE owner = ?1) \
                         OR EXISTS (SELECT 1 FROM idempotency WHERE owner = ?1)",
                )
                .bind(owner),
            )
            .await?
            .map(|r| r.try_get::<bool, _>(0))
            .transpose()
            .map_err(port_error)?
            .unwrap_or(true);
        if left {
            tx.rollback().await?;
            return Ok(Erased::default());
        }
        let owner_rows = tx
            .execute(sqlx::query("DELETE FROM owners WHERE owner = ?1").bind(owner))
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Erased {
            owner_rows,
            done: true,
            ..Erased::default()
        })
    }

    #[tracing::instrument(name = "sqlite.export_user", skip_all)]
    async fn export_user(&self, user: &UserId) -> Result<Box<dyn ExportReader>, PortError> {
        let spec = TxSpec {
            mode: Mode::ReadOnly,
            deadline: None,
        };
        let tx = TxConn::begin(&self.reader, Arc::clone(&self.snapshot), spec).await?;
        Ok(Box::new(SqliteExport {
            tx,
            owner: user.as_str().to_owned(),
            statement_timeout: self.statement_timeout,
            threads: std::collections::VecDeque::new(),
            after_thread: String::new(),
            threads_done: false,
            current: None,
        }))
    }
}

/// The export's transaction: a deferred `BEGIN` on a read-only connection
/// (one WAL snapshot from its first read), without the unit of work's
/// overall deadline; each page query gets its own (see [`SqliteExport`]).
#[derive(Debug)]
struct SnapshotTx;

impl TxManager for SnapshotTx {
    type Db = Sqlite;

    fn begin<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
        _spec: TxSpec,
    ) -> BoxFuture<'c, Result<Opened, sqlx::Error>> {
        Box::pin(async move {
            conn.execute(sqlx::raw_sql("BEGIN")).await?;
            Ok(Opened::Transaction)
        })
    }

    fn end<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        // The last page query's deadline must not outlive the export.
        crate::uow::end_transaction(conn, sql)
    }

    fn port_error(&self, e: sqlx::Error) -> PortError {
        port_error(e)
    }
}

/// An open export: the read transaction and where each keyset walk is.
struct SqliteExport {
    tx: TxConn<SnapshotTx>,
    owner: String,
    /// How long one page query may run.
    statement_timeout: Duration,
    /// The page of threads not yet handed out.
    threads: std::collections::VecDeque<Thread>,
    /// The last thread id read ('' before the first page).
    after_thread: String,
    /// No thread is left to read.
    threads_done: bool,
    /// The thread whose messages are being read, and the last message id read.
    current: Option<(String, String)>,
}

impl SqliteExport {
    /// One page query, interrupted past the statement timeout (a progress
    /// handler armed for this statement alone; SQLite has no statement
    /// timeout of its own).
    async fn page(&mut self, q: Query<'_>) -> Result<Vec<SqliteRow>, PortError> {
        let deadline = Instant::now() + self.statement_timeout;
        let conn = self.tx.start()?;
        let r = async {
            conn.lock_handle()
                .await?
                .set_progress_handler(1_000, move || Instant::now() < deadline);
            conn.fetch_all(q).await
        }
        .await;
        self.tx.settle(r)
    }
}

fn text(row: &SqliteRow, col: usize) -> Result<String, PortError> {
    row.try_get(col).map_err(port_error)
}

#[async_trait]
impl ExportReader for SqliteExport {
    async fn next_batch(&mut self) -> Result<Vec<Exported>, PortError> {
        let page = usize::try_from(EXPORT_PAGE).unwrap_or(usize::MAX);
        loop {
            if let Some((thread, after)) = self.current.clone() {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages \
                     WHERE owner = ?1 AND thread_id = ?2 AND deleted_at IS NULL AND id > ?3 \
                     ORDER BY id LIMIT ?4"
                );
                let q = sqlx::query(&sql)
                    .bind(self.owner.clone())
                    .bind(thread.clone())
                    .bind(after)
                    .bind(i64::from(EXPORT_PAGE));
                let rows = self.page(q).await?;
                let messages = rows
                    .iter()
                    .map(|r| {
                        MessageRow::from_row(r)
                            .map_err(port_error)?
                            .into_domain()
                            .map(Exported::Message)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.current = match rows.last() {
                    Some(last) if rows.len() >= page => Some((thread, text(last, 0)?)),
                    _ => None,
                };
                if messages.is_empty() {
                    continue;
                }
                return Ok(messages);
            }
            if let Some(thread) = self.threads.pop_front() {
                self.current = Some((thread.id.as_str().to_owned(), String::new()));
                return Ok(vec![Exported::Thread(thread)]);
            }
            if self.threads_done {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {THREAD_COLUMNS} FROM threads \
                 WHERE owner = ?1 AND deleted_at IS NULL AND id > ?2 ORDER BY id LIMIT ?3"
            );
            let q = sqlx::query(&sql)
                .bind(self.owner.clone())
                .bind(self.after_thread.clone())
                .bind(i64::from(EXPORT_PAGE));
            let rows = self.page(q).await?;
            self.threads_done = rows.len() < page;
            for r in &rows {
                let thread = ThreadRow::from_row(r).map_err(port_error)?.into_domain()?;
                self.after_thread = thread.id.as_str().to_owned();
                self.threads.push_back(thread);
            }
        }
    }

    async fn finish(self: Box<Self>) -> Result<(), PortError> {
        self.tx.commit().await
    }
}
