//! Auto-rename: the one use case that calls something slow and external.
//!
//! Shape (DESIGN.md rule 7): read in a short read-only unit of work, call
//! the title generator with no unit of work open, write in a second unit of
//! work that re-checks the state it depends on.

use weft_domain::{derive_title, Message, Thread, ThreadId};
use weft_ports::{Mode, RequestContext};

use crate::{App, AppError};

/// What the write step found.
enum Outcome {
    Done(Thread),
    /// The first user message changed while the generator ran: start over.
    Stale,
}

impl App {
    /// Sets a thread's title from its first user message.
    ///
    /// If the thread changed while the generator ran, the newest state wins:
    /// a title someone set meanwhile is kept; a changed first user message
    /// restarts the rename (bounded by the retry policy); a deleted thread is
    /// not found. A generator that fails or times out is replaced by the
    /// deterministic derived title, so a rename never fails on it.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::NoUserMessage`] when the thread
    /// has no user message; [`AppError::Busy`] when the conversation kept
    /// changing through every attempt.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id()))]
    pub async fn auto_rename(
        &self,
        ctx: &RequestContext,
        id: ThreadId,
    ) -> Result<Thread, AppError> {
        for _ in 0..self.config.retry.max_attempts.max(1) {
            let (seen, first) = self.read_for_rename(ctx, &id).await?;
            let title = self.generate_title(ctx, &first).await;
            let outcome = self
                .in_uow(ctx, Mode::ReadWrite, |uow| {
                    let (id, seen, first, title, clock) = (
                        id.clone(),
                        seen.clone(),
                        first.id.clone(),
                        title.clone(),
                        self.deps.clock.clone(),
                    );
                    Box::pin(async move {
                        let current = uow.lock_thread(&id).await?;
                        let now_first = uow
                            .first_user_message(&id)
                            .await?
                            .ok_or(AppError::NoUserMessage)?;
                        if now_first.id != first {
                            return Ok(Outcome::Stale);
                        }
                        if current.title != seen.title {
                            // Someone titled the thread while we waited: theirs is newer.
                            return Ok(Outcome::Done(current));
                        }
                        let mut next = current;
                        next.title = Some(title);
                        next.updated_at = next.updated_at.max(clock.now());
                        uow.update_thread(&next).await?;
                        Ok(Outcome::Done(next))
                    })
                })
                .await?;
            match outcome {
                Outcome::Done(thread) => return Ok(thread),
                Outcome::Stale => {
                    tracing::debug!("first user message changed during auto-rename; starting over")
                }
            }
        }
        Err(AppError::Busy)
    }

    async fn read_for_rename(
        &self,
        ctx: &RequestContext,
        id: &ThreadId,
    ) -> Result<(Thread, Message), AppError> {
        self.in_uow(ctx, Mode::ReadOnly, |uow| {
            let id = id.clone();
            Box::pin(async move {
                let thread = uow.get_thread(&id).await?;
                let first = uow
                    .first_user_message(&id)
                    .await?
                    .ok_or(AppError::NoUserMessage)?;
                Ok((thread, first))
            })
        })
        .await
    }

    async fn generate_title(&self, ctx: &RequestContext, first: &Message) -> weft_domain::Title {
        let text = first.content.plain_text();
        if text.trim().is_empty() {
            // Nothing to name the thread by (e.g. only image parts): a model
            // asked with an empty turn could only invent a title.
            return derive_title(&text);
        }
        match tokio::time::timeout(self.config.title_timeout, self.deps.titles.generate(&text))
            .await
        {
            Ok(Ok(title)) => title,
            Ok(Err(e)) => {
                tracing::warn!(request_id = %ctx.request_id(), error = %e, "title generator failed; using the derived title");
                derive_title(&text)
            }
            Err(_) => {
                tracing::warn!(request_id = %ctx.request_id(), "title generator timed out; using the derived title");
                derive_title(&text)
            }
        }
    }
}
