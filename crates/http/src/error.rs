//! The one error type of the HTTP layer and the OpenAI error envelope.
//!
//! Every error response Weft sends — from a use case, an extractor, the
//! router, the auth check, a panic — ends up as [`ApiError`] rendered by
//! [`ApiError::into_envelope_response`]. This module is the only place that
//! maps errors to status codes; 5xx bodies carry a fixed sentence, never the
//! cause (the cause is logged with the request id instead).

use std::fmt;

use poem::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use poem::http::StatusCode;
use poem::{error::ResponseError, Response};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};
use serde::Serialize;
use weft_app::AppError;

/// The body of every error: `{"error": {...}}`, as OpenAI sends it.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ErrorEnvelope {
    /// The error itself.
    pub error: ErrorBody,
}

/// What went wrong, in the OpenAI shape.
#[derive(Debug, Clone, Serialize, Object)]
pub struct ErrorBody {
    /// A human-readable sentence; never SQL, driver or panic text.
    pub message: String,
    /// `invalid_request_error` for 4xx, `server_error` for 5xx.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    /// Always `null` (kept for OpenAI compatibility).
    pub param: Option<String>,
    /// `invalid_api_key` (401), `idempotency_key_reused` (409), else `null`.
    pub code: Option<String>,
}

/// The sentence every 500 carries.
const INTERNAL_MESSAGE: &str =
    "The server had an error while processing your request. It changed nothing; please retry.";
/// The sentence every 503 carries.
const UNAVAILABLE_MESSAGE: &str = "The database is unavailable or busy right now. Please retry (with the same Idempotency-Key for creates).";

