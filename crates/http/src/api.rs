//! The `/v1` operations of API.md, with poem-openapi.
//!
//! Every handler does the same four things: take the verified [`Caller`]
//! and build the request's immutable `RequestContext`; turn path, query and
//! body into validated domain values (400/404 before any database work);
//! run the use case through the [`Shield`]; render the OpenAI shape.
//!
//! Every operation takes [`Caller`] as its first argument: poem-openapi
//! runs extractors in argument order, so the token is verified before the
//! body extractor ([`JsonBody`], or [`NoBody`] where there is none) looks at
//! any body (API.md "Authentication and isolation"). Keep it first.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::{OpenApi, Tags};
use serde_json::Value;
use weft_app::{App, AppError, Idempotency, Render};
use weft_domain::{
    ListParams, Message, MessageId, RequestFingerprint, StoredResponse, Thread, ThreadId,
};
use weft_ports::RequestContext;

use crate::auth::Caller;
use crate::body::{JsonBody, JsonText, NoBody};
use crate::dto::{
    CreateMessageBody, CreateThreadBody, DeletedObject, MessageList, MessageObject,
    ModifyMessageBody, ModifyThreadBody, ThreadList, ThreadObject,
};
use crate::error::{ApiError, Target};
use crate::headers::IdempotencyKeyHeader;
use crate::request::RequestMeta;
use crate::shield::Shield;

#[derive(Tags)]
enum ApiTags {
    /// Conversation threads.
    Threads,
    /// Messages of a thread.
    Messages,
}

/// The `/v1` API over the use cases.
#[derive(Clone)]
pub struct Api {
    app: App,
    shield: Shield,
}

impl Api {
    /// The API serving `app`, running each use case through `shield`.
    pub fn new(app: App, shield: Shield) -> Self {
        Self { app, shield }
    }

    /// Runs one use case, built by `work` from a clone of the app, through
    /// the shield (its own task: a dropped request cannot cancel it) and
    /// maps its error to the API's, naming `target` in a 404.
    async fn call<T, Fut>(
        &self,
        target: Target<'_>,
        work: impl FnOnce(App) -> Fut,
    ) -> Result<T, ApiError>
    where
        Fut: std::future::Future<Output = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        self.shield
            .run(work(self.app.clone()))
            .await?
            .map_err(from_app(target))
    }
}

fn context(req: &Request, caller: Caller) -> RequestContext {
    let Caller(user) = caller;
    tracing::Span::current().record("user_id", tracing::field::display(&user));
    match req.extensions().get::<RequestMeta>() {
        Some(meta) => RequestContext::new(user, meta.request_id.clone(), Some(meta.deadline)),
        // Only reachable if the API were mounted without the edge middleware.
        None => RequestContext::new(
            user,
            weft_domain::RequestId::from_uuid(uuid::Uuid::now_v7()),
            None,
        ),
    }
}

fn thread_id(raw: &str) -> Result<ThreadId, ApiError> {
    // A malformed id cannot name an existing thread: 404, like any unknown id.
    ThreadId::parse(raw).map_err(|_| ApiError::not_found(Target::Thread(raw)))
}

fn message_id(thread: &str, raw: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(raw).map_err(|_| {
        ApiError::not_found(Target::Message {
            thread,
            message: raw,
        })
    })
}

fn idempotency(header: IdempotencyKeyHeader, path: &str, body: &Value) -> Option<Idempotency> {
    header.0.map(|key| Idempotency {
        key,
        fingerprint: RequestFingerprint::new("POST", path, Some(body)),
    })
}

/// The response a create use case returned (fresh or replayed): only
/// successes are recorded, and every successful create answers `200`.
fn rendered<T>(response: StoredResponse) -> JsonText<T> {
    JsonText::new(StatusCode::OK, response.body)
}

fn render_json<S: serde::Serialize>(value: &S) -> StoredResponse {
    // invariant: the DTOs hold strings, integers, booleans, string-keyed
    // maps and JSON values only; serde_json fails only on non-string map
    // keys or a Serialize impl's own error, neither of which exists here.
    #[allow(clippy::expect_used)]
    let body = serde_json::to_string(value).expect("the response DTOs always serialise");
    StoredResponse { body }
}

fn thread_renderer() -> Render<Thread> {
    Arc::new(|t: &Thread| render_json(&ThreadObject::from(t)))
}

fn message_renderer() -> Render<Message> {
    Arc::new(|m: &Message| render_json(&MessageObject::from(m)))
}

