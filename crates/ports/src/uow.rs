//! The unit of work: the single way to reach storage.
//!
//! # The contract every adapter honours (checked by the conformance suite)
//!
//! 1. [`UnitOfWorkFactory::begin`] opens one transaction bound to one
//!    [`RequestContext`]; every repository call made through the returned
//!    unit of work is scoped to `ctx.user()` — a foreign object behaves
//!    exactly like a missing one.
//! 2. Repositories are supertraits of [`UnitOfWork`]: they cannot be reached
//!    without an open transaction and cannot outlive it.
//! 3. [`UnitOfWork::commit`] and [`UnitOfWork::rollback`] consume the unit
//!    of work; using it afterwards does not compile.
//! 4. Dropping an open unit of work — including dropping the future that
//!    owns it in the middle of a statement — rolls it back: its connection
//!    is rolled back before reuse or closed, never handed on dirty.
//! 5. Transient conflicts surface as [`PortError::Conflict`], and only when
//!    the transaction certainly did not commit.
//! 6. Every transaction is bounded in time by the adapter (statement
//!    timeout, idle-in-transaction backstop), never past the request's
//!    deadline ([`RequestContext::deadline`]).
//! 7. A [`Mode::ReadOnly`] or [`Mode::SingleRead`] unit of work cannot
//!    write: writes fail.
//! 9. A [`Mode::SingleRead`] unit of work makes exactly one repository
//!    call. The adapter may run it without a transaction block (one
//!    statement is atomic and sees one snapshot by itself, so nothing is
//!    lost), still bounded in time by rule 6; a second repository call on
//!    it fails with [`PortError::Unexpected`] rather than see another
//!    snapshot.
//! 8. Ids become visible in id order: within one owner's threads, and
//!    within one thread's messages, a transaction that creates an object
//!    commits after every transaction that created a smaller id. Adapters
//!    keep it with a per-owner thread sequence
//!    ([`ThreadRepository::lock_thread_sequence`]) and a per-thread newest
//!    message id ([`MessageRepository::append_message`]), so a pager that
//!    passed an id never meets a smaller one later (API.md, "Lists": every
//!    object exactly once), whichever process minted the ids.

use async_trait::async_trait;
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Page, RequestFingerprint, StoredResponse,
    Thread, ThreadId, Timestamp,
};

use crate::{PortError, RequestContext};

/// Whether a unit of work may write, and how much it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only, all in one snapshot; the adapter opens a read-only
    /// transaction where it can.
    ReadOnly,
    /// Exactly one read (one repository call), which the adapter may run
    /// without a transaction block (rule 9): a get or a list page.
    SingleRead,
    /// Reads and writes.
    ReadWrite,
}

impl Mode {
    /// Whether this unit of work may not write.
    pub fn is_read_only(self) -> bool {
        !matches!(self, Self::ReadWrite)
    }
}

/// Opens units of work. One per adapter; shared by all requests.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UnitOfWorkFactory: Send + Sync {
    /// Opens a transaction for `ctx` in `mode`.
    ///
    /// # Errors
    /// [`PortError::Unavailable`] when no connection can be had in time or
    /// the database cannot be reached; [`PortError::Conflict`] when the
    /// database is momentarily busy (SQLite); [`PortError::Unexpected`] otherwise.
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError>;
}

/// Threads of the unit of work's owner.
#[async_trait]
pub trait ThreadRepository: Send {
    /// Locks the owner's thread sequence until the unit of work ends and
    /// returns the greatest thread id the owner ever created (deleted ones
    /// included), or `None` for a new owner. A thread created in this unit
    /// of work must have a greater id (rule 8): concurrent creates of one
    /// owner queue here, so ids commit in order.
    ///
    /// # Errors
    /// Storage errors only.
    async fn lock_thread_sequence(&mut self) -> Result<Option<ThreadId>, PortError>;

    /// Stores a new thread owned by the context's user, with
    /// `thread.message_count` as its count (its initial messages follow
    /// through [`MessageRepository::insert_messages`]), and records its id
    /// as the owner's newest.
    ///
    /// # Errors
    /// [`PortError::Duplicate`] when the id exists; [`PortError::Unexpected`]
    /// when the id is not above the owner's newest (the caller skipped
    /// [`ThreadRepository::lock_thread_sequence`]); storage errors otherwise.
    async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError>;

    /// Reads a live thread, with its exact live `message_count`.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when missing, foreign or deleted.
    async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError>;

    /// Reads a live thread and locks it against concurrent writers until the
    /// unit of work ends (`SELECT … FOR UPDATE` or the adapter's equivalent).
    ///
    /// # Errors
    /// [`PortError::NotFound`] when missing, foreign or deleted.
    async fn lock_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError>;

    /// Writes a thread's mutable fields (metadata, tool resources, title,
    /// updated_at). `message_count` is not written: only
    /// [`MessageRepository::append_message`] and
    /// [`ThreadRepository::adjust_message_count`] change it.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the thread is no longer live for the owner.
    async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError>;

    /// Adds `delta` to the live thread's `message_count` and moves its
    /// `updated_at` to `at` (never backwards), in one atomic statement that
    /// also locks the row, so concurrent creates and deletes never lose a count.
    /// The count never goes below zero: callers archive a message before
    /// lowering the count, and adapters refuse a negative result.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when missing, foreign or deleted, or when the
    /// count would go below zero (nothing is changed).
    async fn adjust_message_count(
        &mut self,
        id: &ThreadId,
        delta: i64,
        at: Timestamp,
    ) -> Result<(), PortError>;

