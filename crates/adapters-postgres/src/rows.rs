//! The column lists every query selects, under the names of
//! [`weft_adapters_sqlx::rows`]' row types (which re-parse them into domain
//! values): `jsonb` columns are read as text, so one parser serves every
//! adapter.

/// The thread columns, for a query over `threads t`.
pub(crate) const THREAD_COLUMNS: &str =
    "t.id, t.created_at, t.updated_at, t.metadata::text AS metadata, \
     t.tool_resources::text AS tool_resources, t.title, t.message_count";

/// The message columns, for a query over `messages m`.
pub(crate) const MESSAGE_COLUMNS: &str =
    "m.id, m.thread_id, m.created_at, m.role, m.content::text AS content, \
     m.attachments::text AS attachments, m.metadata::text AS metadata";
