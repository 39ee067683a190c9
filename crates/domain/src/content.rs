//! Message content: what clients may send, and the OpenAI form Weft stores
//! and returns.
//!
//! Input is a plain string or an array of parts; the only part type is
//! `text` (`{"type":"text","text":"…"}`). Stored and returned, each part is
//! `{"type":"text","text":{"value":"…","annotations":[]}}`.

use serde::{Deserialize, Serialize};

use crate::text::{check_no_nul, TextError};

/// Fewest characters of text a message may hold, over all its parts.
pub const MIN_TEXT_CHARS: usize = 1;
/// Most characters of text a message may hold, over all its parts.
pub const MAX_TEXT_CHARS: usize = 256_000;

/// Content broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// A part of a type Weft does not store.
    #[error("unsupported content part type '{0}'; only 'text' is supported")]
    UnknownPartType(String),
    /// Total text length out of bounds.
    #[error(
        "message text must be {MIN_TEXT_CHARS} to {MAX_TEXT_CHARS} characters in all, got {0}"
    )]
    Length(usize),
    /// The text holds U+0000.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Stored content did not have the stored form (data corruption).
    #[error("stored content is malformed: {0}")]
    Stored(String),
}

/// One input part, as the HTTP layer decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPartInput {
    /// `{"type":"text","text":"…"}`.
    Text(String),
    /// Any other `type`; refused by [`Content::parse`].
    Other(String),
}

/// Message content as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentInput {
    /// A plain string: one text part.
    Text(String),
    /// An array of parts.
    Parts(Vec<ContentPartInput>),
}

/// The text of a stored part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPart {
    /// The text itself.
    pub value: String,
    /// Always empty: Weft produces no annotations. Kept for the wire form.
    pub annotations: Vec<serde_json::Value>,
}

/// One stored content part, in the OpenAI message form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    /// A text part.
    Text {
        /// The text and its (empty) annotations.
        text: TextPart,
    },
}

/// Valid message content: text parts totalling 1–256,000 characters with no
/// U+0000.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Content(Vec<ContentPart>);

impl Content {
    /// Validates client input and turns it into the stored form.
    ///
    /// # Errors
    /// [`ContentError`] for an unknown part type, a NUL, or a total length
    /// outside 1–256,000 characters.
    pub fn parse(input: ContentInput) -> Result<Self, ContentError> {
        let texts = match input {
            ContentInput::Text(t) => vec![t],
            ContentInput::Parts(parts) => parts
                .into_iter()
                .map(|p| match p {
                    ContentPartInput::Text(t) => Ok(t),
                    ContentPartInput::Other(kind) => Err(ContentError::UnknownPartType(kind)),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Self::from_texts(texts)
    }

    fn from_texts(texts: Vec<String>) -> Result<Self, ContentError> {
        let mut total = 0usize;
        for t in &texts {
            check_no_nul("message text", t)?;
            total += t.chars().count();
        }
        if !(MIN_TEXT_CHARS..=MAX_TEXT_CHARS).contains(&total) {
            return Err(ContentError::Length(total));
        }
        Ok(Self(
            texts
                .into_iter()
                .map(|value| ContentPart::Text {
                    text: TextPart {
                        value,
                        annotations: Vec::new(),
                    },
                })
                .collect(),
        ))
    }

    /// Re-reads content an adapter stored with [`Content::to_stored_json`],
    /// re-checking every rule (a failure means the stored data is corrupt).
    ///
    /// # Errors
    /// [`ContentError::Stored`] when the JSON is not the stored form, or any
    /// rule of [`Content::parse`].
    pub fn from_stored_json(json: &str) -> Result<Self, ContentError> {
        let parts: Vec<ContentPart> =
            serde_json::from_str(json).map_err(|e| ContentError::Stored(e.to_string()))?;
        Self::from_texts(
            parts
                .into_iter()
                .map(|ContentPart::Text { text }| text.value)
                .collect(),
        )
    }

    /// The stored (and wire) form as JSON text.
    pub fn to_stored_json(&self) -> String {
        // Serialising a Vec of plain structs of strings cannot fail.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The parts in order.
    pub fn parts(&self) -> &[ContentPart] {
        &self.0
    }

    /// All text, parts joined by a newline (used to derive titles).
    pub fn plain_text(&self) -> String {
        self.0
            .iter()
            .map(|ContentPart::Text { text }| text.value.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_plain_string_becomes_one_text_part_in_the_openai_form() {
        let c = Content::parse(ContentInput::Text("Hello".into())).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!([{"type": "text", "text": {"value": "Hello", "annotations": []}}])
        );
    }

    #[test]
    fn unknown_part_types_are_refused() {
        let input = ContentInput::Parts(vec![
            ContentPartInput::Text("a".into()),
            ContentPartInput::Other("image_url".into()),
        ]);
        assert_eq!(
            Content::parse(input),
            Err(ContentError::UnknownPartType("image_url".into()))
        );
    }

    #[test]
    fn the_length_limit_counts_all_parts_together() {
        let half = "x".repeat(128_000);
        let ok = ContentInput::Parts(vec![
            ContentPartInput::Text(half.clone()),
            ContentPartInput::Text(half.clone()),
        ]);
        assert!(Content::parse(ok).is_ok());
        let over = ContentInput::Parts(vec![
            ContentPartInput::Text(half.clone()),
            ContentPartInput::Text(half),
            ContentPartInput::Text("y".into()),
        ]);
        assert_eq!(Content::parse(over), Err(ContentError::Length(256_001)));
        assert_eq!(
            Content::parse(ContentInput::Text(String::new())),
            Err(ContentError::Length(0))
        );
        assert_eq!(
            Content::parse(ContentInput::Parts(vec![])),
            Err(ContentError::Length(0))
        );
    }

    #[test]
    fn nul_in_text_is_refused() {
        assert!(Content::parse(ContentInput::Text("a\0".into())).is_err());
    }

    proptest! {
        #[test]
        fn stored_json_round_trips(parts in proptest::collection::vec("[^\u{0}]{1,40}", 1..5)) {
            let c = Content::parse(ContentInput::Parts(parts.into_iter().map(ContentPartInput::Text).collect())).unwrap();
            prop_assert_eq!(Content::from_stored_json(&c.to_stored_json()).unwrap(), c);
        }
    }
}
