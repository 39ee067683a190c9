//! Message content: what clients may send, and the OpenAI form Weft stores
//! and returns (API.md "Details").
//!
//! Input is a plain string (one text part) or an array of parts:
//! `{"type":"text","text":"…"}`, `{"type":"image_url","image_url":{"url":"…","detail":…}}`
//! or `{"type":"image_file","image_file":{"file_id":"…","detail":…}}`.
//! Stored and returned, a text part is
//! `{"type":"text","text":{"value":"…","annotations":[]}}` and an image part
//! keeps its input shape with `detail` always present (default `auto`), as
//! OpenAI returns them. Weft fetches nothing an image part names.

use serde::{Deserialize, Serialize};

use crate::text::{check_no_nul, check_text, TextError};

/// Most characters of text a message may hold, over all its text parts.
pub const MAX_TEXT_CHARS: usize = 256_000;
/// Most characters of an `image_url` part's `url`.
pub const MAX_IMAGE_URL_CHARS: usize = 8_192;
/// Most characters of an `image_file` part's `file_id`.
pub const MAX_FILE_ID_CHARS: usize = 128;

/// Content broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// A part of a type Weft does not store.
    #[error(
        "unsupported content part type '{0}'; the supported types are 'text', 'image_url' and 'image_file'"
    )]
    UnknownPartType(String),
    /// No part at all.
    #[error("a message needs at least one content part")]
    NoParts,
    /// A text part (or a string `content`) with no character.
    #[error("a text content part must not be empty")]
    EmptyText,
    /// Total text length over the limit.
    #[error("message text must be at most {MAX_TEXT_CHARS} characters in all, got {0}")]
    Length(usize),
    /// An image `detail` other than `auto`, `low` or `high`.
    #[error("image detail must be 'auto', 'low' or 'high', got '{0}'")]
    Detail(String),
    /// A string holds U+0000, or an image field is out of its length bounds.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Stored content did not have the stored form (data corruption).
    #[error("stored content is malformed: {0}")]
    Stored(String),
}

/// One input part, as the HTTP layer decoded it (shape only; every rule is
/// checked by [`Content::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPartInput {
    /// `{"type":"text","text":"…"}`.
    Text(String),
    /// `{"type":"image_url","image_url":{"url":"…","detail":…}}`.
    ImageUrl {
        /// The image's URL (or data URL); never fetched.
        url: String,
        /// `auto`, `low` or `high`; `None` when absent (→ `auto`).
        detail: Option<String>,
    },
    /// `{"type":"image_file","image_file":{"file_id":"…","detail":…}}`.
    ImageFile {
        /// The id of an uploaded file; Weft does not look it up.
        file_id: String,
        /// `auto`, `low` or `high`; `None` when absent (→ `auto`).
        detail: Option<String>,
    },
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

/// How closely a model should look at an image (OpenAI's `detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    /// The model chooses (the default).
    #[default]
    Auto,
    /// Low resolution.
    Low,
    /// High resolution.
    High,
}

impl ImageDetail {
    /// Parses `auto`, `low` or `high` (exactly, as OpenAI does).
    ///
    /// # Errors
    /// [`ContentError::Detail`] for anything else.
    pub fn parse(s: &str) -> Result<Self, ContentError> {
        match s {
            "auto" => Ok(Self::Auto),
            "low" => Ok(Self::Low),
            "high" => Ok(Self::High),
            other => Err(ContentError::Detail(other.chars().take(40).collect())),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Low => "low",
            Self::High => "high",
        }
    }
}

/// A stored `image_url` part's object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageUrlPart {
    /// 1–8,192 characters, no U+0000.
    pub url: String,
    /// Always present once stored.
    pub detail: ImageDetail,
}

