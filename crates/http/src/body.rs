//! Request and response bodies: the 1 MiB limit on bytes actually read, the
//! JSON request extractor and the pre-rendered JSON response payload.
//!
//! Why not poem's `SizeLimit` and poem-openapi's `Json`: `SizeLimit` trusts
//! `Content-Length` (a chunked body passes unchecked) and answers 411 to a
//! body-less GET; `Json` refuses a missing `Content-Type` and answers in
//! plain text. Here the edge middleware buffers the body through
//! [`read_limited`], and [`JsonBody`] parses it with serde so every failure
//! becomes a 400 envelope with a precise sentence.

use std::marker::PhantomData;

use futures::StreamExt;
use poem::http::StatusCode;
use poem::{Body, IntoResponse, Request, RequestBody, Response};
use poem_openapi::registry::{
    MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Largest request body accepted, in bytes (1 MiB), counted on the bytes
/// actually received, whatever `Content-Length` claims.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// After the limit is crossed, how much more is read and thrown away so the
/// client (which is usually still sending) gets to read the 413 instead of
/// a connection reset. Bounded, so a huge upload cannot hold the server.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// The media type Weft answers with.
pub const JSON: &str = "application/json; charset=utf-8";

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// More than [`BODY_LIMIT`] bytes arrived (413).
    TooLarge,
    /// The stream broke off: the client went away or sent malformed
    /// chunking. Counted as a cancelled request; answered 400 in case
    /// anyone is still listening.
    Interrupted,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => ApiError::payload_too_large(BODY_LIMIT),
            BodyError::Interrupted => {
                ApiError::bad_request("The request body could not be read completely.")
            }
        }
    }
}

/// Reads `body` completely, failing as soon as more than [`BODY_LIMIT`]
/// bytes arrived.
///
/// # Errors
/// [`BodyError::TooLarge`] over the limit; [`BodyError::Interrupted`] when
/// the body stream fails.
pub async fn read_limited(body: Body) -> Result<Vec<u8>, BodyError> {
    let mut stream = Box::pin(body.into_bytes_stream());
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Interrupted)?;
        if data.len() + chunk.len() > BODY_LIMIT {
            let mut drained = data.len() + chunk.len();
            let drain = async {
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            return Err(BodyError::TooLarge);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// Whether a `Content-Type` value names JSON (`application/json` or any
/// `application/*+json`), parameters ignored.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON request body: the raw value (for idempotency fingerprints) and
/// the DTO parsed from it. `T` derives both `serde::Deserialize` (which
/// parses, with `deny_unknown_fields`) and `poem_openapi::Object` (which
/// only documents).
///
/// A missing `Content-Type` is read as JSON; any other non-JSON type → 415.
/// An empty body is read as `{}`.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The body as a JSON value.
    pub value: Value,
    /// The body as the operation's DTO.
    pub dto: T,
}

impl<'a, T> ApiExtractor<'a> for JsonBody<T>
where
    T: Type + DeserializeOwned + Send,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: JSON,
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if let Some(ct) = req.content_type() {
            if !is_json_content_type(ct) {
                return Err(ApiError::unsupported_media_type(ct).into());
            }
        }
        let bytes = match body.take() {
            // The edge middleware already buffered the body within the limit;
            // reading it again is a memory copy, still bounded for safety.
            Ok(b) => read_limited(b).await.map_err(ApiError::from)?,
            Err(_) => Vec::new(),
        };
        let value = parse_value(&bytes)?;
        let dto = T::deserialize(&value)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}.")))?;
        Ok(Self { value, dto })
    }
}

/// Parses body bytes as a JSON object (`{}` when empty).
///
/// # Errors
/// 400 for malformed JSON (including lone surrogates, which serde_json
/// refuses in strings) or a non-object top level.
pub fn parse_value(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {e}."
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    }
    Ok(value)
}

/// A `200` JSON response whose body was rendered already (by a `Render`
/// closure, or replayed from an idempotency record), documented with the
/// schema of `T`.
#[derive(Debug)]
pub struct JsonText<T> {
    status: StatusCode,
    body: String,
    _schema: PhantomData<fn() -> T>,
}

impl<T> JsonText<T> {
    /// A response with `status` and the JSON text `body`.
    pub fn new(status: StatusCode, body: String) -> Self {
        Self {
            status,
            body,
            _schema: PhantomData,
        }
    }

    /// A `200` with `value` serialised.
    ///
    /// # Errors
    /// 500 if serialisation fails (it cannot for Weft's DTOs).
    pub fn ok<S: serde::Serialize>(value: &S) -> Result<Self, ApiError> {
        let body = serde_json::to_string(value).map_err(|e| {
            tracing::error!(error = %e, "response serialisation failed");
            ApiError::internal()
        })?;
        Ok(Self::new(StatusCode::OK, body))
    }
}

impl<T: Send> IntoResponse for JsonText<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .status(self.status)
            .content_type(JSON)
            .body(self.body)
    }
}

impl<T: Type + Send> ApiResponse for JsonText<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Success",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: JSON,
                    schema: schema_of::<T>(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

fn schema_of<T: Type>() -> MetaSchemaRef {
    T::schema_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn empty_bodies_read_as_an_empty_object_and_arrays_are_refused() {
        assert_eq!(parse_value(b"").unwrap(), serde_json::json!({}));
        assert_eq!(parse_value(b"  \n").unwrap(), serde_json::json!({}));
        assert_eq!(
            parse_value(b"[]").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_value(b"{").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert!(
            parse_value(br#"{"a":"\ud800"}"#).is_err(),
            "lone surrogates are refused"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_on_the_bytes_read() {
        let ok = read_limited(Body::from_vec(vec![b' '; BODY_LIMIT])).await;
        assert!(ok.is_ok());
        let over = read_limited(Body::from_vec(vec![b' '; BODY_LIMIT + 1])).await;
        assert!(matches!(over, Err(BodyError::TooLarge)));
    }
}
