//! mockall mocks of every port, for other crates' tests (feature `mocks`).
//!
//! `MockUnitOfWork` implements [`UnitOfWork`] and all three repositories, so
//! a test sets expectations on one object per transaction.

use async_trait::async_trait;
use weft_domain::{
    IdempotencyKey, ListParams, Message, MessageId, Page, Thread, ThreadId, Timestamp,
};

use crate::lifecycle::{ExportReader, Exported};
use crate::uow::{
    Appended, IdempotencyRecord, IdempotencyRepository, MessageRepository, Mode, ThreadRepository,
    UnitOfWork,
};
use crate::PortError;

pub use crate::lifecycle::MockMaintenance;
pub use crate::services::{MockClock, MockIdSource, MockTitleGenerator};
pub use crate::uow::MockUnitOfWorkFactory;

mockall::mock! {
    /// A unit of work whose every repository call and ending is an expectation.
    pub UnitOfWork {}

    #[async_trait]
    impl ThreadRepository for UnitOfWork {
        async fn lock_thread_sequence(&mut self) -> Result<Option<ThreadId>, PortError>;
        async fn insert_thread(&mut self, thread: &Thread) -> Result<(), PortError>;
        async fn get_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError>;
        async fn lock_thread(&mut self, id: &ThreadId) -> Result<Thread, PortError>;
        async fn update_thread(&mut self, thread: &Thread) -> Result<(), PortError>;
        async fn adjust_message_count(&mut self, id: &ThreadId, delta: i64, at: Timestamp) -> Result<(), PortError>;
        async fn archive_thread(&mut self, id: &ThreadId, at: Timestamp) -> Result<(), PortError>;
        async fn list_threads(&mut self, params: &ListParams<ThreadId>) -> Result<Page<Thread>, PortError>;
    }

    #[async_trait]
    impl MessageRepository for UnitOfWork {
        async fn insert_messages(&mut self, messages: &[Message]) -> Result<(), PortError>;
        async fn append_message(&mut self, message: &Message) -> Result<Appended, PortError>;
        async fn get_message(&mut self, thread_id: &ThreadId, id: &MessageId) -> Result<Message, PortError>;
        async fn lock_message(&mut self, thread_id: &ThreadId, id: &MessageId) -> Result<Message, PortError>;
        async fn update_message(&mut self, message: &Message) -> Result<(), PortError>;
        async fn archive_message(&mut self, thread_id: &ThreadId, id: &MessageId, at: Timestamp) -> Result<(), PortError>;
        async fn list_messages(&mut self, thread_id: &ThreadId, params: &ListParams<MessageId>) -> Result<Page<Message>, PortError>;
        async fn first_user_message(&mut self, thread_id: &ThreadId) -> Result<Option<Message>, PortError>;
    }

    #[async_trait]
    impl IdempotencyRepository for UnitOfWork {
        async fn find_idempotency(&mut self, key: &IdempotencyKey, not_before: Timestamp) -> Result<Option<IdempotencyRecord>, PortError>;
        async fn insert_idempotency(&mut self, record: &IdempotencyRecord, not_before: Timestamp) -> Result<(), PortError>;
    }

    #[async_trait]
    impl UnitOfWork for UnitOfWork {
        fn mode(&self) -> Mode;
        async fn commit(self: Box<Self>) -> Result<(), PortError>;
        async fn rollback(self: Box<Self>) -> Result<(), PortError>;
    }
}

mockall::mock! {
    /// An open export whose batches and ending are expectations.
    pub ExportReader {}

    #[async_trait]
    impl ExportReader for ExportReader {
        async fn next_batch(&mut self) -> Result<Vec<Exported>, PortError>;
        async fn finish(self: Box<Self>) -> Result<(), PortError>;
    }
}
