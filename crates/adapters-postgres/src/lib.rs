//! Weft's ports on PostgreSQL (15+) with sqlx: embedded migrations, the
//! queries, and the transactional unit of work.
//!
//! Layout (the same files as every sqlx adapter):
//! - [`PgConfig`] / [`Isolation`]: where the server is, pool size, the time
//!   bounds every transaction gets, the statement-cache policy.
//! - [`PgStore`] (`store`): the pool; `connect`, `migrate`, `ready`,
//!   `pool_stats`, `factory`, `close`.
//! - `migrate`: the embedded migrations in one transaction under a
//!   transaction-scoped lock (safe behind PgBouncer), and the Citus
//!   distribution of the tables by owner.
//! - `uow`: the unit of work on the shared guard (`weft-adapters-sqlx`),
//!   PostgreSQL's `BEGIN` with its per-transaction bounds, the factory.
//! - `repo`: every repository query.
//! - `rows`: the column lists (parsed by the shared row types).
//! - `lifecycle`: the data lifecycle's `Maintenance` port (idempotency
//!   expiry, purge, erase, export), one owner per transaction.
//! - `error`: the one mapping from driver errors/SQLSTATEs to
//!   [`weft_ports::PortError`].
//!
//! Architecture invariant: depends on `weft-ports` and `weft-domain`, never
//! on `weft-app` or `weft-http`; no sqlx type leaves this crate. SQL is
//! built with `sqlx::query` and binds (no compile-time macros): the
//! conformance suite (`tests/conformance.rs`, `weft-conformance`) proves it
//! on a real server. Every query filters on the unit of work's owner.
//!
//! # Cancellation
//!
//! The unit of work is the shared guard `weft_adapters_sqlx::TxConn` (see
//! its docs for the state machine and why it does not use
//! `sqlx::Transaction`): a connection dropped mid-statement is closed, one
//! dropped between statements is rolled back off the request's path, and
//! only a completed `COMMIT`/`ROLLBACK` returns it as is.
//!
//! Measured cost (`cargo run --release -p weft-adapters-postgres --example
//! cancel_cost 3500`): see docs/ARCHITECTURE.md, "Cancellation".

mod config;
mod error;
mod lifecycle;
mod migrate;
mod repo;
mod rows;
mod store;
mod uow;

pub use config::{Isolation, PgConfig};
pub use store::{PgStore, APPLICATION_NAME};
pub use weft_adapters_sqlx::{PoolStats, StoreError};
