//! Weft's inbound HTTP adapter: the OpenAI-compatible `/v1`
//! threads/messages API of API.md on poem + poem-openapi, and the ops
//! endpoints. It turns requests into use-case calls on `weft_app::App`
//! and their results into the OpenAI wire format.
//!
//! Layout:
//! - [`routes`]: [`routes::routes`] assembles the whole HTTP surface from an
//!   [`routes::HttpConfig`].
//! - [`auth`]: bearer tokens (HS256 with the secret; RS256/ES256/EdDSA by an
//!   identity provider's key); the claims rules; the poem-openapi security scheme.
//! - [`jwks`]: the identity provider's JWK Set, chosen by `kid`, refreshed
//!   through the [`jwks::JwksSource`] port (fetching is the composition root's).
//! - [`middleware`]: the edge every request passes — request id, span,
//!   error envelope, retry hints, metrics, cancellation count. It never reads a body.
//! - [`body`]: the body pipeline (after the token check: media type,
//!   encoding, gzip, size limit, body timeout, in-flight budget), the JSON
//!   request extractor, pre-rendered responses.
//! - [`headers`]: every request header Weft interprets, read as bytes by rule.
//! - [`dto`]: wire shapes and their conversion into domain commands.
//! - [`api`]: the `/v1` operations.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, and the [`ops::Health`] port
//!   through which they ask the storage (implemented by the composition root).
//! - [`shield`]: use cases run in their own tasks, immune to request cancellation;
//!   shutdown waits for them before closing the pool.
//! - [`error`]: the one mapping of errors to statuses and the OpenAI envelope.
//! - [`metrics`]: the Prometheus registry owned by the server (also the `TxObserver`).
//!
//! Architecture invariant: depends on `weft-app`, `weft-ports` and
//! `weft-domain`, never on an adapter: which database serves the app is the
//! composition root's (`weft-server`) business. Handlers contain no
//! transaction logic — that is the app's — and no SQL. There is no global
//! mutable state: the registry, keys and health port reach handlers as
//! request data.

pub mod api;
pub mod auth;
pub mod body;
pub mod dto;
pub mod error;
pub mod headers;
pub mod jwks;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod routes;
pub mod shield;
