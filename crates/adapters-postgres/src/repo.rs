//! The repositories on an open [`PgUnitOfWork`]: every query of the
//! adapter.
//!
//! Rules every statement here keeps:
//! - **Owner first.** Every statement filters on the unit of work's owner
//!   (taken from the request context at `begin`), as the first column of
//!   the key it uses, so a foreign object behaves exactly like a missing
//!   one, and on Citus every statement is a single-shard router query
//!   (`owner = $1` on every distributed table it touches).
//! - **Live rows in lists.** Lists and reads filter `deleted_at IS NULL`,
//!   served by the partial indexes over live rows; cursor checks use the
//!   primary keys, so a deleted object stays a valid cursor.
//! - **One round trip where one statement suffices.** A message append is
//!   one statement (count, sequence check and insert in a data-modifying
//!   CTE); list pages fold their cursor and thread checks into the page
//!   query.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use weft_adapters_sqlx::rows::{metadata_json, value_json, IdempotencyRow, MessageRow, ThreadRow};
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Order, Page, PagePlan, Thread, ThreadId,
    Timestamp,
};
use weft_ports::{
    Appended, IdempotencyRecord, IdempotencyRepository, MessageRepository, PortError,
    ThreadRepository,
};

use crate::error::port_error;
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::PgUnitOfWork;

/// The cursor checks and id bounds of a page query whose plan bounds ids
/// by `above` (`id > …`) and `below` (`id < …`), for parameters numbered
/// from `$first` on: `(checks, bounds, values to bind in order)`. Every
/// bound is a cursor the client sent, so each is also checked: an `EXISTS`
/// over `table`'s primary key (deleted rows included) within `scope` (the
/// key before the id: the owner, and the thread for messages). Only fixed
/// fragments and parameter numbers are spliced in.
///
/// The page queries built from these share one shape, measured with
/// pgbench against the bare page `SELECT` (docs/BENCHMARKS.md, "What
/// was cut, each measured"): the checks sit in a one-row subquery fenced with `OFFSET 0`,
/// so the planner evaluates each `EXISTS` once instead of copying it into
/// the join filter and the output; the casts and column list live inside
/// the `LATERAL` page, so only those columns are formed; and there is no
/// outer `ORDER BY` (see [`page_items`]). Together, at 64 pgbench clients:
/// 4,900–5,550 pages/s against 3,800–4,200 for the earlier shape and
/// 5,100–5,500 for the bare `SELECT`.
fn page_sql<'p>(
    above: Option<&'p str>,
    below: Option<&'p str>,
    table: &str,
    alias: &str,
    scope: &str,
    first: usize,
) -> (String, String, Vec<&'p str>) {
    let mut checks = Vec::new();
    let mut bounds = String::new();
    let mut values = Vec::new();
    for (id, op) in [(above, ">"), (below, "<")] {
        if let Some(id) = id {
            let n = first + values.len();
            checks.push(format!(
                "EXISTS (SELECT 1 FROM {table} WHERE {scope} AND id = ${n})"
            ));
            bounds.push_str(&format!(" AND {alias}.id {op} ${n}"));
            values.push(id);
        }
    }
    let checks = if checks.is_empty() {
        "TRUE".to_owned()
    } else {
        checks.join(" AND ")
    };
    (checks, bounds, values)
}

fn dir<I>(plan: &PagePlan<'_, I>) -> &'static str {
    match plan.scan {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    }
}

/// The single-row boolean `col` of a folded page query.
fn flag(row: Option<&PgRow>, col: &str) -> Result<bool, PortError> {
    match row {
        Some(r) => r.try_get::<bool, _>(col).map_err(port_error),
        None => Err(PortError::unexpected("page query returned no flag row")),
    }
}

/// The objects of a page query's rows, in `scan` order of their ids. The
/// query always returns at least one row (carrying its check flags), so
/// rows without an `id` are those flag-only rows, not objects.
///
/// The order is restored here rather than by an outer `ORDER BY`: the page
/// already comes from one `ORDER BY … LIMIT` scan of an index, and sorting
/// its (at most 101) rows again in PostgreSQL cost more than the sort of
/// their ids here (docs/BENCHMARKS.md, "What was cut, each measured"); SQL promises no
/// order without `ORDER BY`, so the rows are sorted, not trusted.
fn page_items<T>(
    rows: &[PgRow],
    scan: Order,
    parse: impl Fn(&PgRow) -> Result<T, PortError>,
) -> Result<Vec<T>, PortError> {
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Option<String> = row.try_get("id").map_err(port_error)?;
        if let Some(id) = id {
            keyed.push((id, row));
        }
    }
    // Ids compare byte-wise, like the `COLLATE "C"` index they were read by.
    match scan {
        Order::Asc => keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0)),
        Order::Desc => keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0)),
    }
    keyed.into_iter().map(|(_, row)| parse(row)).collect()
}