/// A stored `image_file` part's object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFilePart {
    /// 1–128 characters, no U+0000.
    pub file_id: String,
    /// Always present once stored.
    pub detail: ImageDetail,
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
    /// An image named by URL.
    ImageUrl {
        /// The URL and detail.
        image_url: ImageUrlPart,
    },
    /// An image named by an uploaded file's id.
    ImageFile {
        /// The file id and detail.
        image_file: ImageFilePart,
    },
}

/// Valid message content: at least one part; every text part non-empty,
/// all text parts together at most 256,000 characters; image URLs 1–8,192
/// and file ids 1–128 characters; no U+0000 anywhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Content(Vec<ContentPart>);

fn detail(d: Option<String>) -> Result<ImageDetail, ContentError> {
    d.as_deref()
        .map_or(Ok(ImageDetail::Auto), ImageDetail::parse)
}

impl Content {
    /// Validates client input and turns it into the stored form.
    ///
    /// # Errors
    /// [`ContentError`] for the first rule broken: an unknown part type, no
    /// part, an empty text part, text over 256,000 characters in all, an
    /// image field out of bounds, a bad `detail`, or a U+0000.
    pub fn parse(input: ContentInput) -> Result<Self, ContentError> {
        let inputs = match input {
            ContentInput::Text(t) => vec![ContentPartInput::Text(t)],
            ContentInput::Parts(parts) => parts,
        };
        let parts = inputs
            .into_iter()
            .map(|p| match p {
                ContentPartInput::Text(value) => Ok(ContentPart::Text {
                    text: TextPart {
                        value,
                        annotations: Vec::new(),
                    },
                }),
                ContentPartInput::ImageUrl { url, detail: d } => Ok(ContentPart::ImageUrl {
                    image_url: ImageUrlPart {
                        url,
                        detail: detail(d)?,
                    },
                }),
                ContentPartInput::ImageFile { file_id, detail: d } => Ok(ContentPart::ImageFile {
                    image_file: ImageFilePart {
                        file_id,
                        detail: detail(d)?,
                    },
                }),
                ContentPartInput::Other(kind) => Err(ContentError::UnknownPartType(kind)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_parts(parts)
    }

    /// Checks every rule on parts already in the stored form.
    fn from_parts(parts: Vec<ContentPart>) -> Result<Self, ContentError> {
        if parts.is_empty() {
            return Err(ContentError::NoParts);
        }
        let mut total = 0usize;
        for part in &parts {
            match part {
                ContentPart::Text { text } => {
                    check_no_nul("message text", &text.value)?;
                    if text.value.is_empty() {
                        return Err(ContentError::EmptyText);
                    }
                    if !text.annotations.is_empty() {
                        return Err(ContentError::Stored(
                            "a text part carries annotations".to_owned(),
                        ));
                    }
                    total += text.value.chars().count();
                }
                ContentPart::ImageUrl { image_url } => {
                    check_text("image_url.url", &image_url.url, 1, MAX_IMAGE_URL_CHARS)?;
                }
                ContentPart::ImageFile { image_file } => {
                    check_text(
                        "image_file.file_id",
                        &image_file.file_id,
                        1,
                        MAX_FILE_ID_CHARS,
                    )?;
                }
            }
        }
        if total > MAX_TEXT_CHARS {
            return Err(ContentError::Length(total));
        }
        Ok(Self(parts))
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
        Self::from_parts(parts)
    }

    /// The stored (and wire) form as JSON text.
    pub fn to_stored_json(&self) -> String {
        // Serialising a Vec of plain structs of strings and unit enums cannot fail.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The parts in order.
    pub fn parts(&self) -> &[ContentPart] {
        &self.0
    }

    /// All text, text parts joined by a newline; image parts contribute
    /// nothing (used to derive titles: an image-only message gives "").
    pub fn plain_text(&self) -> String {
        self.0
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.value.as_str()),
                ContentPart::ImageUrl { .. } | ContentPart::ImageFile { .. } => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn url(u: &str, d: Option<&str>) -> ContentPartInput {
        ContentPartInput::ImageUrl {
            url: u.to_owned(),
            detail: d.map(str::to_owned),
        }
    }

    fn file(f: &str, d: Option<&str>) -> ContentPartInput {
        ContentPartInput::ImageFile {
            file_id: f.to_owned(),
            detail: d.map(str::to_owned),
        }
    }

    #[test]
    fn a_plain_string_becomes_one_text_part_in_the_openai_form() {
        let c = Content::parse(ContentInput::Text("Hello".into())).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!([{"type": "text", "text": {"value": "Hello", "annotations": []}}])
        );
    }

    #[test]
    fn image_parts_are_stored_in_the_openai_form_with_detail_auto_by_default() {
        let c = Content::parse(ContentInput::Parts(vec![
            ContentPartInput::Text("look".into()),
            url("https://example.com/a.png", None),
            file("file-abc", Some("high")),
        ]))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!([
                {"type": "text", "text": {"value": "look", "annotations": []}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
                {"type": "image_file", "image_file": {"file_id": "file-abc", "detail": "high"}}
            ])
        );
        assert_eq!(c.plain_text(), "look");
    }

    #[test]
    fn images_alone_are_a_valid_message_with_no_text() {
        let c = Content::parse(ContentInput::Parts(vec![file("f", Some("low"))])).unwrap();
        assert_eq!(c.plain_text(), "");
        assert_eq!(c.parts().len(), 1);
    }

    #[test]
    fn image_fields_are_bounded_and_detail_is_one_of_three() {
        let max_url = "u".repeat(MAX_IMAGE_URL_CHARS);
        assert!(Content::parse(ContentInput::Parts(vec![url(&max_url, None)])).is_ok());
        let over = "u".repeat(MAX_IMAGE_URL_CHARS + 1);
        assert!(matches!(
            Content::parse(ContentInput::Parts(vec![url(&over, None)])),
            Err(ContentError::Text(TextError::Length { .. }))
        ));
        assert!(Content::parse(ContentInput::Parts(vec![url("", None)])).is_err());
        let max_id = "f".repeat(MAX_FILE_ID_CHARS);
        assert!(Content::parse(ContentInput::Parts(vec![file(&max_id, None)])).is_ok());
        let over = "f".repeat(MAX_FILE_ID_CHARS + 1);
        assert!(Content::parse(ContentInput::Parts(vec![file(&over, None)])).is_err());
        assert!(Content::parse(ContentInput::Parts(vec![file("", None)])).is_err());
        assert_eq!(
            Content::parse(ContentInput::Parts(vec![url("x", Some("medium"))])),
            Err(ContentError::Detail("medium".into()))
        );
        assert!(Content::parse(ContentInput::Parts(vec![file("x", Some("AUTO"))])).is_err());
        assert!(Content::parse(ContentInput::Parts(vec![url("a\0b", None)])).is_err());
    }

    #[test]
    fn unknown_part_types_are_refused() {
        let input = ContentInput::Parts(vec![
            ContentPartInput::Text("a".into()),
            ContentPartInput::Other("input_audio".into()),
        ]);
        assert_eq!(
            Content::parse(input),
            Err(ContentError::UnknownPartType("input_audio".into()))
        );
    }

    #[test]
    fn the_length_limit_counts_all_text_parts_together() {
        let half = "x".repeat(128_000);
        let ok = ContentInput::Parts(vec![
            ContentPartInput::Text(half.clone()),
            url("https://x", None),
            ContentPartInput::Text(half.clone()),
        ]);
        assert!(Content::parse(ok).is_ok());
        let over = ContentInput::Parts(vec![
            ContentPartInput::Text(half.clone()),
            ContentPartInput::Text(half),
            ContentPartInput::Text("y".into()),
        ]);
        assert_eq!(Content::parse(over), Err(ContentError::Length(256_001)));
    }

    #[test]
    fn empty_text_parts_and_empty_content_are_refused() {
        assert_eq!(
            Content::parse(ContentInput::Text(String::new())),
            Err(ContentError::EmptyText)
        );
        assert_eq!(
            Content::parse(ContentInput::Parts(vec![])),
            Err(ContentError::NoParts)
        );
        assert_eq!(
            Content::parse(ContentInput::Parts(vec![
                ContentPartInput::Text(String::new()),
                ContentPartInput::Text("a".into()),
            ])),
            Err(ContentError::EmptyText)
        );
        assert_eq!(
            Content::parse(ContentInput::Parts(vec![
                file("f", None),
                ContentPartInput::Text(String::new()),
            ])),
            Err(ContentError::EmptyText)
        );
    }

    #[test]
    fn nul_in_text_is_refused() {
        assert!(Content::parse(ContentInput::Text("a\0".into())).is_err());
    }

    #[test]
    fn stored_content_breaking_a_rule_is_reported_as_corrupt_or_invalid() {
        for bad in [
            "[]",
            r#"[{"type":"image_url","image_url":{"url":"x"}}]"#,
            r#"[{"type":"image_url","image_url":{"url":"x","detail":"auto","extra":1}}]"#,
            r#"[{"type":"image_file","image_file":{"file_id":"","detail":"low"}}]"#,
            r#"[{"type":"refusal","refusal":"no"}]"#,
            r#"[{"type":"text","text":{"value":"","annotations":[]}}]"#,
        ] {
            assert!(Content::from_stored_json(bad).is_err(), "{bad}");
        }
    }

    fn part_input() -> impl Strategy<Value = ContentPartInput> {
        let detail = proptest::option::of(prop_oneof![
            Just("auto".to_owned()),
            Just("low".to_owned()),
            Just("high".to_owned())
        ]);
        prop_oneof![
            "[^\u{0}]{1,40}".prop_map(ContentPartInput::Text),
            ("[^\u{0}]{1,80}", detail.clone())
                .prop_map(|(url, detail)| ContentPartInput::ImageUrl { url, detail }),
            ("[^\u{0}]{1,128}", detail)
                .prop_map(|(file_id, detail)| ContentPartInput::ImageFile { file_id, detail }),
        ]
    }

    proptest! {
        #[test]
        fn stored_json_round_trips(parts in proptest::collection::vec(part_input(), 1..6)) {
            let c = Content::parse(ContentInput::Parts(parts)).unwrap();
            prop_assert_eq!(Content::from_stored_json(&c.to_stored_json()).unwrap(), c);
        }

        #[test]
        fn every_image_part_is_returned_with_a_detail(parts in proptest::collection::vec(part_input(), 1..6)) {
            let given: Vec<Option<String>> = parts.iter().map(|p| match p {
                ContentPartInput::ImageUrl { detail, .. } | ContentPartInput::ImageFile { detail, .. } => detail.clone(),
                _ => None,
            }).collect();
            let c = Content::parse(ContentInput::Parts(parts)).unwrap();
            let stored = serde_json::to_value(&c).unwrap();
            for (part, given) in stored.as_array().unwrap().iter().zip(given) {
                let kind = part["type"].as_str().unwrap();
                if kind != "text" {
                    let expected = given.unwrap_or_else(|| "auto".to_owned());
                    prop_assert_eq!(part[kind]["detail"].as_str(), Some(expected.as_str()));
                }
            }
        }

        #[test]
        fn image_urls_are_accepted_exactly_up_to_their_bound(extra in 0usize..3, len in 1usize..40) {
            let ok = "a".repeat(MAX_IMAGE_URL_CHARS - len);
            prop_assert!(Content::parse(ContentInput::Parts(vec![url(&ok, None)])).is_ok());
            let over = "é".repeat(MAX_IMAGE_URL_CHARS + 1 + extra);
            prop_assert!(Content::parse(ContentInput::Parts(vec![url(&over, None)])).is_err());
        }
    }
}
