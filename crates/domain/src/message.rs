//! Messages: the stored aggregate and the commands that create or change one.

use std::fmt;

use serde::Serialize;

use crate::{
    Attachments, Content, MessageId, Metadata, MetadataPatch, ThreadId, Timestamp, ValidationError,
};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The end user.
    User,
    /// The assistant (a model, or the client speaking for one).
    Assistant,
}

impl Role {
    /// Parses `user` or `assistant`.
    ///
    /// # Errors
    /// [`ValidationError::Role`] for anything else.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            other => Err(ValidationError::Role(other.chars().take(40).collect())),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored, live message. Every field is a validated domain value, so a
/// `Message` is valid by construction; adapters rebuild one from a row by
/// re-parsing each column.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id; sorts in creation order within the thread.
    pub id: MessageId,
    /// The thread it belongs to.
    pub thread_id: ThreadId,
    /// When it was created.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub role: Role,
    /// Its text parts.
    pub content: Content,
    /// Opaque client attachments.
    pub attachments: Attachments,
    /// Client metadata.
    pub metadata: Metadata,
}

/// What a new message consists of, before it has an id or a time. Built only
/// from valid parts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text parts.
    pub content: Content,
    /// Opaque client attachments.
    pub attachments: Attachments,
    /// Client metadata.
    pub metadata: Metadata,
}

impl NewMessage {
    /// Gives the new message its identity in `thread_id`.
    pub fn into_message(self, id: MessageId, thread_id: ThreadId, now: Timestamp) -> Message {
        Message {
            id,
            thread_id,
            created_at: now,
            role: self.role,
            content: self.content,
            attachments: self.attachments,
            metadata: self.metadata,
        }
    }
}

/// A change to a message: only its metadata may change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagePatch {
    /// Keys to set or (with `None`) remove.
    pub metadata: MetadataPatch,
}

impl Message {
    /// The message after `patch`; `self` is unchanged.
    ///
    /// # Errors
    /// [`ValidationError::Metadata`] when the merged metadata breaks the pair limit.
    pub fn patched(&self, patch: &MessagePatch) -> Result<Message, ValidationError> {
        let mut out = self.clone();
        out.metadata = self.metadata.merged(&patch.metadata)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_wire_names_only() {
        assert_eq!(Role::parse("user").unwrap(), Role::User);
        assert_eq!(Role::parse("assistant").unwrap(), Role::Assistant);
        assert!(Role::parse("system").is_err());
        assert!(Role::parse("User").is_err());
    }
}