fn thread_of(row: &PgRow) -> Result<Thread, PortError> {
    ThreadRow::from_row(row).map_err(port_error)?.into_domain()
}

fn message_of(row: &PgRow) -> Result<Message, PortError> {
    MessageRow::from_row(row).map_err(port_error)?.into_domain()
}

fn count(n: u64) -> Result<i64, PortError> {
    i64::try_from(n).map_err(PortError::unexpected)
}

#[async_trait]
impl ThreadRepository for PgUnitOfWork {
    async fn lock_thread_sequence(&mut self) -> Result<Option<ThreadId>, PortError> {
        // Creates the owner's row on first use; either way the row is
        // locked until the transaction ends, so the owner's thread creates
        // queue here (ports rule 8).
        let q = self
            .query(
                "INSERT INTO owners (owner, newest_thread_id) VALUES ($1, '') \
                 ON CONFLICT (owner) DO UPDATE SET owner = EXCLUDED.owner \
                 RETURNING newest_thread_id",
            )
            .bind(self.owner.clone());
        let row = self
            .row(q)
            .await?
            .ok_or_else(|| PortError::unexpected("owner upsert returned no row"))?;
        let newest: String = row.try_get(0).map_err(port_error)?;
        if newest.is_empty() {
            return Ok(None);
        }
        ThreadId::parse(&newest)
            .map(Some)
            .map_err(|e| weft_adapters_sqlx::rows::Corrupt::error("owners.newest_thread_id", e))
    }

