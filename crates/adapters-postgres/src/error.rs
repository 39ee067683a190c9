//! The one place where PostgreSQL's errors (SQLSTATEs, driver failures)
//! become port errors.

use weft_ports::PortError;

/// SQLSTATEs with a meaning for callers.
mod sqlstate {
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `statement_timeout` fired (or the statement was cancelled).
    pub const QUERY_CANCELED: &str = "57014";
    /// `idle_in_transaction_session_timeout` ended the session.
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    /// Class 57P (admin/crash shutdown, cannot connect now).
    pub const OPERATOR_INTERVENTION_PREFIX: &str = "57P";
    /// Class 08: connection exceptions.
    pub const CONNECTION_EXCEPTION_PREFIX: &str = "08";
    /// Class 53: insufficient resources (too many connections, …).
    pub const INSUFFICIENT_RESOURCES_PREFIX: &str = "53";
}

/// Translates a driver error into a port error. The only such mapping in
/// the adapter: the SQL and driver text stay in the error's source chain
/// (for logs); `PortError`'s own messages are generic.
pub(crate) fn port_error(e: sqlx::Error) -> PortError {
    use sqlstate::*;
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                SERIALIZATION_FAILURE | DEADLOCK_DETECTED => PortError::Conflict,
                UNIQUE_VIOLATION => PortError::Duplicate,
                QUERY_CANCELED | IDLE_IN_TRANSACTION_TIMEOUT => PortError::unavailable(e),
                c if c.starts_with(OPERATOR_INTERVENTION_PREFIX)
                    || c.starts_with(CONNECTION_EXCEPTION_PREFIX)
                    || c.starts_with(INSUFFICIENT_RESOURCES_PREFIX) =>
                {
                    PortError::unavailable(e)
                }
                _ => PortError::unexpected(e),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => PortError::unavailable(e),
        _ => PortError::unexpected(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_unavailable_and_hide_their_text() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::other("connection reset by peer")),
        ] {
            let p = port_error(e);
            assert!(matches!(p, PortError::Unavailable(_)), "{p:?}");
            assert_eq!(p.to_string(), "storage unavailable");
        }
    }

    #[test]
    fn other_driver_errors_are_unexpected_and_generic() {
        let p = port_error(sqlx::Error::Protocol("SELECT secret FROM x".into()));
        assert!(matches!(p, PortError::Unexpected(_)));
        assert!(!p.to_string().contains("SELECT"));
    }
}
