//! The use cases' error type.

use weft_domain::ValidationError;
use weft_ports::error::BoxError;
use weft_ports::PortError;

/// Why a use case failed. The HTTP layer alone maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input broke a domain rule (400). Nothing was changed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The thread or message does not exist for this user (404).
    #[error("not found")]
    NotFound,
    /// A list cursor names no object of this list for this user (400).
    #[error("invalid cursor")]
    InvalidCursor,
    /// Auto-rename on a thread without a user message (400).
    #[error("the thread has no user message to derive a title from")]
    NoUserMessage,
    /// An idempotency key was reused with another request (409).
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// A transient conflict that outlasted every retry (503). Only ever
    /// returned to callers; the retry helper's own signal is private.
    #[error("storage busy, retries exhausted")]
    Busy,
    /// Storage unreachable or timed out (503).
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else (500). Keeps its cause for the log.
    #[error("unexpected error")]
    Unexpected(#[source] BoxError),
}

impl From<PortError> for AppError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::NotFound => Self::NotFound,
            PortError::InvalidCursor => Self::InvalidCursor,
            PortError::Conflict => Self::Busy,
            PortError::Unavailable(source) => Self::Unavailable(source),
            // A duplicate where the use case expects none (an id collision)
            // is a bug or corruption, not something the client can fix.
            e @ PortError::Duplicate => Self::Unexpected(Box::new(e)),
            PortError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}
