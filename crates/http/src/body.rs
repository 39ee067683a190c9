//! Request and response bodies: reading a body (after its token was
//! verified), the JSON request extractor, and pre-rendered JSON responses.
//!
//! The body pipeline (API.md "Authentication and isolation", "Errors",
//! "Operations"): no byte of a `/v1` body is read before the operation's
//! security scheme verified the token — poem-openapi runs an operation's
//! extractors in argument order, every operation takes [`crate::auth::Caller`]
//! first, and only [`JsonBody`] (always after it) reads the body. It then
//! checks `Content-Type` and `Content-Encoding` (415), reads the stream
//! within `WEFT_BODY_TIMEOUT_MS` of the headers (408), decodes gzip as it
//! arrives, refuses more than `WEFT_MAX_BODY_BYTES` counted after decoding
//! (413: the buffer never grows past the limit, whatever a gzip bomb
//! expands to), and holds its buffer inside the server-wide
//! `WEFT_MAX_INFLIGHT_BODY_BYTES` budget (503 with `Retry-After` when the
//! bodies being read already hold it: refusing at once cannot deadlock
//! the way waiting for budget while holding some could).
//!
//! Why not poem's `SizeLimit` and poem-openapi's `Json`: `SizeLimit` trusts
//! `Content-Length` (a chunked body passes unchecked) and answers 411 to a
//! body-less GET; `Json` refuses a missing `Content-Type`, knows no
//! encodings and answers in plain text.

use std::io::Write;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use futures::{Stream, StreamExt};
use poem::http::{HeaderMap, StatusCode};
use poem::{Body, FromRequest, IntoResponse, Request, RequestBody, Response};
use poem_openapi::registry::{
    MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::headers::{check_content_type, content_coding, content_length, Coding};
use crate::metrics::Metrics;
use crate::request::RequestMeta;

/// Default of `WEFT_MAX_BODY_BYTES` (4 MiB): one message at the
/// 256,000-character limit fits in any valid JSON encoding (emoji as
/// `\uXXXX\uXXXX` escapes: 12 bytes a character, 3.07 MB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default of `WEFT_BODY_TIMEOUT_MS` (30 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `WEFT_MAX_INFLIGHT_BODY_BYTES` (256 MiB).
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 256 * 1024 * 1024;

/// After the answer to a request whose body was left unread (401 before
/// the body, 413, 503, 408, an operation without a body), how much more
/// of it is read and thrown away — never buffered — so a client still
/// sending gets to read the answer instead of a connection reset. Bounded
/// in bytes and time, so a huge or stalled upload cannot hold the server.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Most drains running at once. Draining makes hyper fill its read buffer
/// (up to ~400 KiB a connection), so under a flood of unwanted bodies —
/// 1,000 connections each sending 1 MiB without a token — unbounded
/// draining held 271 MB (debug build) where closing such connections held
/// 36 MB. Past this many, a leftover body is not drained: hyper closes the
/// connection, and a client still sending may see a reset instead of the
/// answer.
pub const MAX_CONCURRENT_DRAINS: usize = 64;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Where a tapped body's stream goes back to when the routes drop it unfinished.
type Home = Arc<Mutex<Option<ByteStream>>>;

/// The part of a request body the routes left unread, if any (see [`tap`]).
pub struct Leftover(Home);

impl std::fmt::Debug for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leftover")
    }
}

/// The request body as the edge hands it to the routes: the same bytes,
/// and whatever they leave unread comes back as a [`Leftover`] once they
/// drop it. A body known to be empty is passed through untouched (so
/// `Body::is_empty` stays true for it). When the client waits for
/// `100 Continue` (`expects_continue`) and the routes never asked for the
/// body, nothing comes back: that client sends nothing after a final
/// answer, and draining would invite the body it held back.
pub fn tap(body: Body, expects_continue: bool) -> (Body, Leftover) {
    let home: Home = Arc::new(Mutex::new(None));
    if body.is_empty() {
        return (body, Leftover(home));
    }
    let returning = Returning {
        stream: Some(Box::pin(body.into_bytes_stream())),
        home: home.clone(),
        invited: !expects_continue,
    };
    (Body::from_bytes_stream(returning), Leftover(home))
}

