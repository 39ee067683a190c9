//! Wire types: request bodies (parsed with serde, `deny_unknown_fields`) and
//! the OpenAI object shapes Weft answers with.
//!
//! Each type derives `serde` for the actual parsing/rendering and
//! `poem_openapi::Object` only so `/openapi.json` documents it; the two
//! derives describe the same fields. Conversions into domain commands live
//! here, and every rule is the domain's: this module only changes shapes.

use std::collections::BTreeMap;

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{MaybeUndefined, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object, Union};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_domain::{
    Attachments, Content, ContentInput, ContentPart, ContentPartInput, CreateThread, ImageDetail,
    Message, MessagePatch, Metadata, MetadataPatch, NewMessage, Page, Role, Thread, ThreadPatch,
    Title, ToolResources,
};

use crate::error::ApiError;

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

// ---------------------------------------------------------------- requests

/// Body of `POST /v1/threads`.
#[derive(Debug, Default, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateThreadBody {
    /// Messages created with the thread, in one transaction (at most 32).
    #[serde(default)]
    pub messages: Option<Vec<CreateMessageBody>>,
    /// At most 16 pairs; keys 1–64 characters, values at most 512.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Any JSON object, stored and returned as given (depth ≤ 32).
    #[serde(default)]
    pub tool_resources: Option<Value>,
    /// At most 256 characters (Weft extension).
    #[serde(default)]
    pub title: Option<String>,
}

/// Body of `POST /v1/threads/{thread_id}/messages` (and an item of a new
/// thread's `messages`).
#[derive(Debug, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateMessageBody {
    /// `user` or `assistant`.
    pub role: String,
    /// A string (one text part), or an array of at least one part: `text`,
    /// `image_url` or `image_file`. Each text part is non-empty; all text
    /// parts together hold at most 256,000 characters.
    pub content: MessageContentInput,
    /// Any JSON array, stored and returned as given (depth ≤ 32).
    #[serde(default)]
    pub attachments: Option<Value>,
    /// At most 16 pairs; keys 1–64 characters, values at most 512.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Body of `POST /v1/threads/{thread_id}`.
#[derive(Debug, Default, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ModifyThreadBody {
    /// Keys to set; a key whose value is `null` is removed. At most 16 pairs
    /// after the merge.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    /// Replaces the stored tool resources.
    #[serde(default)]
    pub tool_resources: Option<Value>,
    /// A new title (at most 256 characters), or `null` to clear it.
    #[serde(default)]
    pub title: MaybeUndefined<String>,
}

/// Body of `POST /v1/threads/{thread_id}/messages/{message_id}`.
#[derive(Debug, Default, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ModifyMessageBody {
    /// Keys to set; a key whose value is `null` is removed. At most 16 pairs
    /// after the merge.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
}

impl CreateThreadBody {
    /// The domain command.
    ///
    /// # Errors
    /// 400 for the first rule broken.
    pub fn into_command(self) -> Result<CreateThread, ApiError> {
        let messages = self
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(CreateMessageBody::into_new_message)
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = Metadata::parse(self.metadata.unwrap_or_default()).map_err(invalid)?;
        let tool_resources = match self.tool_resources {
            None | Some(Value::Null) => ToolResources::default(),
            Some(v) => ToolResources::parse(v).map_err(invalid)?,
        };
        let title = self
            .title
            .as_deref()
            .map(Title::parse)
            .transpose()
            .map_err(invalid)?;
        CreateThread::new(messages, metadata, tool_resources, title).map_err(invalid)
    }
}

impl CreateMessageBody {
    /// The domain value.
    ///
    /// # Errors
    /// 400 for the first rule broken.
    pub fn into_new_message(self) -> Result<NewMessage, ApiError> {
        let role = Role::parse(&self.role).map_err(invalid)?;
        let content = Content::parse(content_input(self.content.0)?).map_err(invalid)?;
        let attachments = match self.attachments {
            None | Some(Value::Null) => Attachments::default(),
            Some(v) => Attachments::parse(v).map_err(invalid)?,
        };
        let metadata = Metadata::parse(self.metadata.unwrap_or_default()).map_err(invalid)?;
        Ok(NewMessage {
            role,
            content,
            attachments,
            metadata,
        })
    }
}

/// Decodes the two input forms of `content`; the domain judges the rest.
fn content_input(v: Value) -> Result<ContentInput, ApiError> {
    match v {
        Value::String(s) => Ok(ContentInput::Text(s)),
        Value::Array(parts) => parts
            .into_iter()
            .map(content_part)
            .collect::<Result<Vec<_>, _>>()
            .map(ContentInput::Parts),
        _ => Err(ApiError::bad_request(
            "content must be a string or an array of content parts.",
        )),
    }
}

