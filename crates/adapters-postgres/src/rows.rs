//! Rows back into domain types. Every column is re-parsed through the
//! domain's own constructors, so a row that breaks a domain rule is
//! reported as data corruption instead of being served.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use weft_domain::{
    Attachments, Content, IdempotencyKey, Message, MessageId, Metadata, RequestFingerprint, Role,
    StoredResponse, Thread, ThreadId, Timestamp, Title, ToolResources,
};
use weft_ports::{IdempotencyRecord, PortError};

use crate::error::{corrupt, port_error};

/// The thread columns every thread query selects, in this order of names.
pub(crate) const THREAD_COLUMNS: &str =
    "t.id, t.created_at, t.updated_at, t.metadata::text AS metadata, \
     t.tool_resources::text AS tool_resources, t.title, t.message_count";

/// The message columns every message query selects.
pub(crate) const MESSAGE_COLUMNS: &str =
    "m.id, m.thread_id, m.created_at, m.role, m.content::text AS content, \
     m.attachments::text AS attachments, m.metadata::text AS metadata";

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    col: &str,
) -> Result<T, PortError> {
    row.try_get(col).map_err(port_error)
}

fn metadata(json: &str) -> Result<Metadata, PortError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| corrupt("metadata", e))?;
    Metadata::parse(map).map_err(|e| corrupt("metadata", e))
}

/// A thread row (selected with [`THREAD_COLUMNS`]) as a domain thread.
pub(crate) fn thread(row: &PgRow) -> Result<Thread, PortError> {
    let id: String = get(row, "id")?;
    let tool_resources: String = get(row, "tool_resources")?;
    let tool_resources =
        serde_json::from_str(&tool_resources).map_err(|e| corrupt("tool_resources", e))?;
    let title: Option<String> = get(row, "title")?;
    let count: i64 = get(row, "message_count")?;
    Ok(Thread {
        id: ThreadId::parse(&id).map_err(|e| corrupt("thread id", e))?,
        created_at: Timestamp::from_unix_seconds(get(row, "created_at")?),
        updated_at: Timestamp::from_unix_seconds(get(row, "updated_at")?),
        metadata: metadata(&get::<String>(row, "metadata")?)?,
        tool_resources: ToolResources::parse(tool_resources)
            .map_err(|e| corrupt("tool_resources", e))?,
        title: title
            .map(|t| Title::parse(&t))
            .transpose()
            .map_err(|e| corrupt("title", e))?,
        message_count: u64::try_from(count).map_err(|e| corrupt("message_count", e))?,
    })
}

/// A message row (selected with [`MESSAGE_COLUMNS`]) as a domain message.
pub(crate) fn message(row: &PgRow) -> Result<Message, PortError> {
    let id: String = get(row, "id")?;
    let thread_id: String = get(row, "thread_id")?;
    let role: String = get(row, "role")?;
    let content: String = get(row, "content")?;
    let attachments: String = get(row, "attachments")?;
    let attachments = serde_json::from_str(&attachments).map_err(|e| corrupt("attachments", e))?;
    Ok(Message {
        id: MessageId::parse(&id).map_err(|e| corrupt("message id", e))?,
        thread_id: ThreadId::parse(&thread_id).map_err(|e| corrupt("thread id", e))?,
        created_at: Timestamp::from_unix_seconds(get(row, "created_at")?),
        role: Role::parse(&role).map_err(|e| corrupt("role", e))?,
        content: Content::from_stored_json(&content).map_err(|e| corrupt("content", e))?,
        attachments: Attachments::parse(attachments).map_err(|e| corrupt("attachments", e))?,
        metadata: metadata(&get::<String>(row, "metadata")?)?,
    })
}

/// An idempotency row (`fingerprint, status, body, created_at`) for `key`.
pub(crate) fn idempotency(
    key: &IdempotencyKey,
    row: &PgRow,
) -> Result<IdempotencyRecord, PortError> {
    let status: i32 = get(row, "status")?;
    Ok(IdempotencyRecord {
        key: key.clone(),
        fingerprint: RequestFingerprint::from_stored(&get::<String>(row, "fingerprint")?),
        response: StoredResponse {
            status: u16::try_from(status).map_err(|e| corrupt("idempotency status", e))?,
            body: get(row, "body")?,
        },
        created_at: Timestamp::from_unix_seconds(get(row, "created_at")?),
    })
}

/// Metadata as stored JSON text.
pub(crate) fn metadata_json(m: &Metadata) -> String {
    serde_json::Value::Object(
        m.as_map()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
    .to_string()
}
