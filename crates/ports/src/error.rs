//! The error every port returns.

/// A boxed error source, kept for logs and never shown to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a port, with exactly the cases callers branch on.
/// No driver type crosses this boundary: adapters translate their errors
/// (SQLSTATEs, pool errors) into these cases in one place.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The object does not exist for this owner (missing, foreign or deleted;
    /// indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    /// A list cursor names no object of this list for this owner.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A unique record already exists (e.g. an idempotency key that is taken
    /// and still within its replay window).
    #[error("duplicate")]
    Duplicate,
    /// A transient conflict (serialization failure, deadlock, database busy).
    /// The transaction definitely did not commit and has been or will be
    /// rolled back, so retrying the whole unit of work is safe.
    #[error("transient conflict")]
    Conflict,
    /// The database is unreachable, the connection was lost, a statement or
    /// the pool timed out. When raised by `commit` the outcome is unknown.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else, including stored data that fails to re-parse.
    #[error("unexpected storage error")]
    Unexpected(#[source] BoxError),
}

impl PortError {
    /// Wraps any error as [`PortError::Unexpected`].
    pub fn unexpected(e: impl Into<BoxError>) -> Self {
        Self::Unexpected(e.into())
    }

    /// Wraps any error as [`PortError::Unavailable`].
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
}