/// One input part's shape: a `type` and exactly the one field that type
/// names (API.md "Details"); an unknown `type` is left for the domain to
/// refuse with its message.
fn content_part(v: Value) -> Result<ContentPartInput, ApiError> {
    let Value::Object(mut part) = v else {
        return Err(ApiError::bad_request(
            "Each content part must be an object with a 'type'.",
        ));
    };
    let kind = match part.remove("type") {
        Some(Value::String(k)) => k,
        _ => {
            return Err(ApiError::bad_request(
                "Each content part must have a string 'type'.",
            ))
        }
    };
    let field = match kind.as_str() {
        "text" | "image_url" | "image_file" => kind.as_str(),
        _ => return Ok(ContentPartInput::Other(kind.chars().take(40).collect())),
    };
    let Some(inner) = part.remove(field) else {
        return Err(ApiError::bad_request(format!(
            "A '{field}' content part must have a '{field}' field."
        )));
    };
    if let Some(extra) = part.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unknown field '{}' in a '{field}' content part.",
            extra.chars().take(64).collect::<String>()
        )));
    }
    let shape = |e: serde_json::Error| {
        ApiError::bad_request(format!("Invalid '{field}' in a content part: {e}."))
    };
    match field {
        "text" => match inner {
            Value::String(t) => Ok(ContentPartInput::Text(t)),
            _ => Err(ApiError::bad_request(
                "A 'text' content part must have a string 'text'.",
            )),
        },
        "image_url" => {
            let i: ImageUrlInput = serde_json::from_value(inner).map_err(shape)?;
            Ok(ContentPartInput::ImageUrl {
                url: i.url,
                detail: i.detail,
            })
        }
        _ => {
            let i: ImageFileInput = serde_json::from_value(inner).map_err(shape)?;
            Ok(ContentPartInput::ImageFile {
                file_id: i.file_id,
                detail: i.detail,
            })
        }
    }
}

/// `detail` of an image part: how closely a model should look.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ImageDetailDoc {
    /// The model chooses (the default).
    Auto,
    /// Low resolution.
    Low,
    /// High resolution.
    High,
}

/// The object of an `image_url` part, on input.
#[derive(Debug, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ImageUrlInput {
    /// 1–8,192 characters (a URL or a data URL); Weft fetches nothing.
    #[oai(validator(min_length = 1, max_length = 8192))]
    pub url: String,
    // Parsed as a plain string so the domain alone judges it; the schema
    // shows `detail_doc` under this name instead.
    #[serde(default)]
    #[oai(skip)]
    #[allow(missing_docs)]
    pub detail: Option<String>,
    /// `auto` (the default), `low` or `high`.
    #[serde(skip)]
    #[oai(rename = "detail")]
    pub detail_doc: Option<ImageDetailDoc>,
}

/// The object of an `image_file` part, on input.
#[derive(Debug, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ImageFileInput {
    /// 1–128 characters; Weft does not look the file up.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub file_id: String,
    // As in `ImageUrlInput`.
    #[serde(default)]
    #[oai(skip)]
    #[allow(missing_docs)]
    pub detail: Option<String>,
    /// `auto` (the default), `low` or `high`.
    #[serde(skip)]
    #[oai(rename = "detail")]
    pub detail_doc: Option<ImageDetailDoc>,
}

// The three part shapes below only document the input; `content_part`
// parses it, so a broken part gets a precise 400 sentence.

/// A text part: `{"type":"text","text":"…"}`.
#[derive(Debug, Object)]
pub struct TextPartInput {
    /// Non-empty text.
    pub text: String,
}

/// An image named by URL: `{"type":"image_url","image_url":{…}}`.
#[derive(Debug, Object)]
pub struct ImageUrlPartInput {
    /// The image's URL and detail.
    pub image_url: ImageUrlInput,
}

/// An image named by an uploaded file's id: `{"type":"image_file","image_file":{…}}`.
#[derive(Debug, Object)]
pub struct ImageFilePartInput {
    /// The file's id and detail.
    pub image_file: ImageFileInput,
}

/// One content part of a new message, by `type`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum ContentPartInputDoc {
    /// A text part.
    #[oai(mapping = "text")]
    Text(TextPartInput),
    /// An image by URL.
    #[oai(mapping = "image_url")]
    ImageUrl(ImageUrlPartInput),
    /// An image by uploaded file id.
    #[oai(mapping = "image_file")]
    ImageFile(ImageFilePartInput),
}

