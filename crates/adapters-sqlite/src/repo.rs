//! The repositories on an open [`SqliteUnitOfWork`].
//!
//! Every statement filters on the unit of work's owner (taken from the
//! request context at `begin`) as the first column of the key it uses, so
//! a foreign object behaves exactly like a missing one. Lists execute the
//! domain's [`PagePlan`] over live rows (partial indexes); cursor checks
//! use the primary keys, so a deleted object stays a valid cursor.
//!
//! Read-write units of work began with `BEGIN IMMEDIATE` and so hold the
//! database's single write lock: every read in them is a locking read, and
//! the per-owner and per-thread id sequences (ports rule 8) need no lock of
//! their own.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, QueryBuilder, Row, Sqlite};
use weft_adapters_sqlx::rows::{
    metadata_json, value_json, Corrupt, IdempotencyRow, MessageRow, ThreadRow,
};
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Order, Page, PagePlan, Thread, ThreadId,
    Timestamp,
};
use weft_ports::{
    Appended, IdempotencyRecord, IdempotencyRepository, MessageRepository, PortError,
    ThreadRepository,
};

use crate::error::{port_error, Misuse};
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::SqliteUnitOfWork;

/// The id bounds of a plan as SQL (`AND id > ? AND id < ?`, each when
/// present) with the values to bind in that order, and the scan direction.
/// Only fixed fragments are spliced in.
fn page_sql<'p>(
    above: Option<&'p str>,
    below: Option<&'p str>,
    order: Order,
) -> (String, Vec<&'p str>, &'static str) {
    let mut bounds = String::new();
    let mut values = Vec::new();
    for (id, op) in [(above, ">"), (below, "<")] {
        if let Some(id) = id {
            bounds.push_str(&format!(" AND id {op} ?"));
            values.push(id);
        }
    }
    let dir = match order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    (bounds, values, dir)
}

fn count_to_i64(n: u64) -> Result<i64, PortError> {
    i64::try_from(n).map_err(PortError::unexpected)
}

fn thread_of(row: &SqliteRow) -> Result<Thread, PortError> {
    ThreadRow::from_row(row).map_err(port_error)?.into_domain()
}

fn message_of(row: &SqliteRow) -> Result<Message, PortError> {
    MessageRow::from_row(row).map_err(port_error)?.into_domain()
}

fn text(row: &SqliteRow, col: usize) -> Result<String, PortError> {
    row.try_get(col).map_err(port_error)
}

impl SqliteUnitOfWork {
    /// Whether every id of `cursors` names a row of `table` in the owner's
    /// `scope` (deleted rows included): the cursor check of a list.
    async fn cursors_exist<'a>(
        &mut self,
        table: &str,
        thread: Option<&ThreadId>,
        cursors: impl Iterator<Item = &'a str>,
    ) -> Result<bool, PortError> {
        for cursor in cursors {
            let sql = match thread {
                Some(_) => {
                    format!("SELECT 1 FROM {table} WHERE owner = ? AND thread_id = ? AND id = ?")
                }
                None => format!("SELECT 1 FROM {table} WHERE owner = ? AND id = ?"),
            };
            let mut q = sqlx::query(&sql).bind(self.owner.as_str());
            if let Some(t) = thread {
                q = q.bind(t.as_str());
            }
            if self.tx.fetch_optional(q.bind(cursor)).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether `thread_id` is a live thread of the owner.
    async fn thread_is_live(&mut self, thread_id: &ThreadId) -> Result<bool, PortError> {
        let q =
            sqlx::query("SELECT 1 FROM threads WHERE owner = ? AND id = ? AND deleted_at IS NULL")
                .bind(self.owner.as_str())
                .bind(thread_id.as_str());
        Ok(self.tx.fetch_optional(q).await?.is_some())
    }

    /// Inserts `messages` of one live thread in one statement; `Ok(false)`
    /// when the thread is not live for the owner (nothing inserted).
    async fn insert_rows(&mut self, messages: &[Message]) -> Result<bool, PortError> {
        let Some(first) = messages.first() else {
            return Ok(true);
        };
        let thread_id = &first.thread_id;
        if messages.iter().any(|m| &m.thread_id != thread_id) {
            return Err(PortError::unexpected(Misuse::MixedThreads));
        }
        let rows: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    m,
                    m.content.to_stored_json(),
                    value_json(m.attachments.as_value()),
                    metadata_json(&m.metadata),
                )
            })
            .collect();
        // Guarded by the thread's liveness for this owner: either every
        // message is stored or (thread not live) none is.
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata) \
             SELECT column1, column2, column3, column4, column5, column6, column7, column8 FROM (",
        );
        qb.push_values(&rows, |mut b, (m, content, attachments, metadata)| {
            b.push_bind(self.owner.as_str())
                .push_bind(thread_id.as_str())
                .push_bind(m.id.as_str())
                .push_bind(m.created_at.unix_seconds())
                .push_bind(m.role.as_str())
                .push_bind(content.as_str())
                .push_bind(attachments.as_str())
                .push_bind(metadata.as_str());
        });
        qb.push(") WHERE EXISTS (SELECT 1 FROM threads WHERE owner = ")
            .push_bind(self.owner.as_str())
            .push(" AND id = ")
            .push_bind(thread_id.as_str())
            .push(" AND deleted_at IS NULL)");
        match self.tx.execute(qb.build()).await?.rows_affected() {
            0 => Ok(false),
            n if n == rows.len() as u64 => Ok(true),
            n => Err(PortError::unexpected(format!(
                "inserted {n} of {} messages in one statement",
                rows.len()
            ))),
        }
    }
}

