//! The repositories on an open [`SqliteUnitOfWork`].
//!
//! Every statement filters on the unit of work's owner (taken from the
//! request context at `begin`), so a foreign object behaves exactly like a
//! missing one. Lists execute the domain's [`weft_domain::list::PagePlan`].

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, QueryBuilder, Row, Sqlite};
use weft_adapters_sqlx::paging::cursor_id;
use weft_adapters_sqlx::rows::{metadata_json, value_json, IdempotencyRow, MessageRow, ThreadRow};
use weft_domain::list::{Bound, PagePlan};
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Order, Page, Thread, ThreadId, Timestamp,
};
use weft_ports::{
    IdempotencyRecord, IdempotencyRepository, MessageRepository, PortError, ThreadRepository,
};

use crate::error::{map_sqlx, Misuse};
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::SqliteUnitOfWork;

/// `WHERE` fragment and `ORDER BY` direction of a page plan. Both come
/// from fixed strings, never from input.
fn plan_sql(plan: &PagePlan) -> (&'static str, &'static str) {
    let bound = match plan.bound {
        Some(Bound::Greater) => " AND id > ?",
        Some(Bound::Less) => " AND id < ?",
        None => "",
    };
    let dir = match plan.scan {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    (bound, dir)
}

fn count_to_i64(n: u64) -> Result<i64, PortError> {
    i64::try_from(n).map_err(PortError::unexpected)
}

#[async_trait]
impl ThreadRepository for SqliteUnitOfWork {
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread.id))]
    async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let metadata = metadata_json(&thread.metadata);
        let tool_resources = value_json(thread.tool_resources.as_value());
        let q = sqlx::query(
            "INSERT INTO threads (id, owner, created_at, updated_at, metadata, tool_resources, title, message_count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(thread.id.as_str())
        .bind(self.owner.as_str())
        .bind(thread.created_at.unix_seconds())
        .bind(thread.updated_at.unix_seconds())
        .bind(metadata)
        .bind(tool_resources)
        .bind(thread.title.as_ref().map(|t| t.as_str()))
        .bind(count_to_i64(thread.message_count)?);
        self.tx.execute(q).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id))]
    async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        let sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE id = ? AND owner = ? AND deleted_at IS NULL");
        let q = sqlx::query(&sql)
            .bind(id.as_str())
            .bind(self.owner.as_str());
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
        // A read-write unit of work began with BEGIN IMMEDIATE and so already
        // holds the database's single write lock: no other writer can change
        // this row until we end. A plain read is therefore a locking read.
        self.get_thread(id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread.id))]
    async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let metadata = metadata_json(&thread.metadata);
        let tool_resources = value_json(thread.tool_resources.as_value());
        let q = sqlx::query(
            "UPDATE threads SET metadata = ?, tool_resources = ?, title = ?, updated_at = max(updated_at, ?) \
             WHERE id = ? AND owner = ? AND deleted_at IS NULL",
        )
        .bind(metadata)
        .bind(tool_resources)
        .bind(thread.title.as_ref().map(|t| t.as_str()))
        .bind(thread.updated_at.unix_seconds())
        .bind(thread.id.as_str())
        .bind(self.owner.as_str());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id, delta))]
    async fn touch_thread(
        &mut self,
        id: &ThreadId,
        delta: i64,
        at: Timestamp,
    ) -> Result<(), PortError> {
        // One conditional statement: the count changes in the database, never
        // read-modify-written in Rust, so no concurrent change is lost. A
        // delta that would take the count below zero matches no row
        // (NotFound), as in the PostgreSQL adapter, instead of tripping the
        // CHECK constraint.
        let q = sqlx::query(
            "UPDATE threads SET message_count = message_count + ?1, updated_at = max(updated_at, ?2) \
             WHERE id = ?3 AND owner = ?4 AND deleted_at IS NULL AND message_count + ?1 >= 0 RETURNING id",
        )
        .bind(delta)
        .bind(at.unix_seconds())
        .bind(id.as_str())
        .bind(self.owner.as_str());
        self.tx
            .fetch_optional(q)
            .await?
            .map(drop)
            .ok_or(PortError::NotFound)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %id))]
    async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE threads SET deleted_at = ? WHERE id = ? AND owner = ? AND deleted_at IS NULL",
        )
        .bind(at.unix_seconds())
        .bind(id.as_str())
        .bind(self.owner.as_str());
        if self.tx.execute(q).await?.rows_affected() == 0 {
            return Err(PortError::NotFound);
        }
        let q = sqlx::query("UPDATE messages SET deleted_at = ? WHERE thread_id = ? AND owner = ? AND deleted_at IS NULL")
            .bind(at.unix_seconds())
            .bind(id.as_str())
            .bind(self.owner.as_str());
        self.tx.execute(q).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_threads(
        &mut self,
        params: &ListParams<ThreadId>,
    ) -> Result<Page<Thread>, PortError> {
        let plan = params.plan();
        let cursor = cursor_id(params);
        if let Some(c) = cursor {
            // The cursor must be one of the owner's threads; a deleted one
            // keeps its place in the order and stays valid.
            let q = sqlx::query("SELECT 1 FROM threads WHERE id = ? AND owner = ?")
                .bind(c.as_str())
                .bind(self.owner.as_str());
            if self.tx.fetch_optional(q).await?.is_none() {
                return Err(PortError::InvalidCursor);
            }
        }
        let (bound, dir) = plan_sql(&plan);
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads WHERE owner = ? AND deleted_at IS NULL{bound} ORDER BY id {dir} LIMIT ?"
        );
        let mut q = sqlx::query(&sql).bind(self.owner.as_str());
        if let (Some(c), Some(_)) = (cursor, plan.bound) {
            q = q.bind(c.as_str());
        }
        let rows = self.tx.fetch_all(q.bind(i64::from(plan.fetch))).await?;
        let items = rows.iter().map(thread_of).collect::<Result<Vec<_>, _>>()?;
        Ok(plan.finish(items))
    }
}

