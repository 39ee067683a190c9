//! Weft's domain: the pure types and rules of threads and messages.
//!
//! Layout:
//! - [`ids`]: `ThreadId`, `MessageId`, `UserId`, `RequestId` — parsed, never trusted.
//! - [`text`]: the string rules every stored string obeys (no U+0000).
//! - [`metadata`]: the OpenAI metadata map, its limits and merge semantics.
//! - [`json`]: opaque client JSON (`tool_resources`, `attachments`) with its depth rule.
//! - [`content`]: message content, input forms and the stored OpenAI form.
//! - [`thread`] and [`message`]: the aggregates and the commands that create or change them.
//! - [`list`]: validated list parameters (limit, order, cursor) and pages.
//! - [`title`]: thread titles and the deterministic title derivation.
//! - [`idempotency`]: idempotency keys, request fingerprints, stored responses.
//!
//! Architecture invariant: this crate does no I/O, is not async and knows
//! nothing of databases or HTTP. It may depend only on small value crates
//! (serde, serde_json, uuid, sha2, hex, thiserror). Every validation rule of
//! the API lives here exactly once, so every adapter and the HTTP layer
//! inherit the same rules.

pub mod content;
pub mod idempotency;
pub mod ids;
pub mod json;
pub mod list;
pub mod message;
pub mod metadata;
pub mod text;
pub mod thread;
pub mod time;
pub mod title;

pub use content::{
    Content, ContentInput, ContentPart, ContentPartInput, ImageDetail, ImageFilePart, ImageUrlPart,
};
pub use idempotency::{IdempotencyKey, RequestFingerprint, Retention, StoredResponse};
pub use ids::{IdError, MessageId, RequestId, ThreadId, UserId};
pub use json::{Attachments, JsonError, ToolResources};
pub use list::{ListError, ListParams, Order, Page, PageLimit, PagePlan};
pub use message::{Message, MessagePatch, NewMessage, Role};
pub use metadata::{Metadata, MetadataError, MetadataPatch};
pub use text::TextError;
pub use thread::{CreateThread, Thread, ThreadPatch, MAX_INITIAL_MESSAGES};
pub use time::Timestamp;
pub use title::{derive_title, Title, TitleError};

/// Any validation failure of the domain, for callers that only need to say
/// "this input is invalid" (HTTP 400) with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// An id, user id or request id did not parse.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A string broke the stored-string rules.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Metadata broke its limits.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Opaque client JSON broke its shape or depth rules.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// Message content broke its rules.
    #[error(transparent)]
    Content(#[from] content::ContentError),
    /// A title broke its rules.
    #[error(transparent)]
    Title(#[from] TitleError),
    /// List parameters broke their rules.
    #[error(transparent)]
    List(#[from] ListError),
    /// An idempotency key broke its syntax.
    #[error(transparent)]
    Idempotency(#[from] idempotency::IdempotencyKeyError),
    /// A thread was created with more initial messages than allowed.
    #[error("a thread may be created with at most {max} messages, got {got}")]
    TooManyMessages {
        /// The limit, [`MAX_INITIAL_MESSAGES`].
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// A role other than `user` or `assistant`.
    #[error("role must be 'user' or 'assistant', got '{0}'")]
    Role(String),
}