#[async_trait]
impl ThreadRepository for SqliteUnitOfWork {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock_thread_sequence(&mut self) -> Result<Option<ThreadId>, PortError> {
        // The writer lock taken at BEGIN IMMEDIATE already serialises every
        // create; the row is created on first use so insert_thread can
        // advance it.
        let q = sqlx::query(
            "INSERT INTO owners (owner, newest_thread_id) VALUES (?, '') \
             ON CONFLICT (owner) DO UPDATE SET owner = excluded.owner RETURNING newest_thread_id",
        )
        .bind(self.owner.as_str());
        let row = self
            .tx
            .fetch_optional(q)
            .await?
            .ok_or_else(|| PortError::unexpected("owner upsert returned no row"))?;
        let newest = text(&row, 0)?;
        if newest.is_empty() {
            return Ok(None);
        }
        ThreadId::parse(&newest)
            .map(Some)
            .map_err(|e| Corrupt::error("owners.newest_thread_id", e))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread.id))]
    async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE owners SET newest_thread_id = ?2 WHERE owner = ?1 AND newest_thread_id < ?2",
        )
        .bind(self.owner.as_str())
        .bind(thread.id.as_str());
        if self.tx.execute(q).await?.rows_affected() != 1 {
            return Err(PortError::unexpected(
                "a thread id not above the owner's newest: lock_thread_sequence must come first",
            ));
        }
        let q = sqlx::query(
            "INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, message_count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.owner.as_str())
        .bind(thread.id.as_str())
        .bind(thread.created_at.unix_seconds())
        .bind(thread.updated_at.unix_seconds())
        .bind(metadata_json(&thread.metadata))
        .bind(value_json(thread.tool_resources.as_value()))
        .bind(thread.title.as_ref().map(|t| t.as_str()))
        .bind(count_to_i64(thread.message_count)?);
        self.tx.execute(q).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id))]
    async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads WHERE owner = ? AND id = ? AND deleted_at IS NULL"
        );
        let q = sqlx::query(&sql)
            .bind(self.owner.as_str())
            .bind(id.as_str());
        thread_of(
            &self
                .tx
                .fetch_optional(q)
                .await?
                .ok_or(PortError::NotFound)?,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id))]
    async fn lock_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        // BEGIN IMMEDIATE holds the write lock: a plain read is a locking read.
        self.get_thread(id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread.id))]
    async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE threads SET metadata = ?, tool_resources = ?, title = ?, updated_at = max(updated_at, ?) \
             WHERE owner = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(metadata_json(&thread.metadata))
        .bind(value_json(thread.tool_resources.as_value()))
        .bind(thread.title.as_ref().map(|t| t.as_str()))
        .bind(thread.updated_at.unix_seconds())
        .bind(self.owner.as_str())
        .bind(thread.id.as_str());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id, delta))]
    async fn adjust_message_count(
        &mut self,
        id: &ThreadId,
        delta: i64,
        at: Timestamp,
    ) -> Result<(), PortError> {
        // One conditional statement: the count changes in the database, never
        // read-modify-written in Rust. A delta that would take the count
        // below zero matches no row (NotFound) instead of tripping the CHECK.
        let q = sqlx::query(
            "UPDATE threads SET message_count = message_count + ?1, updated_at = max(updated_at, ?2) \
             WHERE owner = ?3 AND id = ?4 AND deleted_at IS NULL AND message_count + ?1 >= 0 RETURNING id",
        )
        .bind(delta)
        .bind(at.unix_seconds())
        .bind(self.owner.as_str())
        .bind(id.as_str());
        self.tx
            .fetch_optional(q)
            .await?
            .map(drop)
            .ok_or(PortError::NotFound)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id))]
    async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError> {
        // One row whatever the thread's size: its messages leave the API
        // with it and are removed from storage by the purge.
        let q = sqlx::query(
            "UPDATE threads SET deleted_at = ? WHERE owner = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(at.unix_seconds())
        .bind(self.owner.as_str())
        .bind(id.as_str());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_threads(
        &mut self,
        params: &ListParams<ThreadId>,
    ) -> Result<Page<Thread>, PortError> {
        let plan: PagePlan<'_, ThreadId> = params.plan();
        if !self
            .cursors_exist("threads", None, params.cursors().map(ThreadId::as_str))
            .await?
        {
            return Err(PortError::InvalidCursor);
        }
        let (bounds, values, dir) = page_sql(
            plan.above.map(ThreadId::as_str),
            plan.below.map(ThreadId::as_str),
            plan.scan,
        );
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads WHERE owner = ? AND deleted_at IS NULL{bounds} \
             ORDER BY id {dir} LIMIT ?"
        );
        let mut q = sqlx::query(&sql).bind(self.owner.as_str());
        for v in values {
            q = q.bind(v);
        }
        let rows = self.tx.fetch_all(q.bind(i64::from(plan.fetch))).await?;
        let items = rows.iter().map(thread_of).collect::<Result<Vec<_>, _>>()?;
        Ok(plan.finish(items))
    }
}

