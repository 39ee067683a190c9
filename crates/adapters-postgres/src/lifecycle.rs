//! The data lifecycle on PostgreSQL: the [`Maintenance`] port (idempotency
//! expiry, purge, erase, export; the contract is in
//! `weft_ports::lifecycle`).
//!
//! # One owner per transaction (Citus)
//!
//! On Citus the tables are distributed by `owner` (`migrate.rs`), and a
//! transaction that changes rows of several owners becomes a distributed
//! transaction across shards. So every changing statement here filters on
//! one `owner = $1` — on every table it names, subqueries included — and
//! runs in a transaction of that owner alone:
//!
//! - **Cross-user maintenance** (expiry, purge) first *reads* a bounded set
//!   of candidates (`… WHERE created_at < $1 LIMIT n`, served by the
//!   `idempotency_created_at`, `threads_archived` and `messages_archived`
//!   indexes; a multi-shard read on Citus), groups them by owner, then
//!   deletes each owner's share by key in a transaction of its own. A
//!   batch delete never uses `ctid` (not allowed on a distributed table):
//!   rows are named by their keys (a join with `UNNEST` of key arrays, or
//!   a key range of one thread).
//! - **Erase and export** touch only the given owner, in every statement.
//!
//! # Plans
//!
//! Every batch first reads at most `n` keys (an index range scan in key
//! order, or the archive/expiry indexes), then changes exactly those rows
//! by key — a nested loop of primary-key lookups over `UNNEST($keys)`, or
//! for one thread's messages a primary-key range (`id <= $nth`) — so its
//! cost is the batch's whatever the owner's size. Two shapes were refused
//! after measuring them on 100,000 messages of one owner: `… IN (SELECT
//! … LIMIT n)` in one statement, which the planner hash-joins against the
//! owner's whole table (234 ms for a 5,000-row batch, against 25–45 ms
//! for the two statements), and `id = ANY($ids)`, which on a table without
//! statistics yet (just filled) a generic plan evaluates as a filter, a
//! linear search of the array per row (over 5 s for 5,000 ids).
//!
//! Every transaction is opened by the unit-of-work guard
//! ([`weft_adapters_sqlx::TxConn`]) with its per-transaction time bounds
//! (`SET LOCAL`, so they hold behind PgBouncer in transaction mode), and
//! statements honour the store's statement-cache policy (unnamed when it is
//! off). Nothing relies on session state.
//!
//! # Locks
//!
//! A purge batch deletes archived rows only: no API write ever touches them
//! (every write requires a live thread or message), and deleting a message
//! takes no lock on its thread, so purging never blocks an API writer.
//! Erase first archives the user's live threads (a batch at a time), so no
//! message can be added to a thread while it is being emptied, and a thread
//! is deleted only once it has no message: the foreign key can never fail
//! under a concurrent write.
//!
//! # Export
//!
//! One `REPEATABLE READ READ ONLY` transaction: every page is read from the
//! snapshot of its first statement. Pages are keyset-paginated (`id > last
//! ORDER BY id LIMIT n`) over the live-row indexes, so memory is one page,
//! whatever the user's size. Its idle-in-transaction bound is at least
//! [`EXPORT_IDLE_MIN`], so a slow reader of the output (a pipe) does not
//! end it. A long export holds back vacuum for its duration, as any long
//! snapshot does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::postgres::PgRow;
use sqlx::{Executor, FromRow, PgConnection, Postgres, Row};
use weft_adapters_sqlx::rows::{MessageRow, ThreadRow};
use weft_adapters_sqlx::{Opened, Pool, TxConn, TxManager, TxSpec};
use weft_domain::{Timestamp, UserId};
use weft_ports::{Erased, ExportReader, Exported, Maintenance, Mode, PortError, Purged};

use crate::error::port_error;
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::{PgTx, Query};

/// Objects per export page (threads or messages of one thread).
pub(crate) const EXPORT_PAGE: u32 = 200;

/// The least idle-in-transaction bound of an export's transaction.
pub(crate) const EXPORT_IDLE_MIN: Duration = Duration::from_secs(300);

/// The [`Maintenance`] port on a PostgreSQL pool (the store's own).
#[derive(Debug, Clone)]
pub(crate) struct PgMaintenance {
    pool: Pool<Postgres>,
    tx: Arc<PgTx>,
    snapshot: Arc<SnapshotTx>,
    cache: bool,
}

