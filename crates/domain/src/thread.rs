//! Threads: the stored aggregate and the commands that create or change one.

use crate::{
    Metadata, MetadataPatch, NewMessage, ThreadId, Timestamp, Title, ToolResources, ValidationError,
};

/// Most messages a thread may be created with.
pub const MAX_INITIAL_MESSAGES: usize = 32;

/// A stored, live thread, as the owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    /// Its id; sorts in creation order.
    pub id: ThreadId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it or its message set last changed.
    pub updated_at: Timestamp,
    /// Client metadata.
    pub metadata: Metadata,
    /// Opaque client tool resources.
    pub tool_resources: ToolResources,
    /// Its title, if any.
    pub title: Option<Title>,
    /// The number of live messages, read in the same transaction as the thread.
    pub message_count: u64,
}

/// A request to create a thread, valid by construction: at most 32 initial
/// messages, each already valid.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateThread {
    messages: Vec<NewMessage>,
    metadata: Metadata,
    tool_resources: ToolResources,
    title: Option<Title>,
}

impl CreateThread {
    /// Assembles a create command.
    ///
    /// # Errors
    /// [`ValidationError::TooManyMessages`] with more than 32 messages.
    pub fn new(
        messages: Vec<NewMessage>,
        metadata: Metadata,
        tool_resources: ToolResources,
        title: Option<Title>,
    ) -> Result<Self, ValidationError> {
        if messages.len() > MAX_INITIAL_MESSAGES {
            return Err(ValidationError::TooManyMessages {
                max: MAX_INITIAL_MESSAGES,
                got: messages.len(),
            });
        }
        Ok(Self {
            messages,
            metadata,
            tool_resources,
            title,
        })
    }

    /// The initial messages, in order.
    pub fn messages(&self) -> &[NewMessage] {
        &self.messages
    }

    /// The new thread with `id` at `now`, counting its initial messages.
    pub fn to_thread(&self, id: ThreadId, now: Timestamp) -> Thread {
        Thread {
            id,
            created_at: now,
            updated_at: now,
            metadata: self.metadata.clone(),
            tool_resources: self.tool_resources.clone(),
            title: self.title.clone(),
            message_count: self.messages.len() as u64,
        }
    }
}

/// A change to a thread; each `None` leaves that field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadPatch {
    /// Metadata keys to set or remove.
    pub metadata: Option<MetadataPatch>,
    /// New tool resources, replacing the old.
    pub tool_resources: Option<ToolResources>,
    /// `Some(None)` clears the title; `Some(Some(t))` sets it.
    pub title: Option<Option<Title>>,
}

impl Thread {
    /// The thread after `patch`, touched at `now`; `self` is unchanged.
    ///
    /// # Errors
    /// [`ValidationError::Metadata`] when the merged metadata breaks the pair limit.
    pub fn patched(&self, patch: &ThreadPatch, now: Timestamp) -> Result<Thread, ValidationError> {
        let mut out = self.clone();
        if let Some(m) = &patch.metadata {
            out.metadata = self.metadata.merged(m)?;
        }
        if let Some(tr) = &patch.tool_resources {
            out.tool_resources = tr.clone();
        }
        if let Some(t) = &patch.title {
            out.title = t.clone();
        }
        out.updated_at = now.max(self.updated_at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attachments, Content, ContentInput, Role};

    fn msg() -> NewMessage {
        NewMessage {
            role: Role::User,
            content: Content::parse(ContentInput::Text("hi".into())).unwrap(),
            attachments: Attachments::default(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn at_most_32_initial_messages() {
        assert!(CreateThread::new(
            vec![msg(); 32],
            Metadata::default(),
            ToolResources::default(),
            None
        )
        .is_ok());
        assert_eq!(
            CreateThread::new(
                vec![msg(); 33],
                Metadata::default(),
                ToolResources::default(),
                None
            ),
            Err(ValidationError::TooManyMessages { max: 32, got: 33 })
        );
    }

    #[test]
    fn a_new_thread_counts_its_initial_messages_and_has_no_title_by_default() {
        let c = CreateThread::new(
            vec![msg(); 3],
            Metadata::default(),
            ToolResources::default(),
            None,
        )
        .unwrap();
        let id = ThreadId::parse("thread_0193f1a2b3c4d5e6f708192a3b4c5d6e").unwrap();
        let t = c.to_thread(id, Timestamp::from_unix_seconds(10));
        assert_eq!(t.message_count, 3);
        assert_eq!(t.title, None);
        assert_eq!(t.tool_resources.as_value(), &serde_json::json!({}));
        assert_eq!(t.updated_at, t.created_at);
    }

    #[test]
    fn patch_clears_the_title_with_some_none_and_keeps_it_with_none() {
        let c = CreateThread::new(
            vec![],
            Metadata::default(),
            ToolResources::default(),
            Some(Title::parse("x").unwrap()),
        )
        .unwrap();
        let t = c.to_thread(
            ThreadId::parse("thread_0193f1a2b3c4d5e6f708192a3b4c5d6e").unwrap(),
            Timestamp::from_unix_seconds(1),
        );
        let kept = t
            .patched(&ThreadPatch::default(), Timestamp::from_unix_seconds(2))
            .unwrap();
        assert_eq!(kept.title, t.title);
        assert_eq!(kept.updated_at, Timestamp::from_unix_seconds(2));
        let cleared = t
            .patched(
                &ThreadPatch {
                    title: Some(None),
                    ..Default::default()
                },
                Timestamp::from_unix_seconds(2),
            )
            .unwrap();
        assert_eq!(cleared.title, None);
    }
}