#[async_trait]
impl MessageRepository for SqliteUnitOfWork {
    #[tracing::instrument(level = "debug", skip_all, fields(count = messages.len()))]
    async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError> {
        let Some(last) = messages.last() else {
            return Ok(());
        };
        if !self.insert_rows(messages).await? {
            return Err(PortError::NotFound);
        }
        let q = sqlx::query(
            "UPDATE threads SET newest_message_id = ? WHERE owner = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(last.id.as_str())
        .bind(self.owner.as_str())
        .bind(last.thread_id.as_str());
        self.tx.execute(q).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %message.thread_id))]
    async fn append_message(&mut self, message: &Message) -> Result<Appended, PortError> {
        // The writer lock is held since BEGIN IMMEDIATE, so the check, the
        // count and the insert cannot interleave with another writer.
        let q = sqlx::query(
            "UPDATE threads SET message_count = message_count + 1, updated_at = max(updated_at, ?1), \
                    newest_message_id = ?2 \
             WHERE owner = ?3 AND id = ?4 AND deleted_at IS NULL AND newest_message_id < ?2 RETURNING id",
        )
        .bind(message.created_at.unix_seconds())
        .bind(message.id.as_str())
        .bind(self.owner.as_str())
        .bind(message.thread_id.as_str());
        if self.tx.fetch_optional(q).await?.is_some() {
            return if self.insert_rows(std::slice::from_ref(message)).await? {
                Ok(Appended::Done)
            } else {
                Err(PortError::NotFound)
            };
        }
        // Nothing changed: the thread is not live, or the id is not above
        // its newest.
        let q = sqlx::query(
            "SELECT newest_message_id FROM threads WHERE owner = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(self.owner.as_str())
        .bind(message.thread_id.as_str());
        let row = self
            .tx
            .fetch_optional(q)
            .await?
            .ok_or(PortError::NotFound)?;
        MessageId::parse(&text(&row, 0)?)
            .map(|newest| Appended::Stale { newest })
            .map_err(|e| Corrupt::error("threads.newest_message_id", e))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id, message_id = %id))]
    async fn get_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE owner = ?1 AND thread_id = ?2 AND id = ?3 AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.owner = ?1 AND t.id = ?2 AND t.deleted_at IS NULL)"
        );
        let q = sqlx::query(&sql)
            .bind(self.owner.as_str())
            .bind(thread_id.as_str())
            .bind(id.as_str());
        message_of(
            &self
                .tx
                .fetch_optional(q)
                .await?
                .ok_or(PortError::NotFound)?,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id, message_id = %id))]
    async fn lock_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError> {
        // As lock_thread: BEGIN IMMEDIATE already holds the write lock.
        self.get_message(thread_id, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %message.thread_id, message_id = %message.id))]
    async fn update_message(&mut self, message: &Message) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE messages SET metadata = ?4 \
             WHERE owner = ?1 AND thread_id = ?2 AND id = ?3 AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.owner = ?1 AND t.id = ?2 AND t.deleted_at IS NULL)",
        )
        .bind(self.owner.as_str())
        .bind(message.thread_id.as_str())
        .bind(message.id.as_str())
        .bind(metadata_json(&message.metadata));
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id, message_id = %id))]
    async fn archive_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
        at: Timestamp,
    ) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE messages SET deleted_at = ?4 \
             WHERE owner = ?1 AND thread_id = ?2 AND id = ?3 AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.owner = ?1 AND t.id = ?2 AND t.deleted_at IS NULL)",
        )
        .bind(self.owner.as_str())
        .bind(thread_id.as_str())
        .bind(id.as_str())
        .bind(at.unix_seconds());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id))]
    async fn list_messages(
        &mut self,
        thread_id: &ThreadId,
        params: &ListParams<MessageId>,
    ) -> Result<Page<Message>, PortError> {
        let plan: PagePlan<'_, MessageId> = params.plan();
        if !self.thread_is_live(thread_id).await? {
            return Err(PortError::NotFound);
        }
        if !self
            .cursors_exist(
                "messages",
                Some(thread_id),
                params.cursors().map(MessageId::as_str),
            )
            .await?
        {
            return Err(PortError::InvalidCursor);
        }
        let (bounds, values, dir) = page_sql(
            plan.above.map(MessageId::as_str),
            plan.below.map(MessageId::as_str),
            plan.scan,
        );
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE owner = ? AND thread_id = ? AND deleted_at IS NULL{bounds} ORDER BY id {dir} LIMIT ?"
        );
        let mut q = sqlx::query(&sql)
            .bind(self.owner.as_str())
            .bind(thread_id.as_str());
        for v in values {
            q = q.bind(v);
        }
        let rows = self.tx.fetch_all(q.bind(i64::from(plan.fetch))).await?;
        let items = rows.iter().map(message_of).collect::<Result<Vec<_>, _>>()?;
        Ok(plan.finish(items))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id))]
    async fn first_user_message(
        &mut self,
        thread_id: &ThreadId,
    ) -> Result<Option<Message>, PortError> {
        if !self.thread_is_live(thread_id).await? {
            return Err(PortError::NotFound);
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE owner = ? AND thread_id = ? AND deleted_at IS NULL AND role = 'user' ORDER BY id ASC LIMIT 1"
        );
        let q = sqlx::query(&sql)
            .bind(self.owner.as_str())
            .bind(thread_id.as_str());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(message_of)
            .transpose()
    }
}

