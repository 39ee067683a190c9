//! Port-level sequences the cases seed data with, written through the
//! ports exactly as the app writes them: one unit of work each, commit last.
//! An error drops the unit of work, which must roll it back.

use weft_domain::{Message, MessageId, Thread, ThreadId, Timestamp};
use weft_ports::{Appended, Mode, PortError, RequestContext, UnitOfWorkFactory};

use crate::fixtures::{message_id_above, thread_id_above};

/// Appends `message` to its thread (count included), in one unit of work;
/// when the thread's newest id is above the message's (rule 8), the
/// message gets a fresh id above it, as the app does. Returns the id stored.
///
/// # Errors
/// `NotFound` when the thread is not live for the owner; storage errors.
pub async fn create_message(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    message: &Message,
) -> Result<MessageId, PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadWrite).await?;
    let mut message = message.clone();
    if let Appended::Stale { newest } = uow.append_message(&message).await? {
        message.id = message_id_above(Some(&newest));
        if uow.append_message(&message).await? != Appended::Done {
            return Err(PortError::unexpected(
                "append refused after locking the thread",
            ));
        }
    }
    uow.commit().await?;
    Ok(message.id)
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
    // Lock the thread (through its count) before the message, the order
    // every writer uses, so writers never deadlock.
    uow.adjust_message_count(thread, -1, at).await?;
    uow.archive_message(thread, id, at).await?;
    uow.commit().await
}

/// Creates `thread` (whose `message_count` must equal `messages.len()`)
/// with its initial messages, in one unit of work, as the app does: the
/// owner's thread sequence locked first, and the thread re-keyed above the
/// owner's newest id when needed (its messages follow it). Returns the
/// thread and messages as stored.
///
/// # Errors
/// `Duplicate` when an id exists; storage errors.
pub async fn create_thread(
    factory: &dyn UnitOfWorkFactory,
    ctx: &RequestContext,
    thread: &Thread,
    messages: &[Message],
) -> Result<(Thread, Vec<Message>), PortError> {
    let mut uow = factory.begin(ctx, Mode::ReadWrite).await?;
    let mut thread = thread.clone();
    let mut messages = messages.to_vec();
    if let Some(newest) = uow.lock_thread_sequence().await? {
        if thread.id <= newest {
            thread.id = thread_id_above(Some(&newest));
            for m in &mut messages {
                m.thread_id = thread.id.clone();
            }
        }
    }
    uow.insert_thread(&thread).await?;
    if !messages.is_empty() {
        uow.insert_messages(&messages).await?;
    }
    uow.commit().await?;
    Ok((thread, messages))
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
