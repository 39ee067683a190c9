-- Weft's schema on PostgreSQL.
--
-- Conventions:
-- * Ids are text `<prefix><32 hex digits of a UUIDv7>` and sort in creation
--   order; they use the "C" collation so comparisons and ORDER BY are plain
--   byte order whatever the database's default collation, which is what
--   cursor paging (`id > $cursor ORDER BY id`) relies on.
-- * Times are whole Unix seconds (bigint), as the API shows them.
-- * Nothing is physically deleted by the API: `deleted_at` marks archived
--   threads and messages; every read filters `deleted_at IS NULL`. Deleted
--   rows stay valid list cursors.
-- * `owner` is the request context's user id; every query filters on it.
-- * `message_count` is changed only by one conditional UPDATE per message
--   create/delete (touch_thread), in the same transaction.

CREATE TABLE threads (
    id             text COLLATE "C" PRIMARY KEY,
    owner          text   NOT NULL,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL,
    metadata       jsonb  NOT NULL,
    tool_resources jsonb  NOT NULL,
    title          text   NULL,
    message_count  bigint NOT NULL DEFAULT 0 CONSTRAINT threads_message_count_non_negative CHECK (message_count >= 0),
    deleted_at     bigint NULL
);

-- Owner-scoped lists by id (both directions), and the cursor check (which
-- must also find the owner's deleted threads).
CREATE INDEX threads_owner_id ON threads (owner, id);

CREATE TABLE messages (
    id          text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL REFERENCES threads (id),
    owner       text   NOT NULL,
    created_at  bigint NOT NULL,
    role        text   NOT NULL CONSTRAINT messages_role_known CHECK (role IN ('user', 'assistant')),
    content     jsonb  NOT NULL,
    attachments jsonb  NOT NULL,
    metadata    jsonb  NOT NULL,
    deleted_at  bigint NULL
);

-- A thread's messages by id: lists, cursor checks, archiving a thread.
CREATE INDEX messages_thread_id ON messages (thread_id, id);

CREATE TABLE idempotency (
    owner       text    NOT NULL,
    key         text    NOT NULL,
    fingerprint text    NOT NULL,
    status      integer NOT NULL,
    body        text    NOT NULL,
    created_at  bigint  NOT NULL,
    -- One record per owner and key: a concurrent claim waits on this index.
    CONSTRAINT idempotency_owner_key PRIMARY KEY (owner, key)
);
