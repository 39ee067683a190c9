//! The use cases of weft-app on mockall mocks of the ports: no I/O, one
//! test binary.
//!
//! - `every_use_case`: the unit-of-work rules checked across every
//!   single-transaction use case from one table (mode, commit exactly once,
//!   rollback on each failing call, begin failing).
//! - `threads`, `messages`: each use case's calls, arguments and results.
//! - `retry`: retried on a transient conflict only, bounded, observed.
//! - `idempotency`: replay, key reuse, the duplicate claim race, the window.
//! - `lifecycle`: the data lifecycle's drivers on a mocked `Maintenance`.
//! - `rename`: auto-rename's two units of work and the generator outside both.
//! - `support`: fixtures, the harness and the use-case driver.

// Helpers outside #[test] fns are test code too: a panic is the failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod every_use_case;
mod idempotency;
mod lifecycle;
mod messages;
mod rename;
mod retry;
mod support;
mod threads;