/// A message's `content` as sent: kept as raw JSON so [`content_input`]
/// can say exactly what is wrong. Documented as a string or an array of
/// [`ContentPartInputDoc`] (at least one).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct MessageContentInput(pub Value);

impl Type for MessageContentInput {
    const IS_REQUIRED: bool = true;
    type RawValueType = Value;
    type RawElementValueType = Value;

    fn name() -> Cow<'static, str> {
        "MessageContentInput".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let parts = MetaSchema {
            items: Some(Box::new(ContentPartInputDoc::schema_ref())),
            min_items: Some(1),
            ..MetaSchema::new("array")
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![
                MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                MetaSchemaRef::Inline(Box::new(parts)),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn register(registry: &mut Registry) {
        ContentPartInputDoc::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Value> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for MessageContentInput {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Self(value.unwrap_or_default()))
    }
}

impl ToJSON for MessageContentInput {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

fn metadata_patch(
    m: Option<BTreeMap<String, Option<String>>>,
) -> Result<Option<MetadataPatch>, ApiError> {
    m.map(MetadataPatch::parse).transpose().map_err(invalid)
}

impl ModifyThreadBody {
    /// The domain patch.
    ///
    /// # Errors
    /// 400 for the first rule broken.
    pub fn into_patch(self) -> Result<ThreadPatch, ApiError> {
        let tool_resources = match self.tool_resources {
            None | Some(Value::Null) => None,
            Some(v) => Some(ToolResources::parse(v).map_err(invalid)?),
        };
        let title = match self.title {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(t) => Some(Some(Title::parse(&t).map_err(invalid)?)),
        };
        Ok(ThreadPatch {
            metadata: metadata_patch(self.metadata)?,
            tool_resources,
            title,
        })
    }
}

impl ModifyMessageBody {
    /// The domain patch.
    ///
    /// # Errors
    /// 400 for the first rule broken.
    pub fn into_patch(self) -> Result<MessagePatch, ApiError> {
        Ok(MessagePatch {
            metadata: metadata_patch(self.metadata)?.unwrap_or_default(),
        })
    }
}

// ---------------------------------------------------------------- responses

/// A thread, in the OpenAI shape plus Weft's `title`, `updated_at` and
/// `message_count`.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ThreadObject {
    /// `thread_…`; sorts in creation order.
    pub id: String,
    /// Always `thread`.
    pub object: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change to the thread or its message set.
    pub updated_at: i64,
    /// Client metadata.
    pub metadata: BTreeMap<String, String>,
    /// As given by the client; `{}` by default.
    pub tool_resources: Value,
    /// The title, or `null`.
    pub title: Option<String>,
    /// Exactly the number of live messages, read in the same transaction.
    pub message_count: u64,
}

impl From<&Thread> for ThreadObject {
    fn from(t: &Thread) -> Self {
        Self {
            id: t.id.as_str().to_owned(),
            object: "thread".to_owned(),
            created_at: t.created_at.unix_seconds(),
            updated_at: t.updated_at.unix_seconds(),
            metadata: t.metadata.as_map().clone(),
            tool_resources: t.tool_resources.as_value().clone(),
            title: t.title.as_ref().map(|t| t.as_str().to_owned()),
            message_count: t.message_count,
        }
    }
}

/// The text of a content part.
#[derive(Debug, Clone, Serialize, Object)]
pub struct TextContent {
    /// The text.
    pub value: String,
    /// Always empty.
    pub annotations: Vec<Value>,
}

/// `{"type":"text","text":{…}}`.
#[derive(Debug, Clone, Serialize, Object)]
pub struct TextPartObject {
    /// The text and its annotations.
    pub text: TextContent,
}

/// The object of a returned `image_url` part.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ImageUrlObject {
    /// As given.
    pub url: String,
    /// As given, `auto` when it was not.
    pub detail: ImageDetailDoc,
}

/// `{"type":"image_url","image_url":{…}}`.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ImageUrlPartObject {
    /// The URL and detail.
    pub image_url: ImageUrlObject,
}

/// The object of a returned `image_file` part.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ImageFileObject {
    /// As given.
    pub file_id: String,
    /// As given, `auto` when it was not.
    pub detail: ImageDetailDoc,
}

/// `{"type":"image_file","image_file":{…}}`.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ImageFilePartObject {
    /// The file id and detail.
    pub image_file: ImageFileObject,
}

