//! The data lifecycle (API.md "Data lifecycle", `WEFT_IDEMPOTENCY_RETENTION`):
//! the maintenance operations that are not one request of one owner, so
//! they do not go through a [`crate::UnitOfWork`].
//!
//! # The contract every adapter honours
//!
//! 1. **Bounded batches.** Each call of [`Maintenance`] is one bounded
//!    batch: it changes at most `limit` rows of each kind it names, in
//!    short transactions (one per owner on a sharded database, one in all
//!    on SQLite), and never holds a lock past its own transaction. A
//!    writer to data the batch does not touch is never blocked by it; a
//!    writer waiting for the database's write lock (SQLite) waits for one
//!    batch at most. The caller pauses between batches (`weft-app`).
//! 2. **Owner first.** Every statement that changes rows filters on one
//!    owner (`owner = $1`), so on a database distributed by owner (Citus)
//!    each transaction is single-shard. Cross-user maintenance (expiry,
//!    purge) first *reads* which owners and rows to act on, then acts per
//!    owner. Erase and export touch only the given owner's rows, always.
//! 3. **Never too much.** Expiry deletes only records created before the
//!    given instant (re-checked in the deleting statement, so a key that
//!    was claimed again meanwhile survives); purge deletes only threads
//!    archived before the given instant (with every message of theirs) and
//!    messages archived before it; erase deletes only the given owner's rows.
//! 4. **Sequences never go backwards.** Purge keeps the owner's and the
//!    thread's id sequences (`owners`, `threads.newest_message_id`), so ids
//!    minted later still sort after every id ever handed out. Erase removes
//!    the owner's sequence too, last, and only once nothing else of the
//!    owner is left: every id the owner's clients may still hold then names
//!    nothing (a cursor → 400, a path → 404), and new ids come from the
//!    clock (UUIDv7), so they sort after the erased ones.
//! 5. **One snapshot.** An export reads every page from one consistent
//!    snapshot (PostgreSQL: one `REPEATABLE READ READ ONLY` transaction;
//!    SQLite: one read transaction), in pages of bounded size, so its
//!    memory does not grow with the owner's data.

use async_trait::async_trait;
use weft_domain::{Message, Thread, Timestamp, UserId};

use crate::PortError;

/// What one purge batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Archived threads removed (each with all its messages).
    pub threads: u64,
    /// Messages removed: those of the removed threads, and archived
    /// messages of live threads.
    pub messages: u64,
}

impl Purged {
    /// Rows removed in all.
    pub fn rows(&self) -> u64 {
        self.threads.saturating_add(self.messages)
    }
}

/// What one step of erasing a user did. Exactly one of the counts is
/// non-zero, or `done` is set, or (a write of the user raced the final
/// check) nothing at all and the caller steps again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Live threads archived so that no message can be added to them while
    /// they are being emptied (they are deleted by a later step).
    pub threads_closed: u64,
    /// Threads deleted (each already without messages).
    pub threads: u64,
    /// Messages deleted, live or archived.
    pub messages: u64,
    /// Idempotency records deleted.
    pub idempotency_records: u64,
    /// The owner's thread sequence (`owners` row) deleted: 0 or 1.
    pub owner_rows: u64,
    /// Nothing of the user is left in any table.
    pub done: bool,
}

impl Erased {
    /// Rows changed in all.
    pub fn rows(&self) -> u64 {
        [
            self.threads_closed,
            self.threads,
            self.messages,
            self.idempotency_records,
            self.owner_rows,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// One object of an export, in export order: a live thread, then its live
/// messages in id order, then the next thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Exported {
    /// A live thread, with its exact `message_count` as of the snapshot.
    Thread(Thread),
    /// A live message of the thread exported last.
    Message(Message),
}

/// An open export: one read-only transaction on one snapshot, read page by
/// page. Dropping it without [`ExportReader::finish`] rolls the
/// transaction back (the unit-of-work guard's rules apply).
#[async_trait]
pub trait ExportReader: Send {
    /// The next objects, at most one page of them; empty when the export is
    /// complete.
    ///
    /// # Errors
    /// Storage errors; [`PortError::Unexpected`] for a row that does not
    /// re-parse (data corruption).
    async fn next_batch(&mut self) -> Result<Vec<Exported>, PortError>;

    /// Ends the read transaction.
    ///
    /// # Errors
    /// Storage errors.
    async fn finish(self: Box<Self>) -> Result<(), PortError>;
}

/// Receives the count of idempotency records the background expiry
/// deleted, for metrics. Must be cheap and never fail.
pub trait ExpiryObserver: Send + Sync {
    /// `records` more records were deleted.
    fn expired(&self, records: u64);
}

/// The maintenance operations of a storage adapter (see the module docs for
/// the contract). Each method is one bounded batch; `weft-app` repeats
/// batches with pauses between them.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Deletes at most `limit` idempotency records (of any owners) created
    /// strictly before `created_before`; returns how many it deleted. Fewer
    /// than `limit` means none was left (or another process took them).
    ///
    /// # Errors
    /// Storage errors; [`PortError::Conflict`] when a transient conflict
    /// rolled a transaction back (the batch may be run again).
    async fn expire_idempotency(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, PortError>;

    /// One purge batch: removes threads archived strictly before
    /// `deleted_before` with all their messages (at most `limit` messages
    /// and `limit` threads), or, when there are none, at most `limit`
    /// messages archived strictly before it in live threads. Nothing
    /// removed means nothing is left to purge.
    ///
    /// # Errors
    /// As [`Maintenance::expire_idempotency`].
    async fn purge_archived(
        &self,
        deleted_before: Timestamp,
        limit: u32,
    ) -> Result<Purged, PortError>;

    /// One step of erasing every row of `user`, in this order: archive
    /// (at `now`) at most `limit` of the user's live threads, so no message
    /// can be added to them; delete at most `limit` idempotency records;
    /// delete at most `limit` messages; delete at most `limit` archived
    /// threads that have no message left; finally, with the owner's
    /// sequence locked, delete it if nothing else of the user is left
    /// (`done`). Each step is one transaction of the first kind that had
    /// work. Idempotent: on a user with no rows the first step is `done`.
    ///
    /// # Errors
    /// As [`Maintenance::expire_idempotency`].
    async fn erase_user_step(
        &self,
        user: &UserId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Erased, PortError>;

    /// Opens an export of `user`'s live threads, each followed by its live
    /// messages in id order, read from one snapshot.
    ///
    /// # Errors
    /// [`PortError::Unavailable`] when the database cannot be reached.
    async fn export_user(&self, user: &UserId) -> Result<Box<dyn ExportReader>, PortError>;
}
