//! Thread use cases.

use weft_domain::idempotency::REPLAY_WINDOW_SECS;
use weft_domain::{
    CreateThread, ListParams, Message, Page, StoredResponse, Thread, ThreadId, ThreadPatch,
    Timestamp,
};
use weft_ports::{IdempotencyRecord, Mode, PortError, RequestContext, UnitOfWork};

use crate::{App, AppError, Idempotency, Render};

impl App {
    /// Creates a thread and its initial messages in one unit of work and
    /// returns the rendered response.
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
                let (thread, messages) = app.new_thread(&cmd, app.deps.clock.now());
                write_thread(uow, &thread, &messages).await?;
                Ok(render(&thread))
            })
        })
        .await
    }

    /// Like [`App::create_thread`], honouring an `Idempotency-Key`: a retry
    /// with the same key and request within 24 h replays the first response
    /// and creates nothing; the same key with another request is refused.
    /// The record is claimed in the same unit of work as the creation, so a
    /// concurrent duplicate waits for the first and then replays it.
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
                let not_before = now.minus_seconds(REPLAY_WINDOW_SECS);
                if let Some(replay) = replay(uow, &idem, not_before).await? {
                    return Ok(replay);
                }
                let (thread, messages) = app.new_thread(&cmd, now);
                let response = render(&thread);
                claim(uow, &idem, &response, now, not_before).await?;
                write_thread(uow, &thread, &messages).await?;
                Ok(response)
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
        self.in_uow(ctx, Mode::ReadOnly, |uow| {
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
        self.in_uow(ctx, Mode::ReadOnly, |uow| {
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

    /// A new thread and its initial messages, with fresh ids and one timestamp.
    fn new_thread(&self, cmd: &CreateThread, now: Timestamp) -> (Thread, Vec<Message>) {
        let thread = cmd.to_thread(self.deps.ids.thread_id(), now);
        let messages = cmd
            .messages()
            .iter()
            .map(|m| {
                m.clone()
                    .into_message(self.deps.ids.message_id(), thread.id.clone(), now)
            })
            .collect();
        (thread, messages)
    }
}

async fn write_thread(
    uow: &mut dyn UnitOfWork,
    thread: &Thread,
    messages: &[Message],
) -> Result<(), AppError> {
    uow.insert_thread(thread).await?;
    if !messages.is_empty() {
        uow.insert_messages(messages).await?;
    }
    Ok(())
}

/// The recorded response for `idem`, if any; refuses a reuse with another request.
pub(crate) async fn replay(
    uow: &mut dyn UnitOfWork,
    idem: &Idempotency,
    not_before: weft_domain::Timestamp,
) -> Result<Option<StoredResponse>, AppError> {
    match uow.find_idempotency(&idem.key, not_before).await? {
        Some(rec) if rec.fingerprint == idem.fingerprint => Ok(Some(rec.response)),
        Some(_) => Err(AppError::IdempotencyKeyReused),
        None => Ok(None),
    }
}

/// Claims the key for this unit of work. A duplicate means another request
/// with the key committed while this one ran: the attempt is retried as a
/// transient conflict, and the next attempt replays (or refuses) it.
pub(crate) async fn claim(
    uow: &mut dyn UnitOfWork,
    idem: &Idempotency,
    response: &StoredResponse,
    now: weft_domain::Timestamp,
    not_before: weft_domain::Timestamp,
) -> Result<(), AppError> {
    let record = IdempotencyRecord {
        key: idem.key.clone(),
        fingerprint: idem.fingerprint.clone(),
        response: response.clone(),
        created_at: now,
    };
    match uow.insert_idempotency(&record, not_before).await {
        Ok(()) => Ok(()),
        Err(PortError::Duplicate) => Err(AppError::Busy),
        Err(e) => Err(e.into()),
    }
}