impl Leftover {
    /// Reads and discards what is left of the body in a task of its own,
    /// at most [`DRAIN_LIMIT`] bytes for [`DRAIN_TIME`], so the answer goes
    /// out at once. Nothing of it is kept. Only while one of `drains`'
    /// permits is free; otherwise the leftover is dropped at once.
    pub fn drain_in_background(self, drains: &Arc<Semaphore>) {
        let Some(mut stream) = self.0.lock().ok().and_then(|mut home| home.take()) else {
            return;
        };
        let Ok(permit) = drains.clone().try_acquire_owned() else {
            tracing::debug!("too many bodies draining; closing instead");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut drained = 0usize;
            let drain = async {
                while let Some(Ok(chunk)) = stream.next().await {
                    drained = drained.saturating_add(chunk.len());
                    if drained > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

/// A body stream that puts itself back in its home when dropped before
/// its end.
struct Returning {
    stream: Option<ByteStream>,
    home: Home,
    /// Whether the client sends the body unasked, or was asked (the body was polled).
    invited: bool,
}

impl Stream for Returning {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.invited = true;
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.as_mut().poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            // Ended, or broken: nothing is left to drain.
            self.stream = None;
        }
        next
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take().filter(|_| self.invited) {
            if let Ok(mut home) = self.home.lock() {
                *home = Some(stream);
            }
        }
    }
}

/// The smallest buffer grown for a body of unknown length.
const MIN_CAPACITY: usize = 8 * 1024;

/// The media type Weft answers with.
pub const JSON: &str = "application/json; charset=utf-8";

/// The body settings (`WEFT_MAX_BODY_BYTES`, `WEFT_BODY_TIMEOUT_MS`,
/// `WEFT_MAX_INFLIGHT_BODY_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyConfig {
    /// Largest body, in bytes after decoding (413 above).
    pub max_bytes: usize,
    /// Time from the request's headers by which its body must be complete (408 after).
    pub timeout: Duration,
    /// Most bytes all bodies being read may hold at once (503 above).
    pub max_inflight_bytes: usize,
}

impl Default for BodyConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_BODY_TIMEOUT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than `max_bytes` after decoding (413).
    TooLarge,
    /// The in-flight budget is held by other bodies (503).
    Busy,
    /// Not complete within the body timeout (408).
    TimedOut,
    /// Labelled gzip but not valid gzip (400).
    NotGzip,
    /// The stream broke off: the client went away or sent malformed
    /// chunking. Counted as a cancelled request; answered 400 in case
    /// anyone is still listening.
    Interrupted,
}

/// The in-flight budget shared by every body being read.
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    max: usize,
}

/// A share of the [`Budget`], returned when dropped.
#[derive(Debug)]
struct Reservation {
    budget: Arc<Budget>,
    held: usize,
}

impl Reservation {
    /// Grows the share to `total` bytes, if the budget has room.
    fn grow_to(&mut self, total: usize) -> Result<(), BodyError> {
        let Some(more) = total.checked_sub(self.held).filter(|m| *m > 0) else {
            return Ok(());
        };
        let max = self.budget.max;
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|n| *n <= max)
            })
            .map_err(|_| BodyError::Busy)?;
        self.held = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Where decoded bytes go: a buffer that never grows past `max` and whose
/// capacity is always covered by its reservation.
#[derive(Debug)]
struct Sink {
    data: Vec<u8>,
    max: usize,
    reservation: Reservation,
    /// Why the last write was refused (the decoder only sees an io::Error).
    refused: Option<BodyError>,
}

impl Sink {
    fn push(&mut self, buf: &[u8]) -> Result<(), BodyError> {
        let needed = self
            .data
            .len()
            .checked_add(buf.len())
            .filter(|n| *n <= self.max)
            .ok_or(BodyError::TooLarge)?;
        if needed > self.data.capacity() {
            self.reserve(
                needed
                    .max(self.data.capacity().saturating_mul(2))
                    .max(MIN_CAPACITY)
                    .min(self.max),
            )?;
        }
        self.data.extend_from_slice(buf);
        Ok(())
    }

