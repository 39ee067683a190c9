-- Owner-leading keys, live-row indexes, id sequences.
--
-- Why:
-- * Every request touches one owner's rows, so every key starts with
--   `owner`: lists walk (owner, id) ranges directly instead of an id-only
--   index shared by every user (whose backward walk through every newer
--   thread of every user took 167–181 ms for one user's first page among
--   1.1 M threads), and the schema can be distributed by `owner` on Citus, whose primary keys and
--   foreign keys must include the distribution column. The foreign key
--   messages → threads now includes the owner, so a message can never
--   belong to another user's thread.
-- * Lists read live rows only: partial indexes over `deleted_at IS NULL`
--   keep deleted rows out of every range a list scans. Cursor checks use
--   the primary keys, which still find deleted rows (a deleted object
--   stays a valid cursor).
-- * Ids become visible in id order (ports rule 8): `owners.newest_thread_id`
--   is the per-owner thread sequence a thread create locks, and
--   `threads.newest_message_id` the per-thread one a message append checks.
-- * Idempotency records keep the body only (every recorded response is a
--   success); an index on `created_at` serves their expiry.
--
-- Existing databases upgrade in place with nothing lost: the sequences are
-- filled from the existing ids.

CREATE TABLE owners (
    owner            text NOT NULL,
    newest_thread_id text COLLATE "C" NOT NULL,
    CONSTRAINT owners_pkey PRIMARY KEY (owner)
);
INSERT INTO owners (owner, newest_thread_id)
SELECT owner, max(id) FROM threads GROUP BY owner;

ALTER TABLE threads ADD COLUMN newest_message_id text COLLATE "C" NOT NULL DEFAULT '';
UPDATE threads t SET newest_message_id = m.newest
  FROM (SELECT thread_id, max(id) AS newest FROM messages GROUP BY thread_id) m
 WHERE m.thread_id = t.id;

ALTER TABLE messages DROP CONSTRAINT messages_thread_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
DROP INDEX messages_thread_id;
ALTER TABLE threads DROP CONSTRAINT threads_pkey;
DROP INDEX threads_owner_id;

ALTER TABLE threads ADD CONSTRAINT threads_pkey PRIMARY KEY (owner, id);
ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (owner, thread_id, id);
ALTER TABLE messages ADD CONSTRAINT messages_thread_fkey
    FOREIGN KEY (owner, thread_id) REFERENCES threads (owner, id);

CREATE INDEX threads_live ON threads (owner, id) WHERE deleted_at IS NULL;
CREATE INDEX messages_live ON messages (owner, thread_id, id) WHERE deleted_at IS NULL;

-- Data lifecycle: archived rows by age (purge), records by age (expiry).
CREATE INDEX threads_archived ON threads (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX messages_archived ON messages (deleted_at) WHERE deleted_at IS NOT NULL;
ALTER TABLE idempotency DROP COLUMN status;
CREATE INDEX idempotency_created_at ON idempotency (created_at);