/// One content part of a message, in OpenAI's form, by `type`.
#[derive(Debug, Clone, Serialize, Union)]
#[serde(tag = "type", rename_all = "snake_case")]
#[oai(discriminator_name = "type", one_of)]
pub enum ContentPartObject {
    /// A text part.
    #[oai(mapping = "text")]
    Text(TextPartObject),
    /// An image by URL.
    #[oai(mapping = "image_url")]
    ImageUrl(ImageUrlPartObject),
    /// An image by uploaded file id.
    #[oai(mapping = "image_file")]
    ImageFile(ImageFilePartObject),
}

impl Serialize for ImageDetailDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::Auto => "auto",
            Self::Low => "low",
            Self::High => "high",
        })
    }
}

impl From<ImageDetail> for ImageDetailDoc {
    fn from(d: ImageDetail) -> Self {
        match d {
            ImageDetail::Auto => Self::Auto,
            ImageDetail::Low => Self::Low,
            ImageDetail::High => Self::High,
        }
    }
}

impl From<&ContentPart> for ContentPartObject {
    fn from(p: &ContentPart) -> Self {
        match p {
            ContentPart::Text { text } => Self::Text(TextPartObject {
                text: TextContent {
                    value: text.value.clone(),
                    annotations: Vec::new(),
                },
            }),
            ContentPart::ImageUrl { image_url } => Self::ImageUrl(ImageUrlPartObject {
                image_url: ImageUrlObject {
                    url: image_url.url.clone(),
                    detail: image_url.detail.into(),
                },
            }),
            ContentPart::ImageFile { image_file } => Self::ImageFile(ImageFilePartObject {
                image_file: ImageFileObject {
                    file_id: image_file.file_id.clone(),
                    detail: image_file.detail.into(),
                },
            }),
        }
    }
}

/// A message, in the OpenAI shape.
#[derive(Debug, Clone, Serialize, Object)]
pub struct MessageObject {
    /// `msg_…`; sorts in creation order.
    pub id: String,
    /// Always `thread.message`.
    pub object: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The thread it belongs to.
    pub thread_id: String,
    /// Always `completed`.
    pub status: String,
    /// Always `null`.
    pub incomplete_details: Option<Value>,
    /// Equal to `created_at`.
    pub completed_at: Option<i64>,
    /// Always `null`.
    pub incomplete_at: Option<i64>,
    /// `user` or `assistant`.
    pub role: String,
    /// The parts, in order: text and images.
    pub content: Vec<ContentPartObject>,
    /// Always `null`.
    pub assistant_id: Option<String>,
    /// Always `null`.
    pub run_id: Option<String>,
    /// As given by the client; `[]` by default.
    pub attachments: Value,
    /// Client metadata.
    pub metadata: BTreeMap<String, String>,
}

impl From<&Message> for MessageObject {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.as_str().to_owned(),
            object: "thread.message".to_owned(),
            created_at: m.created_at.unix_seconds(),
            thread_id: m.thread_id.as_str().to_owned(),
            status: "completed".to_owned(),
            incomplete_details: None,
            completed_at: Some(m.created_at.unix_seconds()),
            incomplete_at: None,
            role: m.role.as_str().to_owned(),
            content: m
                .content
                .parts()
                .iter()
                .map(ContentPartObject::from)
                .collect(),
            assistant_id: None,
            run_id: None,
            attachments: m.attachments.as_value().clone(),
            metadata: m.metadata.as_map().clone(),
        }
    }
}

/// A page of threads.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ThreadList {
    /// Always `list`.
    pub object: String,
    /// The threads, in the requested order.
    pub data: Vec<ThreadObject>,
    /// Id of the first object of `data`, `null` when empty.
    pub first_id: Option<String>,
    /// Id of the last object of `data`, `null` when empty.
    pub last_id: Option<String>,
    /// Whether more objects lie beyond the page in the direction of travel.
    pub has_more: bool,
}

/// A page of messages.
#[derive(Debug, Clone, Serialize, Object)]
pub struct MessageList {
    /// Always `list`.
    pub object: String,
    /// The messages, in the requested order.
    pub data: Vec<MessageObject>,
    /// Id of the first object of `data`, `null` when empty.
    pub first_id: Option<String>,
    /// Id of the last object of `data`, `null` when empty.
    pub last_id: Option<String>,
    /// Whether more objects lie beyond the page in the direction of travel.
    pub has_more: bool,
}