    async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = self
            .query(
                "WITH o AS (UPDATE owners SET newest_thread_id = $2 \
                            WHERE owner = $1 AND newest_thread_id < $2 RETURNING owner) \
                 INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, \
                                      message_count, newest_message_id) \
                 SELECT o.owner, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, '' FROM o",
            )
            .bind(self.owner.clone())
            .bind(thread.id.as_str())
            .bind(thread.created_at.unix_seconds())
            .bind(thread.updated_at.unix_seconds())
            .bind(metadata_json(&thread.metadata))
            .bind(value_json(thread.tool_resources.as_value()))
            .bind(thread.title.as_ref().map(|t| t.as_str().to_owned()))
            .bind(count(thread.message_count)?);
        match self.exec(q).await?.rows_affected() {
            1 => Ok(()),
            _ => Err(PortError::unexpected(
                "a thread id not above the owner's newest: lock_thread_sequence must come first",
            )),
        }
    }

    async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads t \
             WHERE t.owner = $1 AND t.id = $2 AND t.deleted_at IS NULL"
        );
        let q = self.query(&sql).bind(self.owner.clone()).bind(id.as_str());
        match self.row(q).await? {
            Some(r) => thread_of(&r),
            None => Err(PortError::NotFound),
        }
    }

    async fn lock_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        // NO KEY UPDATE: the lock an UPDATE of the row takes, so it queues
        // behind (and blocks) appends and updates, but not the foreign-key
        // checks of message inserts.
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads t \
             WHERE t.owner = $1 AND t.id = $2 AND t.deleted_at IS NULL FOR NO KEY UPDATE"
        );
        let q = self.query(&sql).bind(self.owner.clone()).bind(id.as_str());
        match self.row(q).await? {
            Some(r) => thread_of(&r),
            None => Err(PortError::NotFound),
        }
    }

    async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = self
            .query(
                "UPDATE threads SET metadata = $3::jsonb, tool_resources = $4::jsonb, title = $5, updated_at = $6 \
                 WHERE owner = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(self.owner.clone())
            .bind(thread.id.as_str())
            .bind(metadata_json(&thread.metadata))
            .bind(value_json(thread.tool_resources.as_value()))
            .bind(thread.title.as_ref().map(|t| t.as_str().to_owned()))
            .bind(thread.updated_at.unix_seconds());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn adjust_message_count(
        &mut self,
        id: &ThreadId,
        delta: i64,
        at: Timestamp,
    ) -> Result<(), PortError> {
        // One statement: the ownership check, the row lock and the count
        // change happen atomically, so concurrent writers queue on the row
        // and no count is lost. A count that would go negative means there
        // is no live message to remove (the count is exact): NotFound, like
        // the archive that would follow, instead of tripping the CHECK.
        let q = self
            .query(
                "UPDATE threads SET message_count = message_count + $3, updated_at = GREATEST(updated_at, $4) \
                 WHERE owner = $1 AND id = $2 AND deleted_at IS NULL AND message_count + $3 >= 0 \
                 RETURNING id",
            )
            .bind(self.owner.clone())
            .bind(id.as_str())
            .bind(delta)
            .bind(at.unix_seconds());
        match self.row(q).await? {
            Some(_) => Ok(()),
            None => Err(PortError::NotFound),
        }
    }

    async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError> {
        // One row, whatever the thread's size: its messages leave the API
        // with it (every message read requires a live thread) and are
        // removed from storage by the purge.
        let q = self
            .query(
                "UPDATE threads SET deleted_at = $3 WHERE owner = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(self.owner.clone())
            .bind(id.as_str())
            .bind(at.unix_seconds());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn list_threads(
        &mut self,
        params: &ListParams<ThreadId>,
    ) -> Result<Page<Thread>, PortError> {
        let plan = params.plan();
        let (checks, bounds, values) = page_sql(
            plan.above.map(ThreadId::as_str),
            plan.below.map(ThreadId::as_str),
            "threads",
            "t",
            "owner = $1",
            3,
        );
        // The cursor checks and the page in one round trip: the flag row
        // survives (with NULL columns) even when the page is empty. Shaped
        // as `page_sql` says (checks fenced, columns in the page).
        let sql = format!(
            "SELECT c.ok, t.* \
             FROM (SELECT {checks} AS ok OFFSET 0) c \
             LEFT JOIN LATERAL (SELECT {THREAD_COLUMNS} FROM threads t \
                WHERE t.owner = $1 AND t.deleted_at IS NULL{bounds} \
                ORDER BY t.id {dir} LIMIT $2) t ON c.ok",
            dir = dir(&plan)
        );
        let mut q = self
            .query(&sql)
            .bind(self.owner.clone())
            .bind(i64::from(plan.fetch));
        for v in values {
            q = q.bind(v);
        }
        let rows = self.rows(q).await?;
        if !flag(rows.first(), "ok")? {
            return Err(PortError::InvalidCursor);
        }
        Ok(plan.finish(page_items(&rows, plan.scan, thread_of)?))
    }
}

#[async_trait]
impl MessageRepository for PgUnitOfWork {
    async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let thread_id = &first.thread_id;
        if messages.iter().any(|m| &m.thread_id != thread_id) {
            return Err(PortError::unexpected(
                "insert_messages: messages of more than one thread",
            ));
        }
        // One statement for all messages; the CTE checks the thread is live
        // for the owner and records the last id as its newest.
        let q = self
            .query(
                "WITH t AS (UPDATE threads SET newest_message_id = $3 \
                            WHERE owner = $1 AND id = $2 AND deleted_at IS NULL RETURNING owner, id) \
                 INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata) \
                 SELECT t.owner, t.id, u.id, u.created_at, u.role, u.content::jsonb, u.attachments::jsonb, \
                        u.metadata::jsonb \
                 FROM t, UNNEST($4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                    AS u(id, created_at, role, content, attachments, metadata)",
            )
            .bind(self.owner.clone())
            .bind(thread_id.as_str())
            .bind(last.id.as_str())
            .bind(messages.iter().map(|m| m.id.as_str().to_owned()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.created_at.unix_seconds()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.role.as_str().to_owned()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.to_stored_json()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| value_json(m.attachments.as_value())).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| metadata_json(&m.metadata)).collect::<Vec<_>>());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn append_message(&mut self, message: &Message) -> Result<Appended, PortError> {
        // One statement: lock the live thread, check the id is above its
        // newest, raise the count, move updated_at, record the id, insert.
        // A writer that waited for the row sees the newest committed
        // version (READ COMMITTED re-checks the WHERE), so the id check is
        // against what really committed before.
        let q = self
            .query(
                "WITH t AS (UPDATE threads SET message_count = message_count + 1, \
                                   updated_at = GREATEST(updated_at, $4), newest_message_id = $3 \
                            WHERE owner = $1 AND id = $2 AND deleted_at IS NULL AND newest_message_id < $3 \
                            RETURNING owner, id) \
                 INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata) \
                 SELECT t.owner, t.id, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb FROM t",
            )
            .bind(self.owner.clone())
            .bind(message.thread_id.as_str())
            .bind(message.id.as_str())
            .bind(message.created_at.unix_seconds())
            .bind(message.role.as_str())
            .bind(message.content.to_stored_json())
            .bind(value_json(message.attachments.as_value()))
            .bind(metadata_json(&message.metadata));
        if self.exec(q).await?.rows_affected() == 1 {
            return Ok(Appended::Done);
        }
        // Nothing written: the thread is not live, or the id is not above
        // its newest. Lock the row (so a retry cannot lose again) and tell.
        let q = self
            .query(
                "SELECT newest_message_id FROM threads \
                 WHERE owner = $1 AND id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE",
            )
            .bind(self.owner.clone())
            .bind(message.thread_id.as_str());
        let Some(row) = self.row(q).await? else {
            return Err(PortError::NotFound);
        };
        let newest: String = row.try_get(0).map_err(port_error)?;
        MessageId::parse(&newest)
            .map(|newest| Appended::Stale { newest })
            .map_err(|e| weft_adapters_sqlx::rows::Corrupt::error("threads.newest_message_id", e))
    }

    async fn get_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError> {
        self.read_message(thread_id, id, "").await
    }

    async fn lock_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError> {
        self.read_message(thread_id, id, " FOR NO KEY UPDATE OF m")
            .await
    }

    async fn update_message(&mut self, message: &Message) -> Result<(), PortError> {
        let q = self
            .query(
                "UPDATE messages m SET metadata = $4::jsonb FROM threads t \
                 WHERE m.owner = $1 AND m.thread_id = $2 AND m.id = $3 AND m.deleted_at IS NULL \
                   AND t.owner = $1 AND t.id = $2 AND t.deleted_at IS NULL",
            )
            .bind(self.owner.clone())
            .bind(message.thread_id.as_str())
            .bind(message.id.as_str())
            .bind(metadata_json(&message.metadata));
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn archive_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
        at: Timestamp,
    ) -> Result<(), PortError> {
        let q = self
            .query(
                "UPDATE messages m SET deleted_at = $4 FROM threads t \
                 WHERE m.owner = $1 AND m.thread_id = $2 AND m.id = $3 AND m.deleted_at IS NULL \
                   AND t.owner = $1 AND t.id = $2 AND t.deleted_at IS NULL",
            )
            .bind(self.owner.clone())
            .bind(thread_id.as_str())
            .bind(id.as_str())
            .bind(at.unix_seconds());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn list_messages(
        &mut self,
        thread_id: &ThreadId,
        params: &ListParams<MessageId>,
    ) -> Result<Page<Message>, PortError> {
        let plan = params.plan();
        let (checks, bounds, values) = page_sql(
            plan.above.map(MessageId::as_str),
            plan.below.map(MessageId::as_str),
            "messages",
            "m",
            "owner = $1 AND thread_id = $2",
            4,
        );
        // Thread check, cursor checks and page in one round trip, shaped
        // as `page_sql` says (checks fenced, columns in the page).
        let sql = format!(
            "SELECT c.thread_ok, c.cursor_ok, m.* \
             FROM (SELECT EXISTS (SELECT 1 FROM threads WHERE owner = $1 AND id = $2 AND deleted_at IS NULL) \
                AS thread_ok, {checks} AS cursor_ok OFFSET 0) c \
             LEFT JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.owner = $1 AND m.thread_id = $2 \
                AND m.deleted_at IS NULL{bounds} ORDER BY m.id {dir} LIMIT $3) m \
                ON c.thread_ok AND c.cursor_ok",
            dir = dir(&plan)
        );
        let mut q = self
            .query(&sql)
            .bind(self.owner.clone())
            .bind(thread_id.as_str())
            .bind(i64::from(plan.fetch));
        for v in values {
            q = q.bind(v);
        }
        let rows = self.rows(q).await?;
        if !flag(rows.first(), "thread_ok")? {
            return Err(PortError::NotFound);
        }
        if !flag(rows.first(), "cursor_ok")? {
            return Err(PortError::InvalidCursor);
        }
        Ok(plan.finish(page_items(&rows, plan.scan, message_of)?))
    }

    async fn first_user_message(
        &mut self,
        thread_id: &ThreadId,
    ) -> Result<Option<Message>, PortError> {
        let sql = format!(
            "SELECT c.ok, m.* \
             FROM (SELECT EXISTS (SELECT 1 FROM threads WHERE owner = $1 AND id = $2 AND deleted_at IS NULL) AS ok OFFSET 0) c \
             LEFT JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.owner = $1 AND m.thread_id = $2 \
                AND m.deleted_at IS NULL AND m.role = 'user' ORDER BY m.id ASC LIMIT 1) m ON c.ok"
        );
        let q = self
            .query(&sql)
            .bind(self.owner.clone())
            .bind(thread_id.as_str());
        let rows = self.rows(q).await?;
        if !flag(rows.first(), "ok")? {
            return Err(PortError::NotFound);
        }
        page_items(&rows, Order::Asc, message_of).map(|items| items.into_iter().next())
    }
}

impl PgUnitOfWork {
    async fn read_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
        lock: &str,
    ) -> Result<Message, PortError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN threads t ON t.owner = m.owner AND t.id = m.thread_id \
             WHERE m.owner = $1 AND m.thread_id = $2 AND m.id = $3 AND m.deleted_at IS NULL \
               AND t.deleted_at IS NULL{lock}"
        );
        let q = self
            .query(&sql)
            .bind(self.owner.clone())
            .bind(thread_id.as_str())
            .bind(id.as_str());
        match self.row(q).await? {
            Some(r) => message_of(&r),
            None => Err(PortError::NotFound),
        }
    }
}

