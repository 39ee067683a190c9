//! The repositories on an open [`PgUnitOfWork`]: every query of the
//! adapter. Each filters on the unit of work's owner (taken from the
//! request context at `begin`), so a foreign object behaves exactly like a
//! missing one; lists execute the domain's [`PagePlan`].

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use weft_adapters_sqlx::paging::cursor_id;
use weft_adapters_sqlx::rows::{metadata_json, IdempotencyRow, MessageRow, ThreadRow};
use weft_domain::list::{Bound, PagePlan};
use weft_domain::Order;
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Page, Thread, ThreadId, Timestamp,
};
use weft_ports::{
    IdempotencyRecord, IdempotencyRepository, MessageRepository, PortError, ThreadRepository,
};

use crate::error::port_error;
use crate::rows::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use crate::uow::PgUnitOfWork;

/// Parses the single-row `ok` flags of a folded list query.
fn flag(row: Option<&PgRow>, col: &str) -> Result<bool, PortError> {
    match row {
        Some(r) => r.try_get::<bool, _>(col).map_err(port_error),
        None => Err(PortError::unexpected("list query returned no flag row")),
    }
}

fn scan(plan: &PagePlan) -> &'static str {
    match plan.scan {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    }
}

fn op(plan: &PagePlan) -> &'static str {
    match plan.bound {
        Some(Bound::Less) => "<",
        Some(Bound::Greater) | None => ">",
    }
}

fn fetch_limit(plan: &PagePlan) -> i64 {
    i64::from(plan.fetch)
}

