//! Weft's HTTP face and composition root: the OpenAI-compatible `/v1`
//! threads/messages API of API.md on poem + poem-openapi, the ops endpoints,
//! and the wiring of config → adapter → app → server used by the `weft`
//! binary and the end-to-end tests.
//!
//! Layout:
//! - [`config`]: the `weft` command line / `WEFT_*` settings, the JWT secret file.
//! - [`auth`]: HS256 bearer tokens; the poem-openapi security scheme.
//! - [`middleware`]: the edge every request passes — request id, span, body
//!   limit, error envelope, metrics, cancellation count.
//! - [`body`]: the 1 MiB limit, the JSON request extractor, pre-rendered responses.
//! - [`dto`]: wire shapes and their conversion into domain commands.
//! - [`api`]: the `/v1` operations.
//! - [`shield`]: use cases run in their own tasks, immune to request cancellation;
//!   shutdown waits for them before closing the pool.
//! - [`error`]: the one mapping of errors to statuses and the OpenAI envelope.
//! - [`metrics`]: the Prometheus registry owned by the server (also the `TxObserver`).
//! - [`store`]: the adapter choice — the only module naming an adapter.
//! - [`startup`]: [`Application`], the composition root.
//! - [`telemetry`]: the tracing subscriber builder.
//!
//! Architecture invariant: this is the only crate that knows both poem and
//! the adapters. It may depend on every Weft crate; nothing depends on it.
//! Handlers contain no transaction logic — that is the app's — and no SQL.
//! There is no global mutable state: the registry, keys and store live in
//! the [`Application`] and reach handlers as request data.

pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod dto;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod shield;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::{Application, StartupError};