#[async_trait]
impl IdempotencyRepository for SqliteUnitOfWork {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn find_idempotency(
        &mut self,
        key: &IdempotencyKey,
        not_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, PortError> {
        let q = sqlx::query(
            "SELECT key, fingerprint, body, created_at FROM idempotency \
             WHERE owner = ? AND key = ? AND created_at >= ?",
        )
        .bind(self.owner.as_str())
        .bind(key.as_str())
        .bind(not_before.unix_seconds());
        match self.tx.fetch_optional(q).await? {
            Some(r) => IdempotencyRow::from_row(&r)
                .map_err(port_error)?
                .into_domain()
                .map(Some),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn insert_idempotency(
        &mut self,
        record: &IdempotencyRecord,
        not_before: Timestamp,
    ) -> Result<(), PortError> {
        // Insert, or take over an expired record in the same statement. A
        // live record makes the upsert's WHERE false: no row changes, and
        // that is the Duplicate. Concurrent claims cannot interleave: the
        // claimant holds SQLite's write lock from BEGIN IMMEDIATE.
        let q = sqlx::query(
            "INSERT INTO idempotency (owner, key, fingerprint, body, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (owner, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             body = excluded.body, created_at = excluded.created_at \
             WHERE idempotency.created_at < ?6",
        )
        .bind(self.owner.as_str())
        .bind(record.key.as_str())
        .bind(record.fingerprint.as_str())
        .bind(record.response.body.as_str())
        .bind(record.created_at.unix_seconds())
        .bind(not_before.unix_seconds());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::Duplicate),
            _ => Ok(()),
        }
    }
}
