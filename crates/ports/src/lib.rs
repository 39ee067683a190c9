//! Weft's ports: the traits the core needs from the outside world.
//!
//! Layout:
//! - [`context`]: [`RequestContext`], the immutable per-request value passed
//!   explicitly to every use case and unit of work.
//! - [`error`]: [`PortError`], the one error every port returns.
//! - [`uow`]: the unit of work, its factory and the repositories reachable
//!   only through it.
//! - [`services`]: clock, id source and title generator.
//! - [`lifecycle`]: [`Maintenance`], the data lifecycle's bounded batches
//!   (idempotency expiry, purge, erase, export), outside any request.
//! - `mocks` (feature `mocks`): mockall mocks of every port.
//!
//! Architecture invariant: this crate holds traits and plain data only. It
//! depends on `weft-domain` and nothing that does I/O; no driver type
//! (sqlx, poem) ever appears in a signature here, so adapters can be
//! swapped without the core noticing.

pub mod context;
pub mod error;
pub mod lifecycle;
#[cfg(feature = "mocks")]
pub mod mocks;
pub mod services;
pub mod uow;

pub use context::RequestContext;
pub use error::PortError;
pub use lifecycle::{Erased, ExpiryObserver, ExportReader, Exported, Maintenance, Purged};
pub use services::{
    Clock, IdSource, NoopObserver, TitleError, TitleGenerator, TxObserver, TxOutcome,
};
pub use uow::{
    Appended, IdempotencyRecord, IdempotencyRepository, MessageRepository, Mode, ThreadRepository,
    UnitOfWork, UnitOfWorkFactory,
};
