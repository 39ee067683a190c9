//! Rows back into domain values, for every sqlx adapter.
//!
//! Each adapter selects the columns below under these exact names (casting
//! where its storage differs, e.g. PostgreSQL's `jsonb` as `text`); the
//! row types derive [`sqlx::FromRow`] generically, so one parser serves
//! every database. Every column goes back through the domain's own
//! constructors: a row that breaks a domain rule (a hand-edited database, a
//! write path that bypassed the domain) is reported as data corruption
//! ([`Corrupt`], a [`PortError::Unexpected`] naming the column), never
//! served.

use std::collections::BTreeMap;

use weft_domain::{
    Attachments, Content, IdempotencyKey, Message, MessageId, Metadata, RequestFingerprint, Role,
    StoredResponse, Thread, ThreadId, Timestamp, Title, ToolResources,
};
use weft_ports::{IdempotencyRecord, PortError};

/// Stored data that does not re-parse into the domain: data corruption.
/// Reported as [`PortError::Unexpected`], so the client gets a bare 500
/// and the log names the column.
#[derive(Debug, thiserror::Error)]
#[error("data corruption: stored {what} does not parse: {detail}")]
pub struct Corrupt {
    /// The table and column, e.g. `threads.metadata`.
    pub what: &'static str,
    /// Why the domain refused it.
    pub detail: String,
}

impl Corrupt {
    /// A corruption report for `what` as a port error.
    pub fn error(what: &'static str, detail: impl std::fmt::Display) -> PortError {
        PortError::unexpected(Self {
            what,
            detail: detail.to_string(),
        })
    }
}

/// A thread as stored: the columns every thread query selects, under these
/// names (see [`ThreadRow::into_domain`]).
#[derive(Debug, sqlx::FromRow)]
pub struct ThreadRow {
    /// `threads.id`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// JSON object text of string values.
    pub metadata: String,
    /// JSON object text.
    pub tool_resources: String,
    /// The title, if set.
    pub title: Option<String>,
    /// Live messages of the thread.
    pub message_count: i64,
}

impl ThreadRow {
    /// Re-parses the row into a domain thread.
    ///
    /// # Errors
    /// [`Corrupt`] (as `Unexpected`) naming the first column that breaks a rule.
    pub fn into_domain(self) -> Result<Thread, PortError> {
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

/// A message as stored: the columns every message query selects.
#[derive(Debug, sqlx::FromRow)]
pub struct MessageRow {
    /// `messages.id`.
    pub id: String,
    /// The thread it belongs to.
    pub thread_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// The stored content parts, JSON text.
    pub content: String,
    /// JSON array text.
    pub attachments: String,
    /// JSON object text of string values.
    pub metadata: String,
}

impl MessageRow {
    /// Re-parses the row into a domain message.
    ///
    /// # Errors
    /// [`Corrupt`] (as `Unexpected`) naming the first column that breaks a rule.
    pub fn into_domain(self) -> Result<Message, PortError> {
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

/// An idempotency record as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct IdempotencyRow {
    /// The client's key.
    pub key: String,
    /// Hex digest of the request.
    pub fingerprint: String,
    /// The response body recorded.
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl IdempotencyRow {
    /// Re-parses the row into a port record.
    ///
    /// # Errors
    /// [`Corrupt`] (as `Unexpected`) naming the first column that breaks a rule.
    pub fn into_domain(self) -> Result<IdempotencyRecord, PortError> {
        Ok(IdempotencyRecord {
            key: IdempotencyKey::parse(&self.key)
                .map_err(|e| Corrupt::error("idempotency.key", e))?,
            fingerprint: RequestFingerprint::from_stored(&self.fingerprint),
            response: StoredResponse { body: self.body },
            created_at: Timestamp::from_unix_seconds(self.created_at),
        })
    }
}

fn parse_metadata(what: &'static str, json: &str) -> Result<Metadata, PortError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| Corrupt::error(what, e))?;
    Metadata::parse(map).map_err(|e| Corrupt::error(what, e))
}

/// Metadata as the JSON object text every adapter stores.
pub fn metadata_json(m: &Metadata) -> String {
    serde_json::Value::Object(
        m.as_map()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
    .to_string()
}

/// A validated JSON value (tool resources, attachments) as stored text.
pub fn value_json(v: &serde_json::Value) -> String {
    v.to_string()
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
