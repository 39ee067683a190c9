//! Error translation: the one place where SQLite result codes and sqlx
//! errors become [`PortError`]s.
//!
//! Nothing here lets SQL text or a driver message reach a client: the driver
//! error is kept only as the `source` of `Unavailable`/`Unexpected`, which the
//! HTTP layer logs and never shows.

use weft_ports::PortError;

/// A misuse of a repository the type system cannot rule out, reported as
/// [`PortError::Unexpected`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Misuse {
    /// `insert_messages` was given messages of more than one thread.
    #[error("insert_messages takes messages of one thread only")]
    MixedThreads,
}

// SQLite primary result codes (the low byte of an extended code).
// https://www.sqlite.org/rescode.html
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_INTERRUPT: i32 = 9;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
// Extended codes of a unique index / primary key violation.
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// The SQLite extended result code of a database error, if it is one.
fn extended_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        // sqlx-sqlite reports the extended result code as a decimal string.
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    }
}

/// Whether `e` is SQLite's busy/locked refusal (another connection holds
/// the lock past the busy timeout): the statement did nothing.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    extended_code(e).is_some_and(|c| matches!(c & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// Translates any sqlx error into the port's error.
///
/// - `SQLITE_BUSY`/`SQLITE_LOCKED` and all their extended codes (5, 261,
///   517, 773, 6, 262, 518 …): another connection holds the lock past the
///   busy timeout → [`PortError::Conflict`]. SQLite leaves no statement
///   half-applied on BUSY, and every caller of this adapter treats a failed
///   unit of work as rolled back (the connection is closed unless a
///   COMMIT/ROLLBACK completed), so the retry the app performs is safe.
/// - Primary key / unique index violations → [`PortError::Duplicate`].
/// - Pool timeout or closed pool, I/O errors, a crashed connection worker,
///   and SQLite `IOERR`/`CANTOPEN`/`FULL` → [`PortError::Unavailable`].
/// - Everything else (including `SQLITE_READONLY` from a write attempted in a
///   read-only unit of work, and decode failures) → [`PortError::Unexpected`].
pub(crate) fn port_error(e: sqlx::Error) -> PortError {
    if let Some(code) = extended_code(&e) {
        return match code {
            SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE => PortError::Duplicate,
            c if matches!(c & 0xff, SQLITE_BUSY | SQLITE_LOCKED) => {
                tracing::debug!(
                    code = c,
                    "SQLite busy/locked: reporting a transient conflict"
                );
                PortError::Conflict
            }
            // Interrupted by the transaction deadline (see `uow::TxConn::begin`):
            // the statement timed out, which the API reports as 503.
            c if matches!(
                c & 0xff,
                SQLITE_INTERRUPT | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
            ) =>
            {
                PortError::unavailable(e)
            }
            _ => PortError::unexpected(e),
        };
    }
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => PortError::unavailable(e),
        other => PortError::unexpected(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_and_lost_workers_are_unavailable() {
        assert!(matches!(
            port_error(sqlx::Error::PoolTimedOut),
            PortError::Unavailable(_)
        ));
        assert!(matches!(
            port_error(sqlx::Error::PoolClosed),
            PortError::Unavailable(_)
        ));
        assert!(matches!(
            port_error(sqlx::Error::WorkerCrashed),
            PortError::Unavailable(_)
        ));
    }

    /// A database error carrying just a SQLite extended result code, as
    /// sqlx-sqlite reports one.
    #[derive(Debug)]
    struct Coded(i32);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "(code: {})", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.to_string().into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn mapped(code: i32) -> PortError {
        port_error(sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn sqlite_result_codes_map_to_the_port_error_callers_branch_on() {
        // BUSY, BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT, LOCKED, LOCKED_SHAREDCACHE, LOCKED_VTAB.
        for code in [5, 261, 517, 773, 6, 262, 518] {
            assert!(
                matches!(mapped(code), PortError::Conflict),
                "{code} is a transient conflict"
            );
        }
        // CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE.
        for code in [1555, 2067] {
            assert!(
                matches!(mapped(code), PortError::Duplicate),
                "{code} is a duplicate"
            );
        }
        // IOERR, IOERR_READ, FULL, CANTOPEN.
        for code in [10, 266, 13, 14] {
            assert!(
                matches!(mapped(code), PortError::Unavailable(_)),
                "{code} is unavailable"
            );
        }
        // ERROR, READONLY, CONSTRAINT_CHECK, CONSTRAINT_FOREIGNKEY, CORRUPT.
        for code in [1, 8, 275, 787, 11] {
            assert!(
                matches!(mapped(code), PortError::Unexpected(_)),
                "{code} is unexpected"
            );
        }
    }

    #[test]
    fn other_driver_errors_are_unexpected() {
        assert!(matches!(
            port_error(sqlx::Error::RowNotFound),
            PortError::Unexpected(_)
        ));
    }
}
