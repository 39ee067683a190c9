//! Contexts, ids and sample objects for the cases. Ids come from UUIDv7, so
//! within one process they sort in creation order, as the id source promises.

use std::collections::BTreeMap;

use weft_app::system::V7Ids;
use weft_domain::{
    Attachments, Content, ContentInput, Message, MessageId, Metadata, RequestId, Role, Thread,
    ThreadId, Timestamp, ToolResources, UserId,
};
use weft_ports::{IdSource, RequestContext};

/// A request context for `user` with a fresh request id and no deadline.
///
/// # Panics
/// When `user` is not a valid user id (a bug in the case).
pub fn ctx(user: &str) -> RequestContext {
    #[allow(clippy::expect_used)] // invariant: the cases only pass literal, valid user ids.
    let user = UserId::parse(user).expect("valid user id");
    RequestContext::new(user, RequestId::from_uuid(uuid::Uuid::now_v7()), None)
}

/// The process's id source: the production one, strictly increasing.
static IDS: std::sync::LazyLock<V7Ids> = std::sync::LazyLock::new(V7Ids::default);

/// A fresh thread id, later than every id minted before it in this
/// process, and than `above` when given.
pub fn thread_id_above(above: Option<&ThreadId>) -> ThreadId {
    IDS.thread_id(above)
}

/// A fresh message id, later than every id minted before it in this
/// process, and than `above` when given.
pub fn message_id_above(above: Option<&MessageId>) -> MessageId {
    IDS.message_id(above)
}

/// A fresh thread id, later than every id minted before it in this process.
pub fn thread_id() -> ThreadId {
    thread_id_above(None)
}

/// A fresh message id, later than every id minted before it in this process.
pub fn message_id() -> MessageId {
    message_id_above(None)
}

/// The fixed "now" of most cases.
pub const NOW: Timestamp = Timestamp::from_unix_seconds(1_764_300_000);

/// Metadata from literal pairs.
///
/// # Panics
/// When the pairs break the metadata rules (a bug in the case).
pub fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    #[allow(clippy::expect_used)] // invariant: the cases only pass small, valid literal maps.
    Metadata::parse(map).expect("valid metadata")
}

/// A new thread with no messages, created at `at`.
pub fn thread(at: Timestamp) -> Thread {
    Thread {
        id: thread_id(),
        created_at: at,
        updated_at: at,
        metadata: Metadata::default(),
        tool_resources: ToolResources::default(),
        title: None,
        message_count: 0,
    }
}

/// Message content holding `text`.
///
/// # Panics
/// When `text` is not valid content (a bug in the case).
pub fn content(text: &str) -> Content {
    #[allow(clippy::expect_used)] // invariant: the cases only pass short, valid texts.
    Content::parse(ContentInput::Text(text.to_owned())).expect("valid content")
}

/// A new message of `thread` by `role` holding `text`, created at `at`.
pub fn message(thread: &ThreadId, role: Role, text: &str, at: Timestamp) -> Message {
    Message {
        id: message_id(),
        thread_id: thread.clone(),
        created_at: at,
        role,
        content: content(text),
        attachments: Attachments::default(),
        metadata: Metadata::default(),
    }
}
