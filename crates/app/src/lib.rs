//! Weft's use cases: one method of [`App`] per API operation, written only
//! against the ports.
//!
//! Layout:
//! - [`App`] and its [`Deps`]/[`AppConfig`]: the use cases, in `threads`,
//!   `messages` and `rename`.
//! - `tx`: the one helper every use case runs its unit of work through:
//!   begin, run the body, commit exactly once on success, roll back on any
//!   error, retry the whole unit of work on a transient conflict only.
//! - [`idempotency`]: the one protocol both idempotent creates run
//!   (replay, create, record), in one order.
//! - [`AppError`]: the one error type of the use cases.
//! - [`lifecycle`]: [`lifecycle::Lifecycle`], the data lifecycle's drivers
//!   (idempotency expiry in the background, purge, erase, export) over the
//!   `Maintenance` port: bounded batches with pauses between them.
//! - [`system`]: the production implementations of the clock, id and title
//!   ports (no I/O beyond reading the system clock).
//!
//! Transaction rules owned here:
//! - reads run in read-only units of work, writes in read-write ones;
//! - a use case is one unit of work, so it commits whole or not at all;
//! - only [`weft_ports::PortError::Conflict`] is retried (it promises the
//!   transaction did not commit); a lost connection during commit is not;
//! - nothing slow and external runs while a unit of work is open
//!   (auto-rename reads, calls the title generator, then writes in a
//!   second unit of work that re-checks the state).
//!
//! Architecture invariant: this crate depends on `weft-domain`,
//! `weft-ports` and small runtime crates (tokio's timer, futures, tracing);
//! never on sqlx, poem or an adapter. `tests/architecture.rs` checks it.

mod error;
pub mod idempotency;
pub mod lifecycle;
mod messages;
mod rename;
pub mod system;
mod threads;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use weft_domain::StoredResponse;
use weft_ports::{Clock, IdSource, TitleGenerator, TxObserver, UnitOfWorkFactory};

pub use error::AppError;
pub use idempotency::Idempotency;
pub use tx::RetryPolicy;

/// Turns a created object into the exact response body recorded for
/// idempotent replay. Supplied by the HTTP layer, which owns the wire format.
pub type Render<T> = Arc<dyn Fn(&T) -> StoredResponse + Send + Sync>;

/// The ports the use cases run against.
#[derive(Clone)]
pub struct Deps {
    /// Opens units of work (the adapter).
    pub uow: Arc<dyn UnitOfWorkFactory>,
    /// The current time.
    pub clock: Arc<dyn Clock>,
    /// Mints ids.
    pub ids: Arc<dyn IdSource>,
    /// Derives thread titles (may be slow or remote).
    pub titles: Arc<dyn TitleGenerator>,
    /// Told how every unit of work ended, for metrics.
    pub observer: Arc<dyn TxObserver>,
}

/// Tunables of the use cases.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// How units of work are retried on transient conflicts.
    pub retry: RetryPolicy,
    /// Longest wait for the title generator before falling back to the
    /// deterministic derived title.
    pub title_timeout: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            title_timeout: Duration::from_secs(10),
        }
    }
}

/// The use cases. Cheap to clone (shared ports behind `Arc`s), so the HTTP
/// layer can move a clone into a task that outlives a cancelled request.
/// Holds no connection, transaction or user: each call receives its
/// [`weft_ports::RequestContext`] explicitly.
#[derive(Clone)]
pub struct App {
    deps: Deps,
    config: AppConfig,
}

impl App {
    /// Assembles the use cases from their ports.
    pub fn new(deps: Deps, config: AppConfig) -> Self {
        Self { deps, config }
    }
}
