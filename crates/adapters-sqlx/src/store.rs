//! What every sqlx store reports about itself: start-up errors and pool
//! numbers.

use weft_ports::error::BoxError;

/// Opening, migrating or checking a store failed. Shown to operators (at
/// start-up, in readiness logs), never to API clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL or options are not usable (the message says why).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// The database could not be reached or opened.
    #[error("cannot connect to the database")]
    Connect(#[source] BoxError),
    /// Applying the embedded migrations failed.
    #[error("applying migrations failed")]
    Migrate(#[source] BoxError),
    /// The database answers but these embedded migrations are not applied.
    #[error("migrations pending: {0:?}")]
    MigrationsPending(Vec<i64>),
    /// The database did not answer (a readiness query, a backup).
    #[error("database unavailable")]
    Unavailable(#[source] BoxError),
}

/// Connection numbers of a store, for the pool gauges and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
}

impl PoolStats {
    /// The sum of two pools' numbers.
    pub fn plus(self, other: Self) -> Self {
        Self {
            size: self.size.saturating_add(other.size),
            idle: self.idle.saturating_add(other.idle),
        }
    }

    /// Connections in use (checked out of the pool): `size - idle`, never
    /// below zero even when the two were read across a release.
    pub fn busy(self) -> u32 {
        self.size.saturating_sub(self.idle)
    }
}
