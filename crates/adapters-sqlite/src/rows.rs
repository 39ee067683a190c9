//! The column lists every query selects, under the names of
//! [`weft_adapters_sqlx::rows`]' row types, which re-parse them into domain
//! values (JSON columns are stored as TEXT here, so no casts are needed).

/// The thread columns every thread query selects.
pub(crate) const THREAD_COLUMNS: &str =
    "id, created_at, updated_at, metadata, tool_resources, title, message_count";

/// The message columns every message query selects.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, thread_id, created_at, role, content, attachments, metadata";