#[async_trait]
impl IdempotencyRepository for PgUnitOfWork {
    async fn find_idempotency(
        &mut self,
        key: &IdempotencyKey,
        not_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, PortError> {
        let q = self
            .query(
                "SELECT key, fingerprint, body, created_at FROM idempotency \
                 WHERE owner = $1 AND key = $2 AND created_at >= $3",
            )
            .bind(self.owner.clone())
            .bind(key.as_str())
            .bind(not_before.unix_seconds());
        match self.row(q).await? {
            Some(r) => IdempotencyRow::from_row(&r)
                .map_err(port_error)?
                .into_domain()
                .map(Some),
            None => Ok(None),
        }
    }

    async fn insert_idempotency(
        &mut self,
        record: &IdempotencyRecord,
        not_before: Timestamp,
    ) -> Result<(), PortError> {
        // ON CONFLICT waits for a concurrent claimer of the same key, then
        // either replaces an expired record or returns no row (Duplicate),
        // without aborting the transaction.
        let q = self
            .query(
                "INSERT INTO idempotency (owner, key, fingerprint, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
                    body = EXCLUDED.body, created_at = EXCLUDED.created_at \
                 WHERE idempotency.created_at < $6 \
                 RETURNING 1 AS claimed",
            )
            .bind(self.owner.clone())
            .bind(record.key.as_str())
            .bind(record.fingerprint.as_str())
            .bind(record.response.body.as_str())
            .bind(record.created_at.unix_seconds())
            .bind(not_before.unix_seconds());
        match self.row(q).await? {
            Some(_) => Ok(()),
            None => Err(PortError::Duplicate),
        }
    }
}
