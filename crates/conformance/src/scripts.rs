//! The use cases the load and cancellation cases run, written through the
//! ports exactly as the app writes them: one unit of work each, the
//! ownership check folded into the first write, commit last. An error drops
//! the unit of work, which must roll it back.

use weft_domain::{Message, MessageId, Thread, ThreadId, Timestamp};
use weft_ports::{Mode, PortError, RequestContext, UnitOfWorkFactory};

/// Creates `message` in its thread and counts it, in one unit of work.
///
/// # Errors
/// `NotFound` when the thread is not live for the owner; storage errors.
pub async fn create_message(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    message: &Message,
) -> Result<(), PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadWrite).await?;
    // Touch first: it checks ownership and locks the thread row, so
    // concurrent creates on one thread queue here instead of deadlocking.
    uow.touch_thread(&message.thread_id, 1, message.created_at)
        .await?;
    uow.insert_messages(std::slice::from_ref(message)).await?;
    uow.commit().await
}

/// Archives one message and uncounts it, in one unit of work.
///
/// # Errors
/// `NotFound` when the message is not live for the owner; storage errors.
pub async fn delete_message(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    thread: &ThreadId,
    id: &MessageId,
    at: Timestamp,
) -> Result<(), PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadWrite).await?;
    // Lock the thread before the message, in the same order as
    // `create_message`, so the two never deadlock.
    uow.touch_thread(thread, -1, at).await?;
    uow.archive_message(thread, id, at).await?;
    uow.commit().await
}

/// Creates `thread` (whose `message_count` must equal `messages.len()`)
/// with its initial messages, in one unit of work.
///
/// # Errors
/// `Duplicate` when an id exists; storage errors.
pub async fn create_thread(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    thread: &Thread,
    messages: &[Message],
) -> Result<(), PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadWrite).await?;
    uow.insert_thread(thread).await?;
    if !messages.is_empty() {
        uow.insert_messages(messages).await?;
    }
    uow.commit().await
}

/// Reads a thread in a read-only unit of work.
///
/// # Errors
/// `NotFound` when it is not live for the owner; storage errors.
pub async fn read_thread(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    id: &ThreadId,
) -> Result<Thread, PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadOnly).await?;
    let thread = uow.get_thread(id).await?;
    uow.commit().await?;
    Ok(thread)
}