    /// Makes the capacity `total` (at most `max`), covered by the budget.
    fn reserve(&mut self, total: usize) -> Result<(), BodyError> {
        let total = total.min(self.max);
        if total <= self.data.capacity() {
            return Ok(());
        }
        self.reservation.grow_to(total)?;
        self.data.reserve_exact(total - self.data.len());
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf).map_err(|e| {
            self.refused = Some(e);
            std::io::Error::other("body refused")
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The decoding stage between the wire and the [`Sink`].
enum Decoder {
    Plain(Sink),
    Gzip {
        decoder: Box<MultiGzDecoder<Sink>>,
        /// Compressed bytes received so far.
        received: usize,
        /// Most compressed bytes accepted: a body that decodes within the
        /// limit is never much larger on the wire (stored deflate blocks
        /// add 5 bytes in 65,535), while gzip framing (an endless file
        /// name, empty blocks) could otherwise be streamed forever.
        max_received: usize,
    },
}

impl Decoder {
    fn write(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        match self {
            Self::Plain(sink) => sink.push(chunk),
            Self::Gzip {
                decoder,
                received,
                max_received,
            } => {
                *received = received.saturating_add(chunk.len());
                if *received > *max_received {
                    return Err(BodyError::TooLarge);
                }
                decoder.write_all(chunk).map_err(|_| {
                    decoder
                        .get_mut()
                        .refused
                        .take()
                        .unwrap_or(BodyError::NotGzip)
                })
            }
        }
    }

    fn finish(self) -> Result<Sink, BodyError> {
        match self {
            Self::Plain(sink) => Ok(sink),
            Self::Gzip { mut decoder, .. } => match decoder.try_finish() {
                Ok(()) => decoder.finish().map_err(|_| BodyError::NotGzip),
                Err(_) => Err(decoder
                    .get_mut()
                    .refused
                    .take()
                    .unwrap_or(BodyError::NotGzip)),
            },
        }
    }
}

/// A body read completely, decoded, within every bound. Its share of the
/// in-flight budget is held until it is dropped.
#[derive(Debug)]
pub struct BodyBytes {
    data: Vec<u8>,
    _reservation: Reservation,
}

impl BodyBytes {
    /// The buffer's capacity (never more than the body limit).
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

impl Deref for BodyBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// Reads request bodies under a [`BodyConfig`], all sharing one in-flight
/// budget. Request data (set by `routes`); cheap to clone.
#[derive(Debug, Clone)]
pub struct BodyReader {
    config: BodyConfig,
    budget: Arc<Budget>,
    metrics: Option<Metrics>,
}

impl BodyReader {
    /// A reader with its own budget, counting broken-off bodies in `metrics`.
    pub fn new(config: BodyConfig, metrics: Option<Metrics>) -> Self {
        Self {
            config,
            budget: Arc::new(Budget {
                used: AtomicUsize::new(0),
                max: config.max_inflight_bytes,
            }),
            metrics,
        }
    }

    /// The settings it reads with.
    pub fn config(&self) -> BodyConfig {
        self.config
    }

    /// Bytes currently held by bodies being read (for tests and gauges).
    pub fn inflight_bytes(&self) -> usize {
        self.budget.used.load(Ordering::Acquire)
    }

    /// Checks the body headers, then reads `body` completely, decoding gzip,
    /// by `received + timeout` (`received`: when its headers arrived).
    ///
    /// # Errors
    /// 415 for the headers ([`check_content_type`], [`content_coding`]);
    /// then 413, 503, 408 or 400 as [`BodyError`] says.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        received: Instant,
    ) -> Result<BodyBytes, ApiError> {
        check_content_type(headers)?;
        let coding = content_coding(headers)?;
        self.read_coded(coding, content_length(headers), body, received)
            .await
            .map_err(|e| self.to_api_error(e))
    }

    fn to_api_error(&self, e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge => ApiError::payload_too_large(self.config.max_bytes),
            BodyError::Busy => {
                tracing::warn!(
                    budget = self.config.max_inflight_bytes,
                    "in-flight body budget exhausted; answering 503"
                );
                ApiError::bodies_busy()
            }
            BodyError::TimedOut => {
                tracing::info!("request body not complete within the body timeout");
                ApiError::body_timeout(self.config.timeout)
            }
            BodyError::NotGzip => ApiError::bad_request(
                "The request body is labelled 'Content-Encoding: gzip' but is not valid gzip data.",
            ),
            BodyError::Interrupted => {
                // The client broke off mid-body: it is gone, which is a cancellation.
                if let Some(m) = &self.metrics {
                    m.request_cancelled();
                }
                tracing::info!("request body interrupted; client gone");
                ApiError::bad_request("The request body could not be read completely.")
            }
        }
    }

    async fn read_coded(
        &self,
        coding: Coding,
        declared: Option<u64>,
        body: Body,
        received: Instant,
    ) -> Result<BodyBytes, BodyError> {
        let max = self.config.max_bytes;
        let deadline = tokio::time::Instant::from_std(received + self.config.timeout);
        let mut stream = Box::pin(body.into_bytes_stream());
        let mut sink = Sink {
            data: Vec::new(),
            max,
            reservation: Reservation {
                budget: self.budget.clone(),
                held: 0,
            },
            refused: None,
        };

        let prepared = match (coding, declared) {
            (Coding::Identity, Some(n)) if n > max as u64 => Err(BodyError::TooLarge),
            // A declared length is reserved whole up front: no regrowth, and
            // a budget refusal comes before any byte is read.
            (Coding::Identity, Some(n)) => sink.reserve(n as usize),
            _ => Ok(()),
        };
        let mut decoder = match coding {
            Coding::Identity => Decoder::Plain(sink),
            Coding::Gzip => Decoder::Gzip {
                decoder: Box::new(MultiGzDecoder::new(sink)),
                received: 0,
                max_received: max.saturating_add(max / 16).saturating_add(64 * 1024),
            },
        };
        let read = async {
            prepared?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| BodyError::Interrupted)?;
                decoder.write(&chunk)?;
            }
            Ok(())
        };
        let outcome = match tokio::time::timeout_at(deadline, read).await {
            Ok(r) => r,
            Err(_) => Err(BodyError::TimedOut),
        };
        match outcome {
            Ok(()) => {
                let sink = decoder.finish()?;
                Ok(BodyBytes {
                    data: sink.data,
                    _reservation: sink.reservation,
                })
            }
            // What is left unread is drained by the edge after the answer.
            Err(e) => Err(e),
        }
    }
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
        let Some(reader) = req.data::<BodyReader>() else {
            tracing::error!("body reader missing from the request data");
            return Err(ApiError::internal().into());
        };
        let received = req
            .extensions()
            .get::<RequestMeta>()
            .map_or_else(Instant::now, |m| m.received);
        let body = body.take().unwrap_or_else(|_| Body::empty());
        let bytes = reader.read(req.headers(), body, received).await?;
        let value = parse_value(&bytes)?;
        // The parsed value is the handler's now; the raw bytes and their
        // share of the in-flight budget go.
        drop(bytes);
        let dto = T::deserialize(&value)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}.")))?;
        Ok(Self { value, dto })
    }
}

