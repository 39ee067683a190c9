//! Weft end to end: the real server over real sockets, on a fresh database
//! per test, each test run against SQLite and PostgreSQL (`<test>::sqlite`,
//! `<test>::postgres`). One module per section of API.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod helpers;
// The scripted OpenAI-compatible model server, shared with the title
// adapter's own tests.
#[path = "../../../adapters-titles/tests/support/model_server.rs"]
mod model_server;

mod auth;
mod binary;
mod bodies;
mod cancellation;
mod concurrency;
mod errors;
mod headers;
mod idempotency;
mod isolation;
mod lifecycle;
mod objects;
mod ops;
mod paging;
mod readme;
mod titles;
mod validation;
