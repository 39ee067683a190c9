-- Owner-leading keys, live-row indexes, id sequences: the same change as
-- PostgreSQL's 0002 (see its comments for why). SQLite cannot change a
-- primary key in place, so threads, messages and idempotency are rebuilt
-- (create, copy, drop, rename), keeping every row.

CREATE TABLE owners (
    owner            TEXT NOT NULL PRIMARY KEY,
    -- The owner's thread sequence: a thread create locks this row (the
    -- writer lock does it here) and mints an id above it.
    newest_thread_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO owners (owner, newest_thread_id)
SELECT owner, max(id) FROM threads GROUP BY owner;

CREATE TABLE threads_new (
    owner             TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    metadata          TEXT    NOT NULL,
    tool_resources    TEXT    NOT NULL,
    title             TEXT,
    message_count     INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    -- The thread's message sequence: appends need an id above it.
    newest_message_id TEXT    NOT NULL DEFAULT '',
    deleted_at        INTEGER,
    PRIMARY KEY (owner, id)
) STRICT;
INSERT INTO threads_new (owner, id, created_at, updated_at, metadata, tool_resources, title,
                         message_count, newest_message_id, deleted_at)
SELECT t.owner, t.id, t.created_at, t.updated_at, t.metadata, t.tool_resources, t.title,
       t.message_count,
       coalesce((SELECT max(m.id) FROM messages m WHERE m.thread_id = t.id), ''),
       t.deleted_at
FROM threads t;

CREATE TABLE messages_new (
    owner       TEXT    NOT NULL,
    thread_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT    NOT NULL,
    attachments TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (owner, thread_id, id),
    FOREIGN KEY (owner, thread_id) REFERENCES threads_new (owner, id)
) STRICT;
INSERT INTO messages_new (owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at)
SELECT owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at FROM messages;

CREATE TABLE idempotency_new (
    owner       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;
INSERT INTO idempotency_new (owner, key, fingerprint, body, created_at)
SELECT owner, key, fingerprint, body, created_at FROM idempotency;

DROP TABLE messages;
DROP TABLE threads;
DROP TABLE idempotency;
-- Renaming also rewrites messages_new's foreign key to name `threads`.
ALTER TABLE threads_new RENAME TO threads;
ALTER TABLE messages_new RENAME TO messages;
ALTER TABLE idempotency_new RENAME TO idempotency;

CREATE INDEX threads_live ON threads (owner, id) WHERE deleted_at IS NULL;
CREATE INDEX messages_live ON messages (owner, thread_id, id) WHERE deleted_at IS NULL;
CREATE INDEX threads_archived ON threads (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX messages_archived ON messages (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX idempotency_created_at ON idempotency (created_at);
