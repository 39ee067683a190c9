-- Weft's SQLite schema, the same semantics as the PostgreSQL one.
--
-- Conventions:
-- - STRICT tables: SQLite refuses a value of the wrong type instead of
--   silently storing it, so a row re-parses or the write fails.
-- - Ids are the API ids (prefix + UUIDv7 hex); they sort bytewise in creation
--   order, so `ORDER BY id` is the list order and cursor paging is stable.
-- - Timestamps are whole Unix seconds (INTEGER).
-- - JSON columns hold JSON text written by the adapter from validated domain
--   values and re-parsed (re-validated) on every read.
-- - Nothing is ever deleted: `deleted_at` archives a row, and every read
--   filters on it; every read also filters on `owner`.

CREATE TABLE threads (
    id             TEXT    NOT NULL PRIMARY KEY,
    owner          TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    metadata       TEXT    NOT NULL,
    tool_resources TEXT    NOT NULL,
    title          TEXT,
    -- Kept exact by touch_thread in the same transaction as each message
    -- create/delete; a negative count would mean a lost update, so refuse it.
    message_count  INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    deleted_at     INTEGER
) STRICT;

-- Owner-scoped thread lists in id order.
CREATE INDEX threads_owner_id ON threads (owner, id);

CREATE TABLE messages (
    id          TEXT    NOT NULL PRIMARY KEY,
    thread_id   TEXT    NOT NULL REFERENCES threads (id),
    -- Denormalised from the thread so every statement can filter on the
    -- owner directly (defence in depth besides the thread join).
    owner       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT    NOT NULL,
    attachments TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    deleted_at  INTEGER
) STRICT;

-- A thread's messages in id order (lists, first user message).
CREATE INDEX messages_thread_id ON messages (thread_id, id);

CREATE TABLE idempotency (
    owner       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    -- One record per key and owner: a second claim is a unique violation,
    -- or replaces an expired record (see insert_idempotency).
    PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;