impl PgMaintenance {
    /// Maintenance on `pool`, with the store's transaction bounds and
    /// statement-cache policy.
    pub(crate) fn new(pool: Pool<Postgres>, tx: Arc<PgTx>, cache: bool) -> Self {
        let snapshot = Arc::new(SnapshotTx {
            statement_timeout: tx.statement_timeout,
            idle_timeout: tx.idle_in_transaction_timeout.max(EXPORT_IDLE_MIN),
        });
        Self {
            pool,
            tx,
            snapshot,
            cache,
        }
    }

    fn query<'q>(&self, sql: &'q str) -> Query<'q> {
        sqlx::query(sql).persistent(self.cache)
    }

    async fn begin(&self, mode: Mode) -> Result<TxConn<PgTx>, PortError> {
        let spec = TxSpec {
            mode,
            deadline: None,
        };
        TxConn::begin(&self.pool, Arc::clone(&self.tx), spec).await
    }

    /// One query over every owner's rows (the candidates of expiry and
    /// purge), in a read-only transaction of its own. On Citus it is a
    /// multi-shard read by design, and says so: it lowers
    /// `citus.multi_task_query_log_level` for itself, so a deployment (or
    /// the test suites) that refuses multi-shard queries on Weft's
    /// connections still refuses them for every API request. On plain
    /// PostgreSQL the setting is an inert placeholder.
    async fn read_across_owners(&self, q: Query<'_>) -> Result<Vec<PgRow>, PortError> {
        let mut tx = self.begin(Mode::ReadOnly).await?;
        tx.execute(self.query("SET LOCAL citus.multi_task_query_log_level = 'off'"))
            .await?;
        let rows = tx.fetch_all(q).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// One statement in a read-write transaction of its own; rows affected.
    async fn write(&self, q: Query<'_>) -> Result<u64, PortError> {
        let mut tx = self.begin(Mode::ReadWrite).await?;
        let n = tx.execute(q).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

impl PgMaintenance {
    /// Deletes at most `budget` messages of `owner`'s `thread`, oldest
    /// first, in `tx`; returns how many, and whether none is left. Two
    /// range scans of the primary key: the id `budget` rows in, then the
    /// delete of every id up to it (or of the rest, when fewer are left),
    /// so the cost is the batch's whatever the thread's size, and no plan
    /// depends on the size of a bound array.
    async fn delete_messages_of(
        &self,
        tx: &mut TxConn<PgTx>,
        owner: &str,
        thread: &str,
        budget: u64,
    ) -> Result<(u64, bool), PortError> {
        let cut = tx
            .fetch_optional(
                self.query(
                    "SELECT id FROM messages WHERE owner = $1 AND thread_id = $2 \
                     ORDER BY id OFFSET $3 LIMIT 1",
                )
                .bind(owner)
                .bind(thread)
                .bind(limit_of(budget.saturating_sub(1))),
            )
            .await?
            .map(|r| text(&r, 0))
            .transpose()?;
        let deleted = match &cut {
            Some(cut) => tx.execute(
                self.query("DELETE FROM messages WHERE owner = $1 AND thread_id = $2 AND id <= $3")
                    .bind(owner)
                    .bind(thread)
                    .bind(cut.clone()),
            ),
            None => tx.execute(
                self.query("DELETE FROM messages WHERE owner = $1 AND thread_id = $2")
                    .bind(owner)
                    .bind(thread),
            ),
        }
        .await?
        .rows_affected();
        Ok((deleted, cut.is_none()))
    }

    /// The first column of `q`'s rows (at most `limit` keys of one owner).
    async fn keys(&self, tx: &mut TxConn<PgTx>, q: Query<'_>) -> Result<Vec<String>, PortError> {
        tx.fetch_all(q).await?.iter().map(|r| text(r, 0)).collect()
    }
}

fn text(row: &PgRow, col: usize) -> Result<String, PortError> {
    row.try_get(col).map_err(port_error)
}

/// `(owner, key)` rows grouped by owner, keys in row order.
fn by_owner(rows: &[PgRow]) -> Result<BTreeMap<String, Vec<String>>, PortError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        out.entry(text(r, 0)?).or_default().push(text(r, 1)?);
    }
    Ok(out)
}

/// Message keys as two parallel arrays: thread ids and message ids.
type MessageKeys = (Vec<String>, Vec<String>);