impl SqliteUnitOfWork {
    /// Whether `thread_id` is a live thread of the owner.
    async fn thread_is_live(&mut self, thread_id: &ThreadId) -> Result<bool, PortError> {
        let q =
            sqlx::query("SELECT 1 FROM threads WHERE id = ? AND owner = ? AND deleted_at IS NULL")
                .bind(thread_id.as_str())
                .bind(self.owner.as_str());
        Ok(self.tx.fetch_optional(q).await?.is_some())
    }
}

#[async_trait]
impl MessageRepository for SqliteUnitOfWork {
    #[tracing::instrument(level = "debug", skip_all, fields(count = messages.len()))]
    async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError> {
        let Some(first) = messages.first() else {
            return Ok(());
        };
        let thread_id = &first.thread_id;
        if messages.iter().any(|m| &m.thread_id != thread_id) {
            return Err(PortError::unexpected(Misuse::MixedThreads));
        }
        // One statement for all rows, guarded by the thread's liveness for
        // this owner: either every message is stored or (thread not live)
        // none is, and the caller learns NotFound.
        let mut rows = Vec::with_capacity(messages.len());
        for m in messages {
            rows.push((
                m,
                m.content.to_stored_json(),
                value_json(m.attachments.as_value()),
                metadata_json(&m.metadata),
            ));
        }
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO messages (id, thread_id, owner, created_at, role, content, attachments, metadata) \
             SELECT column1, column2, column3, column4, column5, column6, column7, column8 FROM (",
        );
        qb.push_values(&rows, |mut b, (m, content, attachments, metadata)| {
            b.push_bind(m.id.as_str())
                .push_bind(thread_id.as_str())
                .push_bind(self.owner.as_str())
                .push_bind(m.created_at.unix_seconds())
                .push_bind(m.role.as_str())
                .push_bind(content.as_str())
                .push_bind(attachments.as_str())
                .push_bind(metadata.as_str());
        });
        qb.push(") WHERE EXISTS (SELECT 1 FROM threads WHERE id = ")
            .push_bind(thread_id.as_str())
            .push(" AND owner = ")
            .push_bind(self.owner.as_str())
            .push(" AND deleted_at IS NULL)");
        let affected = self.tx.execute(qb.build()).await?.rows_affected();
        match affected {
            0 => Err(PortError::NotFound),
            n if n == rows.len() as u64 => Ok(()),
            n => Err(PortError::unexpected(format!(
                "inserted {n} of {} messages in one statement",
                rows.len()
            ))),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread_id, message_id = %id))]
    async fn get_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE id = ? AND thread_id = ? AND owner = ? AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.id = messages.thread_id AND t.deleted_at IS NULL)"
        );
        let q = sqlx::query(&sql)
            .bind(id.as_str())
            .bind(thread_id.as_str())
            .bind(self.owner.as_str());
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
        // As lock_thread: BEGIN IMMEDIATE already holds the write lock, so a
        // plain read is a locking read.
        self.get_message(thread_id, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %message.thread_id, message_id = %message.id))]
    async fn update_message(&mut self, message: &Message) -> Result<(), PortError> {
        let q = sqlx::query(
            "UPDATE messages SET metadata = ? \
             WHERE id = ? AND thread_id = ? AND owner = ? AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.id = messages.thread_id AND t.deleted_at IS NULL)",
        )
        .bind(metadata_json(&message.metadata))
        .bind(message.id.as_str())
        .bind(message.thread_id.as_str())
        .bind(self.owner.as_str());
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
            "UPDATE messages SET deleted_at = ? \
             WHERE id = ? AND thread_id = ? AND owner = ? AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM threads t WHERE t.id = messages.thread_id AND t.deleted_at IS NULL)",
        )
        .bind(at.unix_seconds())
        .bind(id.as_str())
        .bind(thread_id.as_str())
        .bind(self.owner.as_str());
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
        let plan = params.plan();
        let cursor = cursor_id(params);
        // One round trip for both checks: the thread is live for the owner,
        // and the cursor (if any) is a message of this thread, deleted or not.
        let q = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM threads WHERE id = ?1 AND owner = ?2 AND deleted_at IS NULL), \
                    ?3 IS NULL OR EXISTS (SELECT 1 FROM messages WHERE id = ?3 AND thread_id = ?1 AND owner = ?2)",
        )
        .bind(thread_id.as_str())
        .bind(self.owner.as_str())
        .bind(cursor.map(MessageId::as_str));
        let checks = self
            .tx
            .fetch_optional(q)
            .await?
            .ok_or_else(|| PortError::unexpected("a SELECT without FROM returned no row"))?;
        let thread_live: bool = checks.try_get(0).map_err(PortError::unexpected)?;
        let cursor_ok: bool = checks.try_get(1).map_err(PortError::unexpected)?;
        if !thread_live {
            return Err(PortError::NotFound);
        }
        if !cursor_ok {
            return Err(PortError::InvalidCursor);
        }
        let (bound, dir) = plan_sql(&plan);
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = ? AND owner = ? AND deleted_at IS NULL{bound} ORDER BY id {dir} LIMIT ?"
        );
        let mut q = sqlx::query(&sql)
            .bind(thread_id.as_str())
            .bind(self.owner.as_str());
        if let (Some(c), Some(_)) = (cursor, plan.bound) {
            q = q.bind(c.as_str());
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
             WHERE thread_id = ? AND owner = ? AND role = 'user' AND deleted_at IS NULL ORDER BY id ASC LIMIT 1"
        );
        let q = sqlx::query(&sql)
            .bind(thread_id.as_str())
            .bind(self.owner.as_str());
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
            "SELECT key, fingerprint, status, body, created_at FROM idempotency \
             WHERE owner = ? AND key = ? AND created_at >= ?",
        )
        .bind(self.owner.as_str())
        .bind(key.as_str())
        .bind(not_before.unix_seconds());
        match self.tx.fetch_optional(q).await? {
            Some(r) => IdempotencyRow::from_row(&r)
                .map_err(map_sqlx)?
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
            "INSERT INTO idempotency (owner, key, fingerprint, status, body, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (owner, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status, \
             body = excluded.body, created_at = excluded.created_at \
             WHERE idempotency.created_at < ?7",
        )
        .bind(self.owner.as_str())
        .bind(record.key.as_str())
        .bind(record.fingerprint.as_str())
        .bind(i64::from(record.response.status))
        .bind(record.response.body.as_str())
        .bind(record.created_at.unix_seconds())
        .bind(not_before.unix_seconds());
        match self.tx.execute(q).await?.rows_affected() {
            0 => Err(PortError::Duplicate),
            _ => Ok(()),
        }
    }
}

fn thread_of(row: &SqliteRow) -> Result<Thread, PortError> {
    ThreadRow::from_row(row).map_err(map_sqlx)?.into_domain()
}

fn message_of(row: &SqliteRow) -> Result<Message, PortError> {
    MessageRow::from_row(row).map_err(map_sqlx)?.into_domain()
}
