//! Thread use cases.

use weft_domain::{
    CreateThread, ListParams, Message, Page, StoredResponse, Thread, ThreadId, ThreadPatch,
    Timestamp,
};
use weft_ports::{Mode, RequestContext, UnitOfWork};

use crate::idempotency::{self, Idempotency};
use crate::tx::Failure;
use crate::{App, AppError, Render};

impl App {
    /// Creates a thread and its initial messages in one unit of work and
    /// returns the rendered response.
    ///
    /// The owner's thread sequence is locked before the thread's id is
    /// minted (above the owner's newest), so the owner's thread ids commit
    /// in id order (unit-of-work rule 8).
    ///
    /// # Errors
    /// Storage errors as [`AppError`]; nothing is written unless everything is.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn create_thread(
        &self,
        ctx: &RequestContext,
        cmd: CreateThread,
        render: Render<Thread>,
    ) -> Result<StoredResponse, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (cmd, render, app) = (cmd.clone(), render.clone(), self.clone());
            Box::pin(async move {
                app.write_thread(uow, &cmd, app.deps.clock.now(), &render)
                    .await
            })
        })
        .await
    }

    /// Like [`App::create_thread`], honouring an `Idempotency-Key` (see
    /// [`crate::idempotency`]): a retry with the same key and request within
    /// 24 h replays the first response and creates nothing; the same key
    /// with another request is refused; a concurrent duplicate waits for the
    /// first and then replays it.
    ///
    /// # Errors
    /// [`AppError::IdempotencyKeyReused`]; storage errors.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn create_thread_idempotent(
        &self,
        ctx: &RequestContext,
        cmd: CreateThread,
        idem: Idempotency,
        render: Render<Thread>,
    ) -> Result<StoredResponse, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (cmd, render, idem, app) =
                (cmd.clone(), render.clone(), idem.clone(), self.clone());
            Box::pin(async move {
                let now = app.deps.clock.now();
                idempotency::run(uow, &idem, now, |uow| {
                    Box::pin(async move { app.write_thread(uow, &cmd, now, &render).await })
                })
                .await
            })
        })
        .await
    }

    /// Reads one of the caller's threads.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when missing, foreign or deleted.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn get_thread(&self, ctx: &RequestContext, id: ThreadId) -> Result<Thread, AppError> {
        self.in_uow(ctx, Mode::SingleRead, |uow| {
            let id = id.clone();
            Box::pin(async move { Ok(uow.get_thread(&id).await?) })
        })
        .await
    }

    /// One page of the caller's threads.
    ///
    /// # Errors
    /// [`AppError::InvalidCursor`] for a cursor that is not one of the caller's threads.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn list_threads(
        &self,
        ctx: &RequestContext,
        params: ListParams<ThreadId>,
    ) -> Result<Page<Thread>, AppError> {
        self.in_uow(ctx, Mode::SingleRead, |uow| {
            let params = params.clone();
            Box::pin(async move { Ok(uow.list_threads(&params).await?) })
        })
        .await
    }

    /// Merges metadata, replaces tool resources and sets or clears the title,
    /// under a row lock so concurrent modifications never lose a key.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::Invalid`] when the merged metadata
    /// breaks its limit (nothing is written).
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn modify_thread(
        &self,
        ctx: &RequestContext,
        id: ThreadId,
        patch: ThreadPatch,
    ) -> Result<Thread, AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (id, patch, clock) = (id.clone(), patch.clone(), self.deps.clock.clone());
            Box::pin(async move {
                let current = uow.lock_thread(&id).await?;
                let next = current.patched(&patch, clock.now())?;
                uow.update_thread(&next).await?;
                Ok(next)
            })
        })
        .await
    }

    /// Archives a thread and its messages: kept in storage, gone from the API.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when missing, foreign or already deleted.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn delete_thread(&self, ctx: &RequestContext, id: ThreadId) -> Result<(), AppError> {
        self.in_uow(ctx, Mode::ReadWrite, |uow| {
            let (id, clock) = (id.clone(), self.deps.clock.clone());
            Box::pin(async move { Ok(uow.archive_thread(&id, clock.now()).await?) })
        })
        .await
    }

    /// Creates the thread of `cmd` and its initial messages at `now`: the
    /// owner's thread sequence is locked first, then the ids are minted
    /// above the owner's newest thread id.
    async fn write_thread(
        &self,
        uow: &mut dyn UnitOfWork,
        cmd: &CreateThread,
        now: Timestamp,
        render: &Render<Thread>,
    ) -> Result<StoredResponse, Failure> {
        let newest = uow.lock_thread_sequence().await?;
        let thread = cmd.to_thread(self.deps.ids.thread_id(newest.as_ref()), now);
        let messages: Vec<Message> = cmd
            .messages()
            .iter()
            .map(|m| {
                m.clone()
                    .into_message(self.deps.ids.message_id(None), thread.id.clone(), now)
            })
            .collect();
        uow.insert_thread(&thread).await?;
        if !messages.is_empty() {
            uow.insert_messages(&messages).await?;
        }
        Ok(render(&thread))
    }
}
