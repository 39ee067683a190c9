//! The operations endpoints of API.md ("Operations"): `/healthz`, `/readyz`
//! and `/metrics`, and `/` pointing to the documentation. They need no token.
//!
//! The HTTP layer does not know which database serves the app: readiness
//! and pool numbers come through the [`Health`] port, which the composition
//! root implements for the backend it opened.

use std::sync::Arc;

use async_trait::async_trait;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::{Metrics, PoolSnapshot};

/// What the ops endpoints ask of the storage behind the app.
#[async_trait]
pub trait Health: Send + Sync {
    /// Whether the database answers and every migration is applied
    /// (API.md: `/readyz` is `200` exactly then). Implementations log the
    /// cause of a `false`; the endpoint only says yes or no.
    async fn ready(&self) -> bool;

    /// Connection numbers for the pool gauges, read on every scrape.
    fn pool(&self) -> PoolSnapshot;
}

/// Shared, read-only state of the ops endpoints (request data).
#[derive(Clone)]
pub(crate) struct Ops {
    pub(crate) health: Arc<dyn Health>,
    pub(crate) metrics: Metrics,
}

/// `GET /`: `200` with where to go: the API under `/v1`, its interactive
/// documentation at `/docs` and the OpenAPI document at `/openapi.json`
/// (a person opening the server's address in a browser lands here).
#[handler]
pub(crate) fn index() -> Response {
    json_response(
        StatusCode::OK,
        r#"{"name":"Weft","message":"Weft serves the OpenAI threads and messages API under /v1. Interactive documentation: /docs. OpenAPI document: /openapi.json.","api":"/v1","docs":"/docs","openapi":"/openapi.json"}"#,
    )
}

/// `GET /healthz`: `200` while the process is up.
#[handler]
pub(crate) fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// `GET /readyz`: `200` when the database answers and migrations are
/// applied, else `503` in the error envelope.
#[handler]
pub(crate) async fn readyz(ops: Data<&Ops>) -> Response {
    if ops.health.ready().await {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        ApiError::unavailable().into_envelope_response()
    }
}

/// `GET /metrics`: the Prometheus text exposition.
#[handler]
pub(crate) fn metrics_text(ops: Data<&Ops>) -> Response {
    ops.metrics
        .render(ops.health.pool())
        .with_content_type("text/plain; version=0.0.4; charset=utf-8")
        .into_response()
}

fn json_response(status: StatusCode, body: &'static str) -> Response {
    Response::builder()
        .status(status)
        .content_type(crate::body::JSON)
        .body(body)
}
