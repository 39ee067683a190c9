//! What Weft's sqlx adapters (`weft-adapters-postgres`,
//! `weft-adapters-sqlite`) share, so that a third one is written by
//! implementing a [`TxManager`] and its SQL, not by re-proving the
//! subtlest code in the repository:
//!
//! - [`guard`]: [`TxConn`], the cancellation-safe transaction guard —
//!   one pooled connection inside a transaction the guard opened, never
//!   handed back to the pool dirty, whatever await point its owner was
//!   dropped at; and [`TxManager`], the per-database hook (the `BEGIN`
//!   statement with its time bounds, which errors break a connection, the
//!   error mapping).
//! - [`pool`]: the connection pool under the guard (deadpool over sqlx
//!   connections, returning connections without sqlx's ping).
//! - [`rows`]: the stored row shapes and their re-parsing into domain
//!   values (a failure is data corruption: [`rows::Corrupt`]).
//! - [`store`]: [`StoreError`] (start-up, migration and readiness
//!   failures) and [`PoolStats`].
//!
//! Architecture invariant: depends on `weft-ports`, `weft-domain` and sqlx
//! without any database driver feature; never on `weft-app` or an inbound
//! adapter. No sqlx type crosses a port: everything here is used inside
//! adapters only.

pub mod guard;
pub mod pool;
pub mod rows;
pub mod store;

pub use guard::{ConnState, Opened, TxConn, TxManager, TxSpec};
pub use pool::Pool;
pub use store::{PoolStats, StoreError};