impl From<&Page<Thread>> for ThreadList {
    fn from(p: &Page<Thread>) -> Self {
        let data: Vec<ThreadObject> = p.items.iter().map(ThreadObject::from).collect();
        Self {
            object: "list".to_owned(),
            first_id: data.first().map(|t| t.id.clone()),
            last_id: data.last().map(|t| t.id.clone()),
            data,
            has_more: p.has_more,
        }
    }
}

impl From<&Page<Message>> for MessageList {
    fn from(p: &Page<Message>) -> Self {
        let data: Vec<MessageObject> = p.items.iter().map(MessageObject::from).collect();
        Self {
            object: "list".to_owned(),
            first_id: data.first().map(|m| m.id.clone()),
            last_id: data.last().map(|m| m.id.clone()),
            data,
            has_more: p.has_more,
        }
    }
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, Object)]
pub struct DeletedObject {
    /// The deleted object's id.
    pub id: String,
    /// `thread.deleted` or `thread.message.deleted`.
    pub object: String,
    /// Always `true`.
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn thread_body(v: Value) -> Result<CreateThread, ApiError> {
        serde_json::from_value::<CreateThreadBody>(v)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .into_command()
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<CreateThreadBody>(json!({"nope": 1})).is_err());
        assert!(serde_json::from_value::<ModifyMessageBody>(json!({"role": "user"})).is_err());
        assert!(serde_json::from_value::<CreateMessageBody>(
            json!({"role": "user", "content": "x", "file_ids": []})
        )
        .is_err());
    }

    fn message(c: Value) -> Result<NewMessage, ApiError> {
        serde_json::from_value::<CreateMessageBody>(json!({"role": "user", "content": c}))
            .unwrap()
            .into_new_message()
    }

    #[test]
    fn content_accepts_a_string_text_parts_and_image_parts() {
        assert!(message(json!("hi")).is_ok());
        assert!(message(
            json!([{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}])
        )
        .is_ok());
        assert!(message(json!([{"type": "image_url", "image_url": {"url": "x"}}])).is_ok());
        assert!(
            message(json!([{"type": "image_url", "image_url": {"url": "x", "detail": null}}]))
                .is_ok()
        );
        assert!(message(
            json!([{"type": "image_file", "image_file": {"file_id": "f", "detail": "low"}}])
        )
        .is_ok());
        for bad in [
            json!([{"type": "text", "text": {"value": "x"}}]),
            json!([{"type": "text"}]),
            json!([{"type": "text", "text": "x", "image_url": {"url": "x"}}]),
            json!([{"type": "image_url", "image_url": "https://x"}]),
            json!([{"type": "image_url", "image_url": {"url": "x", "detail": "auto", "size": 1}}]),
            json!([{"type": "image_url", "image_url": {"url": 5}}]),
            json!([{"type": "image_url", "image_url": {}}]),
            json!([{"type": "image_file", "image_file": {"file_id": "f", "detail": "medium"}}]),
            json!([{"type": "image_file", "file_id": "f"}]),
            json!([{"type": "input_audio", "input_audio": {}}]),
            json!(42),
            json!(""),
            json!([]),
        ] {
            assert!(message(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_parts_are_returned_in_openais_form() {
        let msg = message(json!([
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            {"type": "image_file", "image_file": {"file_id": "file-1", "detail": "high"}},
            {"type": "text", "text": "caption"}
        ]))
        .unwrap();
        let parts: Vec<Value> = msg
            .content
            .parts()
            .iter()
            .map(|p| serde_json::to_value(ContentPartObject::from(p)).unwrap())
            .collect();
        assert_eq!(
            parts,
            vec![
                json!({"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "auto"}}),
                json!({"type": "image_file", "image_file": {"file_id": "file-1", "detail": "high"}}),
                json!({"type": "text", "text": {"value": "caption", "annotations": []}}),
            ]
        );
    }

    #[test]
    fn a_null_title_clears_and_an_absent_one_keeps() {
        let p: ModifyThreadBody = serde_json::from_value(json!({"title": null})).unwrap();
        assert_eq!(p.into_patch().unwrap().title, Some(None));
        let p: ModifyThreadBody = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p.into_patch().unwrap().title, None);
    }

    #[test]
    fn limits_are_the_domain_rules() {
        assert!(thread_body(json!({"title": "t".repeat(257)})).is_err());
        assert!(thread_body(json!({"tool_resources": []})).is_err());
        let many: Vec<Value> = (0..33)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        assert!(thread_body(json!({"messages": many})).is_err());
        assert!(thread_body(json!({})).is_ok());
    }
}