/// The extractor of `/v1` operations that take no body: the body is never
/// read, but one that is present must still be JSON (API.md: any body Weft
/// is sent is JSON, `415` otherwise), checked on the headers alone. Put
/// after the token check like [`JsonBody`].
#[derive(Debug, Clone, Copy)]
pub struct NoBody;

impl<'a> FromRequest<'a> for NoBody {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        if body.take().is_ok_and(|b| !b.is_empty()) {
            check_content_type(req.headers())?;
            content_coding(req.headers())?;
        }
        Ok(Self)
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

    fn reader(max: usize, budget: usize) -> BodyReader {
        BodyReader::new(
            BodyConfig {
                max_bytes: max,
                timeout: Duration::from_secs(30),
                max_inflight_bytes: budget,
            },
            None,
        )
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A body streamed in `chunk`-byte pieces with no Content-Length.
    fn chunked(data: Vec<u8>, chunk: usize) -> Body {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            data.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
        Body::from_bytes_stream(futures::stream::iter(pieces))
    }

    async fn read(
        r: &BodyReader,
        coding: Coding,
        declared: Option<u64>,
        body: Body,
    ) -> Result<BodyBytes, BodyError> {
        r.read_coded(coding, declared, body, Instant::now()).await
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_on_the_bytes_read() {
        let r = reader(1000, 10_000);
        assert!(
            read(&r, Coding::Identity, None, chunked(vec![b' '; 1000], 7))
                .await
                .is_ok()
        );
        let over = read(&r, Coding::Identity, None, chunked(vec![b' '; 1001], 7)).await;
        assert_eq!(over.unwrap_err(), BodyError::TooLarge);
        // A Content-Length over the limit is refused before reading.
        let declared = read(
            &r,
            Coding::Identity,
            Some(1001),
            Body::from_vec(vec![b' '; 10]),
        )
        .await;
        assert_eq!(declared.unwrap_err(), BodyError::TooLarge);
        assert_eq!(r.inflight_bytes(), 0, "every reservation was returned");
    }

    #[tokio::test]
    async fn gzip_is_decoded_and_the_limit_counts_decoded_bytes() {
        let r = reader(1000, 10_000);
        let json = br#"{"title":"gz"}"#;
        let got = read(&r, Coding::Gzip, None, chunked(gzip(json), 3))
            .await
            .unwrap();
        assert_eq!(&*got, json);
        drop(got);
        // Two members decode as one stream (RFC 1952).
        let mut two = gzip(b"{\"title\":");
        two.extend(gzip(b"\"x\"}"));
        assert_eq!(
            &*read(&r, Coding::Gzip, None, chunked(two, 5)).await.unwrap(),
            br#"{"title":"x"}"#
        );
        // 1,000 decoded bytes pass, 1,001 do not, though both are tiny on the wire.
        assert!(
            read(&r, Coding::Gzip, None, chunked(gzip(&[b' '; 1000]), 4))
                .await
                .is_ok()
        );
        let over = read(&r, Coding::Gzip, None, chunked(gzip(&[b' '; 1001]), 4)).await;
        assert_eq!(over.unwrap_err(), BodyError::TooLarge);
        assert_eq!(r.inflight_bytes(), 0);
    }

    #[tokio::test]
    async fn a_gzip_bomb_never_grows_the_buffer_past_the_limit() {
        let limit = 64 * 1024;
        let r = reader(limit, 1024 * 1024);
        let bomb = gzip(&vec![b' '; 16 * 1024 * 1024]);
        assert!(
            bomb.len() < 64 * 1024,
            "a bomb: {} bytes on the wire",
            bomb.len()
        );
        let mut sink = Sink {
            data: Vec::new(),
            max: limit,
            reservation: Reservation {
                budget: r.budget.clone(),
                held: 0,
            },
            refused: None,
        };
        let mut decoder = MultiGzDecoder::new(&mut sink);
        let mut refused = false;
        for piece in bomb.chunks(1024) {
            if decoder.write_all(piece).is_err() {
                refused = true;
                break;
            }
        }
        drop(decoder);
        assert!(refused, "the bomb was stopped");
        assert_eq!(sink.refused, Some(BodyError::TooLarge));
        assert!(
            sink.data.capacity() <= limit,
            "capacity {} past the limit",
            sink.data.capacity()
        );
        assert!(r.inflight_bytes() <= limit);
        drop(sink);
        assert_eq!(
            read(&r, Coding::Gzip, None, chunked(bomb, 8192))
                .await
                .unwrap_err(),
            BodyError::TooLarge
        );
        assert_eq!(r.inflight_bytes(), 0);
    }

    #[tokio::test]
    async fn false_or_truncated_gzip_is_not_gzip() {
        let r = reader(1000, 10_000);
        let plain = read(
            &r,
            Coding::Gzip,
            None,
            chunked(br#"{"title":"x"}"#.to_vec(), 4),
        )
        .await;
        assert_eq!(plain.unwrap_err(), BodyError::NotGzip);
        let mut cut = gzip(br#"{"title":"truncated"}"#);
        cut.truncate(cut.len() - 4);
        assert_eq!(
            read(&r, Coding::Gzip, None, chunked(cut, 4))
                .await
                .unwrap_err(),
            BodyError::NotGzip
        );
        let mut trailing = gzip(br#"{}"#);
        trailing.extend_from_slice(b"garbage");
        assert_eq!(
            read(&r, Coding::Gzip, None, chunked(trailing, 4))
                .await
                .unwrap_err(),
            BodyError::NotGzip
        );
        assert_eq!(
            read(&r, Coding::Gzip, None, Body::empty())
                .await
                .unwrap_err(),
            BodyError::NotGzip
        );
        assert_eq!(r.inflight_bytes(), 0);
    }

    #[tokio::test]
    async fn bodies_share_the_in_flight_budget_and_return_it() {
        let r = reader(1000, 1500);
        let first = read(
            &r,
            Coding::Identity,
            Some(1000),
            Body::from_vec(vec![b' '; 1000]),
        )
        .await
        .unwrap();
        assert_eq!(first.capacity(), 1000);
        assert_eq!(r.inflight_bytes(), 1000);
        let second = read(
            &r,
            Coding::Identity,
            Some(600),
            Body::from_vec(vec![b' '; 600]),
        )
        .await;
        assert_eq!(second.unwrap_err(), BodyError::Busy);
        let third = read(&r, Coding::Identity, None, chunked(vec![b' '; 600], 100)).await;
        assert_eq!(third.unwrap_err(), BodyError::Busy);
        drop(first);
        assert_eq!(r.inflight_bytes(), 0);
        assert!(read(
            &r,
            Coding::Identity,
            Some(600),
            Body::from_vec(vec![b' '; 600])
        )
        .await
        .is_ok());
    }

    #[tokio::test]
    async fn what_the_routes_leave_unread_comes_back_to_be_drained() {
        // Dropped unread: the stream comes back.
        let (tapped, leftover) = tap(chunked(vec![b'x'; 100], 10), false);
        drop(tapped);
        assert!(leftover.0.lock().unwrap().is_some());
        // Read to the end: nothing is left.
        let (tapped, leftover) = tap(chunked(vec![b'x'; 100], 10), false);
        assert_eq!(tapped.into_vec().await.unwrap().len(), 100);
        assert!(leftover.0.lock().unwrap().is_none());
        // Read in part (a refused body): the rest comes back, and draining it
        // without a free permit drops it at once.
        let (tapped, leftover) = tap(chunked(vec![b'x'; 100], 10), false);
        let mut s = Box::pin(tapped.into_bytes_stream());
        assert!(s.next().await.is_some());
        drop(s);
        assert!(leftover.0.lock().unwrap().is_some());
        leftover.drain_in_background(&Arc::new(Semaphore::new(0)));
        // A client waiting for 100 Continue that was never asked: nothing to drain.
        let (tapped, leftover) = tap(chunked(vec![b'x'; 100], 10), true);
        drop(tapped);
        assert!(leftover.0.lock().unwrap().is_none());
        // …but once the routes started reading, the rest is drained as usual.
        let (tapped, leftover) = tap(chunked(vec![b'x'; 100], 10), true);
        let mut s = Box::pin(tapped.into_bytes_stream());
        assert!(s.next().await.is_some());
        drop(s);
        assert!(leftover.0.lock().unwrap().is_some());
        // An empty body is not wrapped: operations can still tell it is empty.
        let (tapped, leftover) = tap(Body::empty(), false);
        assert!(tapped.is_empty());
        drop(tapped);
        assert!(leftover.0.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_times_out() {
        let r = BodyReader::new(
            BodyConfig {
                max_bytes: 1000,
                timeout: Duration::from_millis(50),
                max_inflight_bytes: 10_000,
            },
            None,
        );
        let never =
            Body::from_bytes_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        assert_eq!(
            read(&r, Coding::Identity, Some(10), never)
                .await
                .unwrap_err(),
            BodyError::TimedOut
        );
        assert_eq!(r.inflight_bytes(), 0);
    }
}
