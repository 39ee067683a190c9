//! Weft's ports on PostgreSQL (15+) with sqlx: embedded migrations, the
//! queries, and the transactional unit of work.
//!
//! Layout:
//! - [`PgConfig`] / [`Isolation`]: where the server is, pool size, and the
//!   time bounds every transaction gets.
//! - [`PgStore`]: the pool; `connect`, `migrate`, `ready`, `pool_stats`,
//!   `close`; it is the [`weft_ports::UnitOfWorkFactory`].
//! - `uow`: the unit of work and every repository query.
//! - `rows`: rows re-parsed into domain types (a failure is data corruption).
//! - `error`: [`PgError`] for start-up, and the one mapping from driver
//!   errors/SQLSTATEs to [`weft_ports::PortError`].
//!
//! Architecture invariant: depends on `weft-ports` and `weft-domain`, never
//! on `weft-app` or `weft-http`; no sqlx type leaves this crate. SQL is
//! built with `sqlx::query` and binds (no compile-time macros): the
//! conformance suite (`tests/conformance.rs`, `weft-conformance`) proves it
//! on a real server. Every query filters on the unit of work's owner.
//!
//! # Cancellation
//!
//! Rule: a connection is never handed to the next request inside a
//! transaction or with a half-finished round trip, whatever point the future
//! owning the unit of work was dropped at.
//!
//! sqlx ≤ 0.9.0 breaks that on its own: a `Transaction` whose `begin()` is
//! cancelled during its round trip returns its connection to the pool still
//! inside the transaction (launchbadge/sqlx issues 4385 and 4393). So the
//! unit of work does not use `sqlx::Transaction`. It owns the raw
//! `PoolConnection`, issues `BEGIN`/`COMMIT`/`ROLLBACK` itself, and tracks
//! the connection's state around every round trip:
//!
//! - **in flight** (the future was dropped while a statement, `BEGIN` or
//!   `COMMIT` was on the wire): the protocol state is unknown, so the
//!   connection is closed (`PoolConnection::close_on_drop`); the server
//!   rolls the transaction back when the session ends, and the pool opens a
//!   replacement on demand.
//! - **open, between statements** (an error path dropped the unit of work,
//!   or the future was dropped at a non-driver await): a spawned task sends
//!   `ROLLBACK` and only then returns the connection; if that fails or takes
//!   over 5 s, the connection is closed.
//! - **clean** (after a completed `COMMIT`/`ROLLBACK`): returned as usual.
//!
//! Why not an `after_release` check instead: it would need a round trip
//! (or trust in sqlx's internal transaction depth, which is exactly what the
//! bug corrupts) on every release, and could not repair a connection whose
//! protocol stream was cut mid-message. Closing only the connections that
//! were actually interrupted costs nothing on the normal path.
//!
//! Measured cost (`cargo run --release -p weft-adapters-postgres --example
//! cancel_cost 3500`: PostgreSQL 15 on loopback with fsync off, 2 shared
//! cores, pool of 4, one unit of work at a time, median of 7 interleaved
//! rounds; three runs, 2026-11-28):
//!
//! | per create-message unit of work (BEGIN, count, insert, COMMIT) | time |
//! |---|---|
//! | baseline: `sqlx::Transaction` on a default pool | 0.65–0.84 ms |
//! | Weft's unit of work, uncancelled | 0.61–0.71 ms |
//! | dropped between statements (background ROLLBACK) + the next one | 0.90–1.0 ms |
//! | dropped mid-statement (connection closed) + the next one | 1.3–1.7 ms |
//! | for scale: opening and closing one bare connection | 4.0–5.8 ms |
//!
//! So the normal path costs nothing: it is slightly faster than the
//! baseline, because the pool no longer pings a connection on every acquire
//! (it still pings on release). A unit of work abandoned between
//! statements costs one ROLLBACK round trip, off the request's path. One
//! cut mid-statement costs a connection: the next acquire that finds no
//! idle connection opens a new one (the last two rows).
//!
//! Only cancelled requests pay the reconnect, which is a small cost next to
//! serving a dirty connection.

mod config;
mod error;
mod rows;
mod store;
mod uow;

pub use config::{Isolation, PgConfig};
pub use error::PgError;
pub use store::{PgStore, PoolStats, APPLICATION_NAME};
