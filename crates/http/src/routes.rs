//! The whole HTTP surface as one poem endpoint: `/v1` (API.md
//! "Endpoints"), the ops endpoints, the OpenAPI document and Swagger UI,
//! wrapped in the panic catcher and the [`Edge`] middleware.

use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::middleware::CatchPanic;
use poem::{get, EndpointExt, Response, Route};
use poem_openapi::OpenApiService;
use weft_app::App;

use crate::api::Api;
use crate::auth::TokenKeys;
use crate::body::{BodyConfig, BodyReader};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::middleware::Edge;
use crate::ops::{healthz, index, metrics_text, readyz, Health, Ops};
use crate::shield::Shield;

/// Everything the HTTP surface is assembled from. The composition root
/// builds it once at start.
pub struct HttpConfig {
    /// The use cases.
    pub app: App,
    /// Runs each use case in its own task (shared with shutdown, which
    /// waits for it).
    pub shield: Shield,
    /// Verifies bearer tokens.
    pub keys: TokenKeys,
    /// Readiness and pool numbers of the storage behind `app`.
    pub health: Arc<dyn Health>,
    /// Where requests and transactions are counted.
    pub metrics: Metrics,
    /// Deadline of each request's work, from its headers
    /// (`WEFT_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// How request bodies are read: size limit after decoding, body
    /// timeout, in-flight budget (`WEFT_MAX_BODY_BYTES`,
    /// `WEFT_BODY_TIMEOUT_MS`, `WEFT_MAX_INFLIGHT_BODY_BYTES`).
    pub body: BodyConfig,
}

/// The routes of API.md, ready to serve.
pub fn routes(cfg: HttpConfig) -> BoxEndpoint<'static, Response> {
    let api = OpenApiService::new(
        Api::new(cfg.app, cfg.shield),
        "Weft",
        env!("CARGO_PKG_VERSION"),
    )
    .description("OpenAI Assistants v2 compatible threads and messages, transaction-safe.");
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let ops = Ops {
        health: cfg.health,
        metrics: cfg.metrics.clone(),
    };
    Route::new()
        .at("/", get(index))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics_text))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest_no_strip("/v1", api)
        .data(cfg.keys)
        .data(BodyReader::new(cfg.body, Some(cfg.metrics.clone())))
        .data(ops)
        .with(CatchPanic::new().with_handler(|_| {
            tracing::error!("handler panicked; answering 500");
            ApiError::internal().into_envelope_response()
        }))
        .with(Edge::new(cfg.metrics, cfg.request_timeout))
        .boxed()
}
