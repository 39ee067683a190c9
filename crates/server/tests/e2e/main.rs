//! Weft end to end: the real server over real sockets, on a fresh database
//! per test, each test run against SQLite and PostgreSQL (`<test>::sqlite`,
//! `<test>::postgres`). One module per section of API.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod helpers;
mod proc;

mod auth;
mod binary;
mod cancellation;
mod concurrency;
mod edge;
mod errors;
mod idempotency;
mod isolation;
mod objects;
mod ops;
mod paging;
mod tokens;
mod validation;