/// `(owner, thread_id, id)` rows grouped by owner.
fn message_keys_by_owner(rows: &[PgRow]) -> Result<BTreeMap<String, MessageKeys>, PortError> {
    let mut out: BTreeMap<String, MessageKeys> = BTreeMap::new();
    for r in rows {
        let (threads, ids) = out.entry(text(r, 0)?).or_default();
        threads.push(text(r, 1)?);
        ids.push(text(r, 2)?);
    }
    Ok(out)
}

fn limit_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Maintenance for PgMaintenance {
    #[tracing::instrument(name = "pg.expire_idempotency", skip_all, fields(limit))]
    async fn expire_idempotency(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, PortError> {
        let before = created_before.unix_seconds();
        let candidates = self
            .read_across_owners(
                self.query("SELECT owner, key FROM idempotency WHERE created_at < $1 LIMIT $2")
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        let mut deleted = 0u64;
        for (owner, keys) in by_owner(&candidates)? {
            // `created_at` again: a key claimed anew since the read survives.
            let q = self
                .query(
                    "DELETE FROM idempotency i USING UNNEST($2::text[]) AS k(key) \
                     WHERE i.owner = $1 AND i.key = k.key AND i.created_at < $3",
                )
                .bind(owner)
                .bind(keys)
                .bind(before);
            deleted = deleted.saturating_add(self.write(q).await?);
        }
        Ok(deleted)
    }

    #[tracing::instrument(name = "pg.purge_archived", skip_all, fields(limit))]
    async fn purge_archived(
        &self,
        deleted_before: Timestamp,
        limit: u32,
    ) -> Result<Purged, PortError> {
        let before = deleted_before.unix_seconds();
        let mut purged = Purged::default();
        // Archived threads first; all their messages go with them (the
        // messages of a thread deleted through the API stay live rows,
        // unreachable because the thread is not).
        let threads = self
            .read_across_owners(
                self.query("SELECT owner, id FROM threads WHERE deleted_at < $1 LIMIT $2")
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        if !threads.is_empty() {
            let mut budget = u64::from(limit);
            for (owner, ids) in by_owner(&threads)? {
                if budget == 0 {
                    break;
                }
                let mut tx = self.begin(Mode::ReadWrite).await?;
                for thread in ids {
                    if budget == 0 {
                        break;
                    }
                    let (messages, emptied) = self
                        .delete_messages_of(&mut tx, &owner, &thread, budget)
                        .await?;
                    budget = budget.saturating_sub(messages);
                    purged.messages = purged.messages.saturating_add(messages);
                    if emptied {
                        let gone = tx
                            .execute(
                                self.query(
                                    "DELETE FROM threads t WHERE t.owner = $1 AND t.id = $2 \
                                       AND t.deleted_at < $3 \
                                       AND NOT EXISTS (SELECT 1 FROM messages m \
                                                       WHERE m.owner = $1 AND m.thread_id = $2)",
                                )
                                .bind(owner.clone())
                                .bind(thread)
                                .bind(before),
                            )
                            .await?
                            .rows_affected();
                        purged.threads = purged.threads.saturating_add(gone);
                    }
                }
                tx.commit().await?;
            }
            return Ok(purged);
        }
        // Then messages deleted through the API from live threads.
        let messages = self
            .read_across_owners(
                self.query(
                    "SELECT owner, thread_id, id FROM messages WHERE deleted_at < $1 LIMIT $2",
                )
                .bind(before)
                .bind(i64::from(limit)),
            )
            .await?;
        for (owner, (thread_ids, ids)) in message_keys_by_owner(&messages)? {
            let q = self
                .query(
                    "DELETE FROM messages m USING UNNEST($2::text[], $3::text[]) AS k(thread_id, id) \
                     WHERE m.owner = $1 AND m.thread_id = k.thread_id AND m.id = k.id \
                       AND m.deleted_at < $4",
                )
                .bind(owner)
                .bind(thread_ids)
                .bind(ids)
                .bind(before);
            purged.messages = purged.messages.saturating_add(self.write(q).await?);
        }
        Ok(purged)
    }

    #[tracing::instrument(name = "pg.erase_user_step", skip_all, fields(limit))]
    async fn erase_user_step(
        &self,
        user: &UserId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Erased, PortError> {
        let owner = user.as_str();
        let lim = i64::from(limit);
        // Each phase reads at most `limit` keys, then changes exactly those
        // rows by key (primary-key lookups), in one transaction.
        // 1. Close the live threads, so nothing can be appended to a thread
        //    while it is emptied (every append requires a live thread).
        let mut tx = self.begin(Mode::ReadWrite).await?;
        let ids = self
            .keys(
                &mut tx,
                self.query(
                    "SELECT id FROM threads WHERE owner = $1 AND deleted_at IS NULL ORDER BY id LIMIT $2",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if !ids.is_empty() {
            let closed = tx
                .execute(
                    self.query(
                        "UPDATE threads t SET deleted_at = $3 FROM UNNEST($2::text[]) AS k(id) \
                         WHERE t.owner = $1 AND t.id = k.id AND t.deleted_at IS NULL",
                    )
                    .bind(owner)
                    .bind(ids)
                    .bind(now.unix_seconds()),
                )
                .await?
                .rows_affected();
            tx.commit().await?;
            return Ok(Erased {
                threads_closed: closed,
                ..Erased::default()
            });
        }
        // 2. Idempotency records.
        let keys = self
            .keys(
                &mut tx,
                self.query("SELECT key FROM idempotency WHERE owner = $1 ORDER BY key LIMIT $2")
                    .bind(owner)
                    .bind(lim),
            )
            .await?;
        if !keys.is_empty() {
            let records = tx
                .execute(
                    self.query(
                        "DELETE FROM idempotency i USING UNNEST($2::text[]) AS k(key) \
                         WHERE i.owner = $1 AND i.key = k.key",
                    )
                    .bind(owner)
                    .bind(keys),
                )
                .await?
                .rows_affected();
            tx.commit().await?;
            return Ok(Erased {
                idempotency_records: records,
                ..Erased::default()
            });
        }
        // 3. Messages, live and archived, a thread at a time.
        let threads = self
            .keys(
                &mut tx,
                self.query(
                    "SELECT DISTINCT thread_id FROM \
                       (SELECT thread_id FROM messages WHERE owner = $1 \
                        ORDER BY thread_id, id LIMIT $2) m",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if !threads.is_empty() {
            let mut budget = u64::from(limit);
            let mut messages = 0u64;
            for thread in threads {
                if budget == 0 {
                    break;
                }
                let (n, _) = self
                    .delete_messages_of(&mut tx, owner, &thread, budget)
                    .await?;
                budget = budget.saturating_sub(n);
                messages = messages.saturating_add(n);
            }
            tx.commit().await?;
            return Ok(Erased {
                messages,
                ..Erased::default()
            });
        }
        // 4. Archived threads without messages (a thread created meanwhile
        //    is live: the next round closes it first).
        let ids = self
            .keys(
                &mut tx,
                self.query(
                    "SELECT id FROM threads WHERE owner = $1 AND deleted_at IS NOT NULL \
                     ORDER BY id LIMIT $2",
                )
                .bind(owner)
                .bind(lim),
            )
            .await?;
        if !ids.is_empty() {
            let threads = tx
                .execute(
                    self.query(
                        "DELETE FROM threads t USING UNNEST($2::text[]) AS k(id) \
                         WHERE t.owner = $1 AND t.id = k.id AND t.deleted_at IS NOT NULL \
                           AND NOT EXISTS (SELECT 1 FROM messages m \
                                           WHERE m.owner = $1 AND m.thread_id = t.id)",
                    )
                    .bind(owner)
                    .bind(ids),
                )
                .await?
                .rows_affected();
            tx.commit().await?;
            return Ok(Erased {
                threads,
                ..Erased::default()
            });
        }
        // 5. The owner's thread sequence, last, with it locked: a thread
        //    create of this owner (which locks the row first) either
        //    committed before — and is seen by the check, which runs after
        //    the lock (each statement reads the newest committed data) — or
        //    waits and starts a new sequence afterwards.
        tx.fetch_optional(
            self.query("SELECT 1 FROM owners WHERE owner = $1 FOR UPDATE")
                .bind(owner),
        )
        .await?;
        let left = tx
            .fetch_optional(
                self.query(
                    "SELECT EXISTS (SELECT 1 FROM threads WHERE owner = $1) \
                         OR EXISTS (SELECT 1 FROM messages WHERE owner = $1) \
                         OR EXISTS (SELECT 1 FROM idempotency WHERE owner = $1)",
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
            .execute(
                self.query("DELETE FROM owners WHERE owner = $1")
                    .bind(owner),
            )
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Erased {
            owner_rows,
            done: true,
            ..Erased::default()
        })
    }

    #[tracing::instrument(name = "pg.export_user", skip_all)]
    async fn export_user(&self, user: &UserId) -> Result<Box<dyn ExportReader>, PortError> {
        let spec = TxSpec {
            mode: Mode::ReadOnly,
            deadline: None,
        };
        let tx = TxConn::begin(&self.pool, Arc::clone(&self.snapshot), spec).await?;
        Ok(Box::new(PgExport {
            tx,
            owner: user.as_str().to_owned(),
            cache: self.cache,
            threads: VecDeque::new(),
            after_thread: String::new(),
            threads_done: false,
            current: None,
        }))
    }
}

/// The export's transaction: `REPEATABLE READ READ ONLY`, so every page
/// reads one snapshot, with the store's statement bound and a longer idle
/// bound (see the module docs).
#[derive(Debug)]
pub(crate) struct SnapshotTx {
    statement_timeout: Duration,
    idle_timeout: Duration,
}

impl TxManager for SnapshotTx {
    type Db = Postgres;

    fn begin<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        _spec: TxSpec,
    ) -> BoxFuture<'c, Result<Opened, sqlx::Error>> {
        // Only numbers are spliced in; never 0 ("no limit").
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
            self.statement_timeout.as_millis().max(1),
            self.idle_timeout.as_millis().max(1)
        );
        Box::pin(async move {
            conn.execute(sqlx::raw_sql(&sql)).await?;
            Ok(Opened::Transaction)
        })
    }

    fn end<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        crate::uow::end_transaction(conn, sql)
    }

    fn port_error(&self, e: sqlx::Error) -> PortError {
        port_error(e)
    }
}

/// An open export: the snapshot transaction and where each keyset walk is.
struct PgExport {
    tx: TxConn<SnapshotTx>,
    owner: String,
    cache: bool,
    /// The page of threads not yet handed out.
    threads: VecDeque<weft_domain::Thread>,
    /// The last thread id read ('' before the first page: ids are `C`-collated).
    after_thread: String,
    /// No thread is left to read.
    threads_done: bool,
    /// The thread whose messages are being read, and the last message id read.
    current: Option<(String, String)>,
}

impl PgExport {
    fn query<'q>(&self, sql: &'q str) -> Query<'q> {
        sqlx::query(sql).persistent(self.cache)
    }
}

#[async_trait]
impl ExportReader for PgExport {
    async fn next_batch(&mut self) -> Result<Vec<Exported>, PortError> {
        let page = usize::try_from(EXPORT_PAGE).unwrap_or(usize::MAX);
        loop {
            if let Some((thread, after)) = self.current.clone() {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m \
                     WHERE m.owner = $1 AND m.thread_id = $2 AND m.deleted_at IS NULL AND m.id > $3 \
                     ORDER BY m.id LIMIT $4"
                );
                let q = self
                    .query(&sql)
                    .bind(self.owner.clone())
                    .bind(thread.clone())
                    .bind(after)
                    .bind(i64::from(EXPORT_PAGE));
                let rows = self.tx.fetch_all(q).await?;
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
                "SELECT {THREAD_COLUMNS} FROM threads t \
                 WHERE t.owner = $1 AND t.deleted_at IS NULL AND t.id > $2 \
                 ORDER BY t.id LIMIT $3"
            );
            let q = self
                .query(&sql)
                .bind(self.owner.clone())
                .bind(self.after_thread.clone())
                .bind(i64::from(EXPORT_PAGE));
            let rows = self.tx.fetch_all(q).await?;
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

#[cfg(test)]
mod tests {
    /// Every statement of this file that changes rows filters on one owner
    /// (`owner = $1`), and none names rows by `ctid`: on Citus each is a
    /// single-shard statement (module docs). A new statement that forgets
    /// the owner fails here before it reaches a distributed database.
    #[test]
    fn every_changing_statement_is_scoped_to_one_owner() {
        let source = include_str!("lifecycle.rs");
        let source = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let mut statements = 0;
        for verb in ["\"DELETE ", "\"UPDATE "] {
            for (start, _) in source.match_indices(verb) {
                let rest = &source[start + 1..];
                let sql = &rest[..rest.find('"').unwrap_or(rest.len())];
                statements += 1;
                assert!(sql.contains("owner = $1"), "not scoped to one owner: {sql}");
                assert!(!sql.contains("ctid"), "rows named by ctid: {sql}");
            }
        }
        assert!(
            statements >= 8,
            "found only {statements} changing statements"
        );
    }
}
