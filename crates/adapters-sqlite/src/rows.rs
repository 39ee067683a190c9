//! Private row types and their re-parsing into domain values.
//!
//! Every column goes back through the domain's own parser, so a row that
//! breaks a domain rule (hand-edited file, a bug in a write path) surfaces as
//! [`PortError::Unexpected`] naming the column, never as an invalid value.

use std::collections::BTreeMap;

use weft_domain::{
    Attachments, Content, IdempotencyKey, Message, MessageId, Metadata, RequestFingerprint, Role,
    StoredResponse, Thread, ThreadId, Timestamp, Title, ToolResources,
};
use weft_ports::{IdempotencyRecord, PortError};

use crate::error::Corrupt;

/// The thread columns every thread query selects, in [`ThreadRow`] order.
pub(crate) const THREAD_COLUMNS: &str =
    "id, created_at, updated_at, metadata, tool_resources, title, message_count";

/// The message columns every message query selects, in [`MessageRow`] order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, thread_id, created_at, role, content, attachments, metadata";

#[derive(sqlx::FromRow)]
pub(crate) struct ThreadRow {
    id: String,
    created_at: i64,
    updated_at: i64,
    metadata: String,
    tool_resources: String,
    title: Option<String>,
    message_count: i64,
}

impl ThreadRow {
    pub(crate) fn into_domain(self) -> Result<Thread, PortError> {
        Ok(Thread {
            id: ThreadId::parse(&self.id).map_err(|e| Corrupt::error("threads.id", e))?,
            created_at: Timestamp::from_unix_seconds(self.created_at),
            updated_at: Timestamp::from_unix_seconds(self.updated_at),
            metadata: parse_metadata("threads.metadata", &self.metadata)?,
            tool_resources: serde_json::from_str(&self.tool_resources)
                .map_err(|e| Corrupt::error("threads.tool_resources", e))
                .and_then(|v| {
                    ToolResources::parse(v).map_err(|e| Corrupt::error("threads.tool_resources", e))
                })?,
            title: self
                .title
                .as_deref()
                .map(Title::parse)
                .transpose()
                .map_err(|e| Corrupt::error("threads.title", e))?,
            message_count: u64::try_from(self.message_count)
                .map_err(|e| Corrupt::error("threads.message_count", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: String,
    thread_id: String,
    created_at: i64,
    role: String,
    content: String,
    attachments: String,
    metadata: String,
}

impl MessageRow {
    pub(crate) fn into_domain(self) -> Result<Message, PortError> {
        Ok(Message {
            id: MessageId::parse(&self.id).map_err(|e| Corrupt::error("messages.id", e))?,
            thread_id: ThreadId::parse(&self.thread_id)
                .map_err(|e| Corrupt::error("messages.thread_id", e))?,
            created_at: Timestamp::from_unix_seconds(self.created_at),
            role: Role::parse(&self.role).map_err(|e| Corrupt::error("messages.role", e))?,
            content: Content::from_stored_json(&self.content)
                .map_err(|e| Corrupt::error("messages.content", e))?,
            attachments: serde_json::from_str(&self.attachments)
                .map_err(|e| Corrupt::error("messages.attachments", e))
                .and_then(|v| {
                    Attachments::parse(v).map_err(|e| Corrupt::error("messages.attachments", e))
                })?,
            metadata: parse_metadata("messages.metadata", &self.metadata)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    key: String,
    fingerprint: String,
    status: i64,
    body: String,
    created_at: i64,
}

impl IdempotencyRow {
    pub(crate) fn into_domain(self) -> Result<IdempotencyRecord, PortError> {
        Ok(IdempotencyRecord {
            key: IdempotencyKey::parse(&self.key)
                .map_err(|e| Corrupt::error("idempotency.key", e))?,
            fingerprint: RequestFingerprint::from_stored(&self.fingerprint),
            response: StoredResponse {
                status: u16::try_from(self.status)
                    .map_err(|e| Corrupt::error("idempotency.status", e))?,
                body: self.body,
            },
            created_at: Timestamp::from_unix_seconds(self.created_at),
        })
    }
}

fn parse_metadata(what: &'static str, json: &str) -> Result<Metadata, PortError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| Corrupt::error(what, e))?;
    Metadata::parse(map).map_err(|e| Corrupt::error(what, e))
}

/// JSON text of a validated metadata map.
pub(crate) fn metadata_json(m: &Metadata) -> Result<String, PortError> {
    serde_json::to_string(m.as_map()).map_err(PortError::unexpected)
}

/// JSON text of any validated JSON value.
pub(crate) fn value_json(v: &serde_json::Value) -> Result<String, PortError> {
    serde_json::to_string(v).map_err(PortError::unexpected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_row() -> ThreadRow {
        ThreadRow {
            id: "thread_0193f1a2b3c4d5e6f708192a3b4c5d6e".into(),
            created_at: 1,
            updated_at: 2,
            metadata: r#"{"a":"b"}"#.into(),
            tool_resources: "{}".into(),
            title: None,
            message_count: 0,
        }
    }

    #[test]
    fn a_valid_row_re_parses() {
        let t = thread_row().into_domain().unwrap();
        assert_eq!(t.metadata.as_map().get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn corrupt_columns_are_unexpected_errors_naming_the_column() {
        let cases: Vec<(&str, ThreadRow)> = vec![
            (
                "threads.id",
                ThreadRow {
                    id: "nope".into(),
                    ..thread_row()
                },
            ),
            (
                "threads.metadata",
                ThreadRow {
                    metadata: "[1]".into(),
                    ..thread_row()
                },
            ),
            (
                "threads.tool_resources",
                ThreadRow {
                    tool_resources: "[]".into(),
                    ..thread_row()
                },
            ),
            (
                "threads.message_count",
                ThreadRow {
                    message_count: -1,
                    ..thread_row()
                },
            ),
        ];
        for (column, row) in cases {
            match row.into_domain() {
                Err(PortError::Unexpected(e)) => {
                    assert!(e.to_string().contains(column), "{column}: {e}")
                }
                other => panic!("{column}: expected Unexpected, got {other:?}"),
            }
        }
    }
}
