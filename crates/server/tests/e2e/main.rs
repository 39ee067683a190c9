//! Weft end to end: the real server over real sockets, on a fresh database
//! per test, each test run against SQLite and PostgreSQL (`<test>::sqlite`,
//! `<test>::postgres`). One module per section of API.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod helpers;
// The scripted OpenAI-compatible model server, shared with the title
// adapter's own tests.
#[path = "../../../adapters-titles/tests/support/model_server.rs"]
mod model_server;
mod proc;

mod auth;
mod binary;
mod bodies;
mod cancellation;
mod concurrency;
mod edge;
mod errors;
mod headers;
mod idempotency;
mod isolation;
mod objects;
mod ops;
mod paging;
mod readme;
mod titles;
mod tokens;
mod validation;