/// The header that tells the official SDKs not to retry (they otherwise
/// retry 409 and some 4xx; API.md "Safety guarantees").
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// `Retry-After` of every 503, in seconds: the causes (a pool queue, a
/// database restart, the body budget) pass in about that time, and the
/// SDKs honour the header over their own backoff.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The retry hints of API.md "Safety guarantees", the one place they are
/// decided: every `4xx` except `408` and `429` carries
/// `x-should-retry: false`, every `503` carries `Retry-After`.
pub fn apply_retry_hints(resp: &mut Response) {
    let status = resp.status();
    if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        resp.headers_mut()
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !resp.headers().contains_key(RETRY_AFTER) {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
}

/// The sentence of a 503 for the in-flight body budget.
const BODIES_BUSY_MESSAGE: &str =
    "The server is reading too many request bodies right now. It changed nothing; please retry shortly.";

/// What a handler answers when it fails: a status, a safe message and an
/// optional OpenAI error code. Built only through the constructors below,
/// so a 5xx can never carry a cause in its message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// The object a `404` was about, for the OpenAI-style message.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A thread, by the id the client sent.
    Thread(&'a str),
    /// A message of a thread, by the ids the client sent.
    Message {
        /// The thread id from the path.
        thread: &'a str,
        /// The message id from the path.
        message: &'a str,
    },
}

impl ApiError {
    /// A `4xx` with `message` shown to the client as is.
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        debug_assert!(status.is_client_error());
        Self {
            status,
            message: message.into(),
            code: None,
        }
    }

    /// `400 invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message)
    }

    /// `401` with code `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            code: Some("invalid_api_key"),
        }
    }

    /// `404` for `target`: the same answer for missing, foreign and deleted.
    pub fn not_found(target: Target<'_>) -> Self {
        let message = match target {
            Target::Thread(id) => format!("No thread found with id '{}'.", shorten(id)),
            Target::Message { thread, message } => format!(
                "No message found with id '{}' in thread '{}'.",
                shorten(message),
                shorten(thread)
            ),
        };
        Self::client(StatusCode::NOT_FOUND, message)
    }

    /// `413`: the body went over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }

    /// `415`: a body that is not JSON. `content_type` is the value when it
    /// is printable, `None` when it was repeated or held other bytes.
    pub fn unsupported_media_type(content_type: Option<&str>) -> Self {
        let message = match content_type {
            Some(ct) => format!(
                "Unsupported Content-Type '{}'; send 'application/json'.",
                shorten(ct)
            ),
            None => {
                "Unsupported Content-Type: send one 'application/json' header in visible ASCII."
                    .to_owned()
            }
        };
        Self::client(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// `415`: a `Content-Encoding` other than one of `identity`, `gzip`,
    /// `x-gzip`; `None` when it was repeated or held other bytes.
    pub fn unsupported_encoding(coding: Option<&str>) -> Self {
        let shown = coding.map_or_else(String::new, |c| format!(" '{}'", shorten(c)));
        Self::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Unsupported Content-Encoding{shown}; send one of 'identity', 'gzip' or 'x-gzip', once."
            ),
        )
    }

    /// `408`: the body did not arrive within `timeout` of the headers
    /// (`WEFT_BODY_TIMEOUT_MS`). Retryable, so no `x-should-retry: false`.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        Self::client(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} ms of its headers.",
                timeout.as_millis()
            ),
        )
    }

    /// `503`: the bodies being read already hold the in-flight budget
    /// (`WEFT_MAX_INFLIGHT_BODY_BYTES`). Carries `Retry-After` like every 503.
    pub fn bodies_busy() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: BODIES_BUSY_MESSAGE.to_owned(),
            code: None,
        }
    }

    /// `500`, after the caller logged the cause.
    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: INTERNAL_MESSAGE.to_owned(),
            code: None,
        }
    }

    /// `503`, after the caller logged the cause.
    pub fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: UNAVAILABLE_MESSAGE.to_owned(),
            code: None,
        }
    }

    /// Maps a use case's error; `target` names what a `NotFound` was about.
    /// Unexpected and unavailable errors are logged here, with their whole
    /// source chain, inside the request's span (which carries the request id).
    pub fn from_app(err: AppError, target: Target<'_>) -> Self {
        match err {
            AppError::Invalid(e) => Self::bad_request(e.to_string()),
            AppError::NotFound => Self::not_found(target),
            AppError::InvalidCursor => Self::bad_request(
                "Invalid cursor: 'after'/'before' must name an object of this list.",
            ),
            AppError::NoUserMessage => {
                Self::bad_request("The thread has no user message to derive a title from.")
            }
            AppError::IdempotencyKeyReused => Self {
                status: StatusCode::CONFLICT,
                message:
                    "This Idempotency-Key was already used with a different request path or body."
                        .to_owned(),
                code: Some("idempotency_key_reused"),
            },
            AppError::Busy => {
                tracing::warn!("transaction conflicts exhausted the retries; answering 503");
                Self::unavailable()
            }
            AppError::Unavailable(source) => {
                tracing::error!(error = %chain(source.as_ref()), "storage unavailable; answering 503");
                Self::unavailable()
            }
            AppError::Unexpected(source) => {
                tracing::error!(error = %chain(source.as_ref()), "unexpected error; answering 500");
                Self::internal()
            }
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The envelope this error renders as.
    pub fn envelope(&self) -> ErrorEnvelope {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        ErrorEnvelope {
            error: ErrorBody {
                message: self.message.clone(),
                kind: kind.to_owned(),
                param: None,
                code: self.code.map(str::to_owned),
            },
        }
    }

    /// The complete HTTP response: status and JSON envelope.
    pub fn into_envelope_response(self) -> Response {
        let body = serde_json::to_string(&self.envelope())
            // invariant: the envelope is plain strings and options; a failure here is
            // unreachable, and the fallback is still a valid envelope.
            .unwrap_or_else(|_| {
                r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                    .to_owned()
            });
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("application/json; charset=utf-8")
            .body(body);
        apply_retry_hints(&mut resp);
        resp
    }

    /// Turns any error poem or poem-openapi raised (router, extractors,
    /// security scheme, body reading) into the envelope, keeping the status
    /// but never poem's plain-text body. `method` and `path` make the 404/405
    /// sentences useful.
    pub fn from_poem(err: poem::Error, method: &str, path: &str) -> Self {
        if err.is::<ApiError>() {
            if let Ok(api) = err.downcast::<ApiError>() {
                return api;
            }
            return Self::internal();
        }
        let status = err.status();
        match status {
            StatusCode::NOT_FOUND => Self::client(
                status,
                format!("Invalid URL ({} {}).", shorten_to(method, 16), shorten(path)),
            ),
            StatusCode::METHOD_NOT_ALLOWED => Self::client(
                status,
                format!(
                    "Method {} is not allowed for {}.",
                    shorten_to(method, 16),
                    shorten(path)
                ),
            ),
            StatusCode::UNAUTHORIZED => Self::unauthorized(
                "Missing or invalid credentials: send 'Authorization: Bearer <token>' with a valid token.",
            ),
            // Weft's own body reader answers 413 with the limit in the
            // sentence; this is a 413 raised inside poem, which knows none.
            StatusCode::PAYLOAD_TOO_LARGE => Self::client(status, "Request body is too large."),
            s if s.is_client_error() => Self::client(s, err.to_string()),
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(error = %err, "poem error; answering 503");
                Self::unavailable()
            }
            _ => {
                tracing::error!(error = %err, status = status.as_u16(), "poem error; answering 500");
                Self::internal()
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        Self {
            status: self.status,
            message: self.message.clone(),
            code: self.code,
        }
        .into_envelope_response()
    }
}

/// Documents the error statuses every `/v1` operation may answer, all with
/// the envelope schema, so the OpenAPI document matches behaviour.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let doc: [(u16, &'static str); 10] = [
            (
                400,
                "Malformed JSON, wrong types, unknown fields, broken limits, bad query values, a bad Idempotency-Key, a body labelled gzip that is not",
            ),
            (
                401,
                "Missing or invalid bearer token (code `invalid_api_key`); checked before any byte of the body is read",
            ),
            (404, "Unknown, foreign or deleted id"),
            (405, "Wrong method on a known route"),
            (
                408,
                "The body did not arrive within WEFT_BODY_TIMEOUT_MS (default 30 s) of the headers",
            ),
            (
                409,
                "Idempotency-Key reused with another path or body (code `idempotency_key_reused`)",
            ),
            (
                413,
                "Request body over WEFT_MAX_BODY_BYTES (default 4 MiB), counted after decoding",
            ),
            (
                415,
                "A body whose Content-Type is not JSON, or whose Content-Encoding is not one of identity, gzip, x-gzip",
            ),
            (500, "Anything else; nothing was changed"),
            (
                503,
                "The database is unavailable, busy or timed out, or the server is reading too many bodies; retry after Retry-After seconds",
            ),
        ];
        MetaResponses {
            responses: doc
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: envelope_schema(),
                    }],
                    headers: hint_headers(status),
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorEnvelope::register(registry);
    }
}