    /// Archives a live thread at `at`, in one write whatever its size: it
    /// and all its messages are gone from every read at once (every message
    /// read requires a live thread), and stay in storage until purged.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when missing, foreign or already deleted.
    async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError>;

    /// One page of the owner's live threads, executing `params.plan()`.
    ///
    /// # Errors
    /// [`PortError::InvalidCursor`] when the cursor is not one of the owner's
    /// threads (a deleted one of theirs stays valid).
    async fn list_threads(
        &mut self,
        params: &ListParams<ThreadId>,
    ) -> Result<Page<Thread>, PortError>;
}

/// What [`MessageRepository::append_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The message is stored, the thread's count raised by one.
    Done,
    /// Nothing was stored: the message's id is not above the thread's
    /// newest message id (minted by another process, or by a request that
    /// took the thread first). The thread is now locked for this unit of
    /// work, so a retry with an id above `newest` succeeds.
    Stale {
        /// The thread's newest message id (deleted messages included).
        newest: MessageId,
    },
}

/// Messages of the unit of work's owner.
#[async_trait]
pub trait MessageRepository: Send {
    /// Stores the initial messages of a thread inserted in this unit of
    /// work (all of one thread, in id order) and records the last as the
    /// thread's newest. Does not touch the thread's count: the thread was
    /// inserted with the count included.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the thread is not live for the owner;
    /// [`PortError::Duplicate`] when an id exists.
    async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError>;

    /// Adds one message to a live thread, atomically: stores it, raises the
    /// thread's `message_count` by one, moves its `updated_at` to the
    /// message's time (never backwards) and records the message as the
    /// thread's newest — only if its id is above the thread's newest message
    /// id (rule 8); the thread row stays locked until the unit of work
    /// ends, so concurrent appends queue and no count is lost.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the thread is missing, foreign or
    /// deleted; [`PortError::Duplicate`] when the id exists.
    async fn append_message(&mut self, message: &Message) -> Result<Appended, PortError>;

    /// Reads a live message of a live thread.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when either is missing, foreign or deleted, or
    /// the message belongs to another thread.
    async fn get_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError>;

    /// Like [`MessageRepository::get_message`], and locks the message until
    /// the unit of work ends.
    ///
    /// # Errors
    /// As [`MessageRepository::get_message`].
    async fn lock_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
    ) -> Result<Message, PortError>;

    /// Writes a message's metadata.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when it is no longer live.
    async fn update_message(&mut self, message: &Message) -> Result<(), PortError>;

    /// Archives one live message at `at`.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when missing, foreign, deleted or of another thread.
    async fn archive_message(
        &mut self,
        thread_id: &ThreadId,
        id: &MessageId,
        at: Timestamp,
    ) -> Result<(), PortError>;

    /// One page of a live thread's live messages, executing `params.plan()`.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the thread is not live for the owner;
    /// [`PortError::InvalidCursor`] when the cursor is not a message of this
    /// thread (a deleted one stays valid).
    async fn list_messages(
        &mut self,
        thread_id: &ThreadId,
        params: &ListParams<MessageId>,
    ) -> Result<Page<Message>, PortError>;

    /// The oldest live message with role `user` of a live thread, if any.
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the thread is not live for the owner.
    async fn first_user_message(
        &mut self,
        thread_id: &ThreadId,
    ) -> Result<Option<Message>, PortError>;
}

/// A recorded successful response for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The client's key.
    pub key: IdempotencyKey,
    /// What the first request was.
    pub fingerprint: RequestFingerprint,
    /// What it was answered.
    pub response: StoredResponse,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// Idempotency records of the unit of work's owner.
#[async_trait]
pub trait IdempotencyRepository: Send {
    /// The owner's record for `key` created at or after `not_before`.
    ///
    /// # Errors
    /// Storage errors only.
    async fn find_idempotency(
        &mut self,
        key: &IdempotencyKey,
        not_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, PortError>;

    /// Claims `record.key` for the owner, replacing a record older than
    /// `not_before`. A concurrent claim of the same key waits for the other
    /// unit of work to end (a unique index does this).
    ///
    /// # Errors
    /// [`PortError::Duplicate`] when a record at or after `not_before` exists
    /// (or was committed while this one waited).
    async fn insert_idempotency(
        &mut self,
        record: &IdempotencyRecord,
        not_before: Timestamp,
    ) -> Result<(), PortError>;
}

/// An open transaction for one request, and the only way to its repositories.
#[async_trait]
pub trait UnitOfWork: ThreadRepository + MessageRepository + IdempotencyRepository + Send {
    /// The mode it was opened in.
    fn mode(&self) -> Mode;

    /// Commits everything done through this unit of work.
    ///
    /// # Errors
    /// [`PortError::Conflict`] when the database refused the commit and
    /// rolled back (safe to retry); [`PortError::Unavailable`] when the
    /// connection was lost during the commit (outcome unknown: never retried).
    async fn commit(self: Box<Self>) -> Result<(), PortError>;

    /// Rolls back everything done through this unit of work.
    ///
    /// # Errors
    /// Storage errors; the adapter closes the connection instead of reusing
    /// it when a rollback fails.
    async fn rollback(self: Box<Self>) -> Result<(), PortError>;
}
