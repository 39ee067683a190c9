//! The edge: the one middleware every request passes through first.
//!
//! In order, per request: choose the request id (the client's if sane),
//! open the request's tracing span, call the routes, turn any error —
//! ours, poem's, poem-openapi's — into the OpenAI envelope, stamp
//! `x-request-id` and the retry hints, record metrics, and count the
//! request as cancelled if its future is dropped before all that finished.
//!
//! It never reads the body: a `/v1` body is read only by the operation's
//! body extractor, after the token was verified (`body.rs`). It only taps
//! it, to drain (and discard, bounded) whatever the routes left unread once
//! the answer is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tokio::sync::Semaphore;
use tracing::Instrument;
use weft_domain::RequestId;

use crate::error::{apply_retry_hints, ApiError};
use crate::metrics::{method_label, route_template, Metrics};

/// The request-id header, on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-request facts the edge establishes, for handlers (request
/// extensions): they build the immutable `RequestContext` from it and the
/// verified token.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The correlation id echoed in `x-request-id`.
    pub request_id: RequestId,
    /// When its headers had arrived: the body timeout counts from here.
    pub received: Instant,
    /// When the request's work should be done by.
    pub deadline: Instant,
}

/// The edge middleware. See the module docs.
#[derive(Debug, Clone)]
pub struct Edge {
    metrics: Metrics,
    request_timeout: Duration,
    /// Bounds the bodies drained after their answer (`body::MAX_CONCURRENT_DRAINS`).
    drains: Arc<Semaphore>,
}

impl Edge {
    /// An edge recording into `metrics`, giving each request `request_timeout`.
    pub fn new(metrics: Metrics, request_timeout: Duration) -> Self {
        Self {
            metrics,
            request_timeout,
            drains: Arc::new(Semaphore::new(crate::body::MAX_CONCURRENT_DRAINS)),
        }
    }
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint {
            inner,
            edge: self.clone(),
        }
    }
}

/// The endpoint [`Edge`] wraps routes in.
#[derive(Debug)]
pub struct EdgeEndpoint<E> {
    inner: E,
    edge: Edge,
}

/// Counts a request as cancelled unless [`CancelGuard::finish`] ran: when
/// the server drops a request future (shutdown bound reached, HTTP/2 stream
/// reset), `Drop` is the only code that still runs. (poem 3 does not drop an
/// HTTP/1 handler whose client closed the connection: that request runs to
/// its end and is not counted here; a body that breaks off is.)
struct CancelGuard<'a> {
    metrics: &'a Metrics,
    request_id: &'a RequestId,
    finished: bool,
}

impl CancelGuard<'_> {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics.request_cancelled();
            tracing::info!(request_id = %self.request_id, "request cancelled before its response was ready");
        }
    }
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = crate::headers::request_id(req.headers());
        let method = req.method().as_str().to_owned();
        // Bounded: logs and metrics carry the label, never the raw method.
        let method_label = method_label(&method);
        let path = req.uri().path().to_owned();
        let route = route_template(&path);
        // ERROR level on purpose: a span is only recorded when its level passes
        // the filter, and every error logged for this request must carry its
        // request id even under WEFT_LOG=warn or =error.
        let span = tracing::error_span!(
            "request",
            request_id = %request_id,
            user_id = tracing::field::Empty,
            method = method_label,
            route = route,
        );
        let guard = CancelGuard {
            metrics: &self.edge.metrics,
            request_id: &request_id,
            finished: false,
        };

        // The routes read the body (or not) through the tap; what they leave
        // unread is drained after the answer so a client still sending gets
        // to read it (a 401 sent before a large body, a 413, a 503).
        let expects_continue = req
            .headers()
            .get(poem::http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (body, leftover) = crate::body::tap(req.take_body(), expects_continue);
        req.set_body(body);
        req.extensions_mut().insert(RequestMeta {
            request_id: request_id.clone(),
            received: started,
            deadline: started + self.edge.request_timeout,
        });
        let handled = async {
            match self.inner.call(req).await {
                Ok(out) => ensure_envelope(out.into_response(), &method, &path),
                Err(e) => ApiError::from_poem(e, &method, &path).into_envelope_response(),
            }
        };
        let mut resp = handled.instrument(span.clone()).await;
        leftover.drain_in_background(&self.edge.drains);

        if let Ok(v) = HeaderValue::from_str(request_id.as_str()) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        // Also for answers that did not come through the envelope (none
        // should; this keeps the rule true for any that would).
        apply_retry_hints(&mut resp);
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        self.edge
            .metrics
            .observe_request(route, method_label, status, elapsed.as_secs_f64());
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        });
        guard.finish();
        Ok(resp)
    }
}

/// A response that is an error but not JSON (an inner component answered
/// in plain text on its own) is replaced by the envelope for its status.
fn ensure_envelope(resp: Response, method: &str, path: &str) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::body::is_json_content_type);
    if is_json {
        return resp;
    }
    ApiError::from_poem(poem::Error::from_status(status), method, path).into_envelope_response()
}