fn envelope_schema() -> MetaSchemaRef {
    ErrorEnvelope::schema_ref()
}

/// The retry-hint headers [`apply_retry_hints`] puts on `status`, for the
/// OpenAPI document.
fn hint_headers(status: u16) -> Vec<MetaHeader> {
    let header = |name: &str, description: &str, ty: &'static str| MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new(ty))),
    };
    match status {
        400..=499 if status != 408 && status != 429 => vec![header(
            "x-should-retry",
            "Always `false`: retrying the same request cannot succeed.",
            "string",
        )],
        503 => vec![header(
            "Retry-After",
            "Seconds to wait before retrying.",
            "integer",
        )],
        _ => vec![],
    }
}

/// Client input echoed in messages is cut short so an error cannot be used
/// to reflect megabytes back.
fn shorten(s: &str) -> String {
    shorten_to(s, 100)
}

/// `s` cut to `max` characters (an ellipsis marks the cut).
fn shorten_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// The error and all its sources, `: `-separated, for one log field.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_say_server_error_and_carry_no_cause() {
        let e = ApiError::internal().envelope();
        assert_eq!(e.error.kind, "server_error");
        assert_eq!(e.error.message, INTERNAL_MESSAGE);
        assert_eq!(
            ApiError::unavailable().envelope().error.kind,
            "server_error"
        );
    }

    #[test]
    fn client_errors_say_do_not_retry_except_408_and_429_and_503_says_when() {
        for status in [400u16, 401, 404, 405, 409, 413, 415, 422] {
            let resp = ApiError::client(StatusCode::from_u16(status).unwrap(), "x")
                .into_envelope_response();
            assert_eq!(resp.headers()[SHOULD_RETRY], "false", "{status}");
            assert!(!resp.headers().contains_key(RETRY_AFTER));
        }
        let reused = ApiError::from_app(AppError::IdempotencyKeyReused, Target::Thread("t"));
        assert_eq!(
            reused.into_envelope_response().headers()[SHOULD_RETRY],
            "false"
        );
        for e in [
            ApiError::body_timeout(std::time::Duration::from_secs(1)),
            ApiError::client(StatusCode::TOO_MANY_REQUESTS, "slow down"),
            ApiError::internal(),
        ] {
            let resp = e.into_envelope_response();
            assert!(
                !resp.headers().contains_key(SHOULD_RETRY),
                "{}",
                resp.status()
            );
        }
        for e in [ApiError::unavailable(), ApiError::bodies_busy()] {
            let resp = e.into_envelope_response();
            assert_eq!(resp.headers()[RETRY_AFTER], "1");
            assert!(!resp.headers().contains_key(SHOULD_RETRY));
        }
    }

    #[test]
    fn unauthorized_carries_the_invalid_api_key_code() {
        let e = ApiError::unauthorized("x").envelope();
        assert_eq!(e.error.code.as_deref(), Some("invalid_api_key"));
        assert_eq!(e.error.kind, "invalid_request_error");
    }

    #[test]
    fn poem_errors_keep_their_status_but_not_their_body() {
        let e = ApiError::from_poem(poem::error::NotFoundError.into(), "GET", "/nope");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.envelope().error.message, "Invalid URL (GET /nope).");
    }

    #[test]
    fn storage_failures_answer_5xx_without_their_cause() {
        let leak = || -> weft_ports::error::BoxError {
            "SELECT * FROM threads: connection reset by peer".into()
        };
        for (err, status) in [
            (
                AppError::Unavailable(leak()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                AppError::Unexpected(leak()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (AppError::Busy, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let e = ApiError::from_app(err, Target::Thread("thread_x"));
            assert_eq!(e.status(), status);
            let body = serde_json::to_string(&e.envelope()).unwrap();
            assert!(
                !body.contains("SELECT") && !body.contains("reset"),
                "{body}"
            );
            assert!(body.contains("server_error"));
        }
    }

    #[test]
    fn app_errors_map_to_their_documented_statuses() {
        let t = Target::Thread("thread_x");
        assert_eq!(
            ApiError::from_app(AppError::NotFound, t).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from_app(AppError::InvalidCursor, t).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from_app(AppError::NoUserMessage, t).status(),
            StatusCode::BAD_REQUEST
        );
        let reused = ApiError::from_app(AppError::IdempotencyKeyReused, t);
        assert_eq!(reused.status(), StatusCode::CONFLICT);
        assert_eq!(
            reused.envelope().error.code.as_deref(),
            Some("idempotency_key_reused")
        );
    }

    #[test]
    fn long_client_input_is_shortened_in_messages() {
        let e = ApiError::not_found(Target::Thread(&"x".repeat(10_000)));
        assert!(e.envelope().error.message.chars().count() < 200);
        let method = "M".repeat(60_000);
        for status in [StatusCode::METHOD_NOT_ALLOWED, StatusCode::NOT_FOUND] {
            let e = ApiError::from_poem(poem::Error::from_status(status), &method, "/v1/threads");
            assert!(e.envelope().error.message.chars().count() < 200, "{status}");
        }
    }
}
