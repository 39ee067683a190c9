//! Per-request facts the edge middleware establishes and handlers read
//! (request extensions). A leaf module: the middleware writes it, the body
//! extractor and the operations read it, and it depends on neither.

use std::time::Instant;

use weft_domain::RequestId;

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