fn list_params<I>(
    limit: Option<String>,
    order: Option<String>,
    after: Option<String>,
    before: Option<String>,
    parse: impl Fn(&str) -> Result<I, weft_domain::IdError>,
) -> Result<ListParams<I>, ApiError> {
    ListParams::parse(
        limit.as_deref(),
        order.as_deref(),
        after.as_deref(),
        before.as_deref(),
        parse,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn from_app(target: Target<'_>) -> impl FnOnce(AppError) -> ApiError + '_ {
    move |e| ApiError::from_app(e, target)
}

#[OpenApi(prefix_path = "/v1")]
impl Api {
    /// Create a thread
    ///
    /// Creates a thread and its initial `messages` (at most 32) in one
    /// transaction. Honours `Idempotency-Key`.
    #[oai(
        path = "/threads",
        method = "post",
        operation_id = "createThread",
        tag = "ApiTags::Threads"
    )]
    async fn create_thread(
        &self,
        caller: Caller,
        req: &Request,
        /// Replays the first successful response for 24 h (1–255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: IdempotencyKeyHeader,
        body: JsonBody<CreateThreadBody>,
    ) -> Result<JsonText<ThreadObject>, ApiError> {
        let ctx = context(req, caller);
        let idem = idempotency(idempotency_key, "/v1/threads", &body.value);
        let cmd = body.dto.into_command()?;
        let render = thread_renderer();
        let result = self
            .call(Target::Threads, move |app| async move {
                match idem {
                    Some(idem) => app.create_thread_idempotent(&ctx, cmd, idem, render).await,
                    None => app.create_thread(&ctx, cmd, render).await,
                }
            })
            .await?;
        Ok(rendered(result))
    }

    /// List threads
    ///
    /// The caller's threads, by id (creation order). Weft extension.
    #[oai(
        path = "/threads",
        method = "get",
        operation_id = "listThreads",
        tag = "ApiTags::Threads"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list_threads(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        /// 1–100, default 20.
        limit: Query<Option<String>>,
        /// `asc` or `desc` (default).
        order: Query<Option<String>>,
        /// A thread id: the page starts strictly after it.
        after: Query<Option<String>>,
        /// A thread id: the page holds the objects nearest before it.
        before: Query<Option<String>>,
    ) -> Result<JsonText<ThreadList>, ApiError> {
        let ctx = context(req, caller);
        let params = list_params(limit.0, order.0, after.0, before.0, ThreadId::parse)?;
        let page = self
            .call(Target::Threads, move |app| async move {
                app.list_threads(&ctx, params).await
            })
            .await?;
        JsonText::ok(&ThreadList::from(&page))
    }

    /// Retrieve a thread
    #[oai(
        path = "/threads/:thread_id",
        method = "get",
        operation_id = "getThread",
        tag = "ApiTags::Threads"
    )]
    async fn get_thread(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
    ) -> Result<JsonText<ThreadObject>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let thread = self
            .call(Target::Thread(&thread_id.0), move |app| async move {
                app.get_thread(&ctx, id).await
            })
            .await?;
        JsonText::ok(&ThreadObject::from(&thread))
    }

    /// Modify a thread
    ///
    /// Merges `metadata` (a `null` value removes the key), replaces
    /// `tool_resources`, sets or clears `title`.
    #[oai(
        path = "/threads/:thread_id",
        method = "post",
        operation_id = "modifyThread",
        tag = "ApiTags::Threads"
    )]
    async fn modify_thread(
        &self,
        caller: Caller,
        req: &Request,
        thread_id: Path<String>,
        body: JsonBody<ModifyThreadBody>,
    ) -> Result<JsonText<ThreadObject>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let patch = body.dto.into_patch()?;
        let thread = self
            .call(Target::Thread(&thread_id.0), move |app| async move {
                app.modify_thread(&ctx, id, patch).await
            })
            .await?;
        JsonText::ok(&ThreadObject::from(&thread))
    }

    /// Delete a thread
    ///
    /// Archives the thread and its messages: kept in storage, gone from the API.
    #[oai(
        path = "/threads/:thread_id",
        method = "delete",
        operation_id = "deleteThread",
        tag = "ApiTags::Threads"
    )]
    async fn delete_thread(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
    ) -> Result<JsonText<DeletedObject>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let deleted = id.as_str().to_owned();
        self.call(Target::Thread(&thread_id.0), move |app| async move {
            app.delete_thread(&ctx, id).await
        })
        .await?;
        JsonText::ok(&DeletedObject {
            id: deleted,
            object: "thread.deleted".to_owned(),
            deleted: true,
        })
    }

    /// Auto-rename a thread
    ///
    /// Sets `title` from the thread's first user message (Weft extension).
    /// A thread without a user message → 400.
    #[oai(
        path = "/threads/:thread_id/auto_rename",
        method = "post",
        operation_id = "autoRenameThread",
        tag = "ApiTags::Threads"
    )]
    async fn auto_rename(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
    ) -> Result<JsonText<ThreadObject>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let thread = self
            .call(Target::Thread(&thread_id.0), move |app| async move {
                app.auto_rename(&ctx, id).await
            })
            .await?;
        JsonText::ok(&ThreadObject::from(&thread))
    }

    /// Create a message
    ///
    /// Adds a message; updates the thread's `updated_at` and `message_count`
    /// in the same transaction. Honours `Idempotency-Key`.
    #[oai(
        path = "/threads/:thread_id/messages",
        method = "post",
        operation_id = "createMessage",
        tag = "ApiTags::Messages"
    )]
    async fn create_message(
        &self,
        caller: Caller,
        req: &Request,
        thread_id: Path<String>,
        /// Replays the first successful response for 24 h (1–255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: IdempotencyKeyHeader,
        body: JsonBody<CreateMessageBody>,
    ) -> Result<JsonText<MessageObject>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let path = format!("/v1/threads/{}/messages", id.as_str());
        let idem = idempotency(idempotency_key, &path, &body.value);
        let msg = body.dto.into_new_message()?;
        let render = message_renderer();
        let result = self
            .call(Target::Thread(&thread_id.0), move |app| async move {
                match idem {
                    Some(idem) => {
                        app.create_message_idempotent(&ctx, id, msg, idem, render)
                            .await
                    }
                    None => app.create_message(&ctx, id, msg, render).await,
                }
            })
            .await?;
        Ok(rendered(result))
    }

    /// List messages
    ///
    /// The thread's messages by id (creation order).
    #[oai(
        path = "/threads/:thread_id/messages",
        method = "get",
        operation_id = "listMessages",
        tag = "ApiTags::Messages"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list_messages(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
        /// 1–100, default 20.
        limit: Query<Option<String>>,
        /// `asc` or `desc` (default).
        order: Query<Option<String>>,
        /// A message id of this thread: the page starts strictly after it.
        after: Query<Option<String>>,
        /// A message id of this thread: the page holds the objects nearest before it.
        before: Query<Option<String>>,
        /// Filter by run; Weft messages have no run, so any value matches nothing.
        run_id: Query<Option<String>>,
    ) -> Result<JsonText<MessageList>, ApiError> {
        let ctx = context(req, caller);
        let id = self::thread_id(&thread_id.0)?;
        let params = list_params(limit.0, order.0, after.0, before.0, MessageId::parse)?;
        let mut page = self
            .call(Target::Thread(&thread_id.0), move |app| async move {
                app.list_messages(&ctx, id, params).await
            })
            .await?;
        if run_id.0.is_some() {
            // Still validated the thread and the cursor above, like OpenAI does.
            page.items.clear();
            page.has_more = false;
        }
        JsonText::ok(&MessageList::from(&page))
    }

    /// Retrieve a message
    #[oai(
        path = "/threads/:thread_id/messages/:message_id",
        method = "get",
        operation_id = "getMessage",
        tag = "ApiTags::Messages"
    )]
    async fn get_message(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
        message_id: Path<String>,
    ) -> Result<JsonText<MessageObject>, ApiError> {
        let ctx = context(req, caller);
        let tid = self::thread_id(&thread_id.0)?;
        let mid = self::message_id(&thread_id.0, &message_id.0)?;
        let message = self
            .call(
                Target::Message {
                    thread: &thread_id.0,
                    message: &message_id.0,
                },
                move |app| async move { app.get_message(&ctx, tid, mid).await },
            )
            .await?;
        JsonText::ok(&MessageObject::from(&message))
    }

    /// Modify a message
    ///
    /// Merges `metadata` (a `null` value removes the key).
    #[oai(
        path = "/threads/:thread_id/messages/:message_id",
        method = "post",
        operation_id = "modifyMessage",
        tag = "ApiTags::Messages"
    )]
    async fn modify_message(
        &self,
        caller: Caller,
        req: &Request,
        thread_id: Path<String>,
        message_id: Path<String>,
        body: JsonBody<ModifyMessageBody>,
    ) -> Result<JsonText<MessageObject>, ApiError> {
        let ctx = context(req, caller);
        let tid = self::thread_id(&thread_id.0)?;
        let mid = self::message_id(&thread_id.0, &message_id.0)?;
        let patch = body.dto.into_patch()?;
        let message = self
            .call(
                Target::Message {
                    thread: &thread_id.0,
                    message: &message_id.0,
                },
                move |app| async move { app.modify_message(&ctx, tid, mid, patch).await },
            )
            .await?;
        JsonText::ok(&MessageObject::from(&message))
    }

    /// Delete a message
    ///
    /// Updates the thread's `updated_at` and `message_count` in the same transaction.
    #[oai(
        path = "/threads/:thread_id/messages/:message_id",
        method = "delete",
        operation_id = "deleteMessage",
        tag = "ApiTags::Messages"
    )]
    async fn delete_message(
        &self,
        caller: Caller,
        req: &Request,
        _body: NoBody,
        thread_id: Path<String>,
        message_id: Path<String>,
    ) -> Result<JsonText<DeletedObject>, ApiError> {
        let ctx = context(req, caller);
        let tid = self::thread_id(&thread_id.0)?;
        let mid = self::message_id(&thread_id.0, &message_id.0)?;
        let deleted = mid.as_str().to_owned();
        let target = Target::Message {
            thread: &thread_id.0,
            message: &message_id.0,
        };
        self.call(target, move |app| async move {
            app.delete_message(&ctx, tid, mid).await
        })
        .await?;
        JsonText::ok(&DeletedObject {
            id: deleted,
            object: "thread.message.deleted".to_owned(),
            deleted: true,
        })
    }
}
