//! Weft end to end: the real server over real sockets, on a fresh database
//! per test, each test run on every topology (`helpers::Topology`): SQLite,
//! PostgreSQL, two instances through PgBouncer in transaction mode, and
//! Citus (`<test>::sqlite`, `::postgres`, `::pgbouncer`, `::citus`). One
//! module per section of API.md; `faults` kills and restarts parts of a
//! deployment under load (`load` drives it and checks what survived).
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
mod deadline;
mod edge;
mod errors;
mod faults;
mod headers;
mod idempotency;
mod isolation;
mod lifecycle;
mod load;
mod objects;
mod ops;
mod paging;
mod readme;
mod titles;
mod tokens;
mod validation;
