//! Message use cases.

use weft_domain::{
    ListParams, Message, MessageId, MessagePatch, NewMessage, Page, StoredResponse, ThreadId,
    Timestamp,
};
use weft_ports::{Appended, Mode, RequestContext, UnitOfWork};

use crate::idempotency::{self, Idempotency};
use crate::tx::Failure;
use crate::{App, AppError, Render};

impl App {
    /// Adds a message to a thread and, in the same unit of work, raises the
    /// thread's `message_count` and `updated_at` (one atomic append that
    /// also locks the thread row).
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the thread is missing, foreign or deleted.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn create_message(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        msg: NewMessage,
        render: Render<Message>,
    ) -> Result<StoredResponse, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (thread_id, msg, render, app) =
                (thread_id.clone(), msg.clone(), render.clone(), self.clone());
            Box::pin(async move {
                let now = app.deps.clock.now();
                let message = app.append(uow, thread_id, msg, now).await?;
                Ok(render(&message))
            })
        })
        .await
    }

    /// Like [`App::create_message`], honouring an `Idempotency-Key` (see
    /// [`crate::idempotency`] and [`App::create_thread_idempotent`]).
    ///
    /// # Errors
    /// [`AppError::NotFound`], [`AppError::IdempotencyKeyReused`], storage errors.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn create_message_idempotent(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        msg: NewMessage,
        idem: Idempotency,
        render: Render<Message>,
    ) -> Result<StoredResponse, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (thread_id, msg, render, idem, app) = (
                thread_id.clone(),
                msg.clone(),
                render.clone(),
                idem.clone(),
                self.clone(),
            );
            Box::pin(async move {
                let now = app.deps.clock.now();
                idempotency::run(uow, &idem, now, |uow| {
                    Box::pin(async move {
                        let message = app.append(uow, thread_id, msg, now).await?;
                        Ok(render(&message))
                    })
                })
                .await
            })
        })
        .await
    }

    /// Reads one message of one of the caller's threads.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the thread or message is missing, foreign,
    /// deleted, or the message is of another thread.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn get_message(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        id: MessageId,
    ) -> Result<Message, AppError> {
        self.in_uow(ctx, Mode::SingleRead, |uow| {
            let (thread_id, id) = (thread_id.clone(), id.clone());
            Box::pin(async move { Ok(uow.get_message(&thread_id, &id).await?) })
        })
        .await
    }

    /// One page of a thread's messages.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the thread; [`AppError::InvalidCursor`].
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn list_messages(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        params: ListParams<MessageId>,
    ) -> Result<Page<Message>, AppError> {
        self.in_uow(ctx, Mode::SingleRead, |uow| {
            let (thread_id, params) = (thread_id.clone(), params.clone());
            Box::pin(async move { Ok(uow.list_messages(&thread_id, &params).await?) })
        })
        .await
    }

    /// Merges a message's metadata under a row lock.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::Invalid`] when the merge breaks the limit.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn modify_message(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        id: MessageId,
        patch: MessagePatch,
    ) -> Result<Message, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (thread_id, id, patch) = (thread_id.clone(), id.clone(), patch.clone());
            Box::pin(async move {
                let current = uow.lock_message(&thread_id, &id).await?;
                let next = current.patched(&patch)?;
                uow.update_message(&next).await?;
                Ok(next)
            })
        })
        .await
    }

    /// Archives a message and, in the same unit of work, lowers its thread's
    /// `message_count` and moves `updated_at`.
    ///
    /// Order: lock the thread, archive the message, then lower the count.
    /// Locking the thread first keeps every writer's lock order (thread,
    /// then messages), so deletes cannot deadlock with creates or thread
    /// deletes; archiving before counting means a message that is already
    /// gone answers not found instead of driving the count below zero.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the thread or message is not live for the caller.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn delete_message(
        &self,
        ctx: &RequestContext,
        thread_id: ThreadId,
        id: MessageId,
    ) -> Result<(), AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (thread_id, id, clock) = (thread_id.clone(), id.clone(), self.deps.clock.clone());
            Box::pin(async move {
                let now = clock.now();
                uow.lock_thread(&thread_id).await?;
                uow.archive_message(&thread_id, &id, now).await?;
                uow.adjust_message_count(&thread_id, -1, now).await?;
                Ok(())
            })
        })
        .await
    }

    /// Appends `msg` to the thread with a fresh id. When the thread's
    /// newest message id is not below it (another process minted ids with
    /// a clock ahead, or a concurrent request took the thread first), the
    /// append changed nothing and left the thread locked for us: mint an id
    /// above the newest and append again, which then succeeds (unit-of-work
    /// rule 8: message ids commit in id order).
    async fn append(
        &self,
        uow: &mut dyn UnitOfWork,
        thread_id: ThreadId,
        msg: NewMessage,
        now: Timestamp,
    ) -> Result<Message, Failure> {
        let mut message = msg.into_message(self.deps.ids.message_id(None), thread_id, now);
        if let Appended::Stale { newest } = uow.append_message(&message).await? {
            message.id = self.deps.ids.message_id(Some(&newest));
            if let Appended::Stale { newest } = uow.append_message(&message).await? {
                return Err(AppError::Unexpected(
                    format!(
                        "append refused id {} after locking the thread (newest {newest})",
                        message.id
                    )
                    .into(),
                )
                .into());
            }
        }
        Ok(message)
    }
}