#[async_trait]
impl ThreadRepository for PgUnitOfWork {
    async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = self.query(
            "INSERT INTO threads (id, owner, created_at, updated_at, metadata, tool_resources, title, message_count) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)",
        )
        .bind(thread.id.as_str())
        .bind(self.owner.clone())
        .bind(thread.created_at.unix_seconds())
        .bind(thread.updated_at.unix_seconds())
        .bind(metadata_json(&thread.metadata))
        .bind(thread.tool_resources.as_value().to_string())
        .bind(thread.title.as_ref().map(|t| t.as_str().to_owned()))
        .bind(i64::try_from(thread.message_count).map_err(PortError::unexpected)?);
        self.exec(q).await.map(|_| ())
    }

    async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        let sql = format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.id = $1 AND t.owner = $2 AND t.deleted_at IS NULL");
        let q = self.query(&sql).bind(id.as_str()).bind(self.owner.clone());
        match self.row(q).await? {
            Some(r) => thread_of(&r),
            None => Err(PortError::NotFound),
        }
    }

    async fn lock_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError> {
        // NO KEY UPDATE: the lock an UPDATE of the row takes, so it queues
        // behind (and blocks) touch_thread/update_thread, but not the
        // foreign-key checks of message inserts.
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads t WHERE t.id = $1 AND t.owner = $2 AND t.deleted_at IS NULL \
             FOR NO KEY UPDATE"
        );
        let q = self.query(&sql).bind(id.as_str()).bind(self.owner.clone());
        match self.row(q).await? {
            Some(r) => thread_of(&r),
            None => Err(PortError::NotFound),
        }
    }

    async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError> {
        let q = self.query(
            "UPDATE threads SET metadata = $3::jsonb, tool_resources = $4::jsonb, title = $5, updated_at = $6 \
             WHERE id = $1 AND owner = $2 AND deleted_at IS NULL",
        )
        .bind(thread.id.as_str())
        .bind(self.owner.clone())
        .bind(metadata_json(&thread.metadata))
        .bind(thread.tool_resources.as_value().to_string())
        .bind(thread.title.as_ref().map(|t| t.as_str().to_owned()))
        .bind(thread.updated_at.unix_seconds());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
    }

    async fn touch_thread(
        &mut self,
        id: &ThreadId,
        delta: i64,
        at: Timestamp,
    ) -> Result<(), PortError> {
        // One statement: the ownership check, the row lock and the count
        // change happen atomically, so concurrent writers queue on the row
        // and no count is lost (no read-modify-write in Rust). A count that
        // would go negative means there is no live message to remove (the
        // count is exact): NotFound, like the archive that would follow,
        // instead of tripping the CHECK constraint as an unexpected error.
        let q = self.query(
            "UPDATE threads SET message_count = message_count + $3, updated_at = GREATEST(updated_at, $4) \
             WHERE id = $1 AND owner = $2 AND deleted_at IS NULL AND message_count + $3 >= 0 RETURNING id",
        )
        .bind(id.as_str())
        .bind(self.owner.clone())
        .bind(delta)
        .bind(at.unix_seconds());
        match self.row(q).await? {
            Some(_) => Ok(()),
            None => Err(PortError::NotFound),
        }
    }

    async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError> {
        // Two statements on purpose: the first locks the thread (waiting for
        // any writer holding it); the second then runs with a fresh
        // snapshot, so it also archives a message whose writer committed
        // while we waited. One statement with a CTE would miss it.
        let q = self.query(
            "UPDATE threads SET deleted_at = $3 WHERE id = $1 AND owner = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(id.as_str())
        .bind(self.owner.clone())
        .bind(at.unix_seconds());
        if self.row(q).await?.is_none() {
            return Err(PortError::NotFound);
        }
        let q = self.query(
            "UPDATE messages SET deleted_at = $3 WHERE thread_id = $1 AND owner = $2 AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(self.owner.clone())
        .bind(at.unix_seconds());
        self.exec(q).await.map(|_| ())
    }

    async fn list_threads(
        &mut self,
        params: &ListParams<ThreadId>,
    ) -> Result<Page<Thread>, PortError> {
        let plan = params.plan();
        let rows = match cursor_id(params) {
            None => {
                let sql = format!(
                    "SELECT {THREAD_COLUMNS} FROM threads t WHERE t.owner = $1 AND t.deleted_at IS NULL \
                     ORDER BY t.id {dir} LIMIT $2",
                    dir = scan(&plan)
                );
                let q = self
                    .query(&sql)
                    .bind(self.owner.clone())
                    .bind(fetch_limit(&plan));
                self.rows(q).await?
            }
            Some(cursor) => {
                // The cursor check and the page in one round trip: the flag
                // row survives (with NULL columns) even when the page is empty.
                let sql = format!(
                    "SELECT c.ok, {THREAD_COLUMNS} \
                     FROM (SELECT EXISTS (SELECT 1 FROM threads WHERE id = $2 AND owner = $1) AS ok) c \
                     LEFT JOIN LATERAL (SELECT * FROM threads t WHERE t.owner = $1 AND t.deleted_at IS NULL \
                        AND t.id {op} $2 ORDER BY t.id {dir} LIMIT $3) t ON c.ok \
                     ORDER BY t.id {dir}",
                    op = op(&plan),
                    dir = scan(&plan)
                );
                let q = self
                    .query(&sql)
                    .bind(self.owner.clone())
                    .bind(cursor.as_str())
                    .bind(fetch_limit(&plan));
                let rows = self.rows(q).await?;
                if !flag(rows.first(), "ok")? {
                    return Err(PortError::InvalidCursor);
                }
                rows
            }
        };
        Ok(plan.finish(page_items(&rows, thread_of)?))
    }
}

#[async_trait]
impl MessageRepository for PgUnitOfWork {
    async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError> {
        let Some(first) = messages.first() else {
            return Ok(());
        };
        let thread_id = &first.thread_id;
        if messages.iter().any(|m| &m.thread_id != thread_id) {
            return Err(PortError::unexpected(
                "insert_messages: messages of more than one thread",
            ));
        }
        // One statement for all messages; the EXISTS folds the ownership
        // and liveness check of the thread into it.
        let q = self.query(
            "INSERT INTO messages (id, thread_id, owner, created_at, role, content, attachments, metadata) \
             SELECT u.id, $1, $2, u.created_at, u.role, u.content::jsonb, u.attachments::jsonb, u.metadata::jsonb \
             FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[]) \
                AS u(id, created_at, role, content, attachments, metadata) \
             WHERE EXISTS (SELECT 1 FROM threads WHERE id = $1 AND owner = $2 AND deleted_at IS NULL)",
        )
        .bind(thread_id.as_str())
        .bind(self.owner.clone())
        .bind(messages.iter().map(|m| m.id.as_str().to_owned()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.created_at.unix_seconds()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.role.as_str().to_owned()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.content.to_stored_json()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.attachments.as_value().to_string()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| metadata_json(&m.metadata)).collect::<Vec<_>>());
        match self.exec(q).await?.rows_affected() {
            0 => Err(PortError::NotFound),
            _ => Ok(()),
        }
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
             WHERE m.id = $1 AND m.thread_id = $2 AND m.owner = $3 AND m.deleted_at IS NULL \
               AND t.id = m.thread_id AND t.owner = $3 AND t.deleted_at IS NULL",
            )
            .bind(message.id.as_str())
            .bind(message.thread_id.as_str())
            .bind(self.owner.clone())
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
             WHERE m.id = $1 AND m.thread_id = $2 AND m.owner = $3 AND m.deleted_at IS NULL \
               AND t.id = m.thread_id AND t.owner = $3 AND t.deleted_at IS NULL",
            )
            .bind(id.as_str())
            .bind(thread_id.as_str())
            .bind(self.owner.clone())
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
        // Thread check, cursor check and page in one round trip.
        let (cursor_ok, cursor_cond, limit_param) = match cursor_id(params) {
            None => ("TRUE", String::new(), "$3"),
            Some(_) => (
                "EXISTS (SELECT 1 FROM messages WHERE id = $4 AND thread_id = $2 AND owner = $1)",
                format!("AND m.id {} $4", op(&plan)),
                "$3",
            ),
        };
        let sql = format!(
            "SELECT c.thread_ok, c.cursor_ok, {MESSAGE_COLUMNS} \
             FROM (SELECT EXISTS (SELECT 1 FROM threads WHERE id = $2 AND owner = $1 AND deleted_at IS NULL) \
                AS thread_ok, {cursor_ok} AS cursor_ok) c \
             LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.thread_id = $2 AND m.owner = $1 \
                AND m.deleted_at IS NULL {cursor_cond} ORDER BY m.id {dir} LIMIT {limit_param}) m \
                ON c.thread_ok AND c.cursor_ok \
             ORDER BY m.id {dir}",
            dir = scan(&plan)
        );
        let mut q = self
            .query(&sql)
            .bind(self.owner.clone())
            .bind(thread_id.as_str())
            .bind(fetch_limit(&plan));
        if let Some(c) = cursor_id(params) {
            q = q.bind(c.as_str());
        }
        let rows = self.rows(q).await?;
        if !flag(rows.first(), "thread_ok")? {
            return Err(PortError::NotFound);
        }
        if !flag(rows.first(), "cursor_ok")? {
            return Err(PortError::InvalidCursor);
        }
        Ok(plan.finish(page_items(&rows, message_of)?))
    }

    async fn first_user_message(
        &mut self,
        thread_id: &ThreadId,
    ) -> Result<Option<Message>, PortError> {
        let sql = format!(
            "SELECT c.ok, {MESSAGE_COLUMNS} \
             FROM (SELECT EXISTS (SELECT 1 FROM threads WHERE id = $2 AND owner = $1 AND deleted_at IS NULL) AS ok) c \
             LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.thread_id = $2 AND m.owner = $1 \
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
        match rows.first() {
            Some(r)
                if r.try_get::<Option<String>, _>("id")
                    .ok()
                    .flatten()
                    .is_some() =>
            {
                message_of(r).map(Some)
            }
            _ => Ok(None),
        }
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
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN threads t ON t.id = m.thread_id \
             WHERE m.id = $1 AND m.thread_id = $2 AND m.owner = $3 AND m.deleted_at IS NULL \
               AND t.owner = $3 AND t.deleted_at IS NULL{lock}"
        );
        let q = self
            .query(&sql)
            .bind(id.as_str())
            .bind(thread_id.as_str())
            .bind(self.owner.clone());
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
        let q = self.query(
            "SELECT key, fingerprint, status::int8 AS status, body, created_at FROM idempotency \
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
        let q = self.query(
            "INSERT INTO idempotency (owner, key, fingerprint, status, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, \
                body = EXCLUDED.body, created_at = EXCLUDED.created_at \
             WHERE idempotency.created_at < $7 \
             RETURNING 1 AS claimed",
        )
        .bind(self.owner.clone())
        .bind(record.key.as_str())
        .bind(record.fingerprint.as_str())
        .bind(i32::from(record.response.status))
        .bind(record.response.body.as_str())
        .bind(record.created_at.unix_seconds())
        .bind(not_before.unix_seconds());
        match self.row(q).await? {
            Some(_) => Ok(()),
            None => Err(PortError::Duplicate),
        }
    }
}

/// The objects of a page query's rows. The query always returns at least
/// one row (carrying the cursor/thread check flags), so rows without an
/// `id` are those flag-only rows, not objects.
fn page_items<T>(
    rows: &[PgRow],
    parse: impl Fn(&PgRow) -> Result<T, PortError>,
) -> Result<Vec<T>, PortError> {
    rows.iter()
        .filter(|r| {
            r.try_get::<Option<String>, _>("id")
                .ok()
                .flatten()
                .is_some()
        })
        .map(parse)
        .collect()
}

fn thread_of(row: &PgRow) -> Result<Thread, PortError> {
    ThreadRow::from_row(row).map_err(port_error)?.into_domain()
}

fn message_of(row: &PgRow) -> Result<Message, PortError> {
    MessageRow::from_row(row).map_err(port_error)?.into_domain()
}
