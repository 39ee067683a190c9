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
                _ if lost_a_citus_node(db.message()) => PortError::unavailable(e),
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

/// Citus reports a worker it could not reach or lost mid-statement with the
/// worker's libpq text under a generic SQLSTATE (often `XX000`), not class
/// 08. These are the messages seen when a worker is stopped or restarted
/// (Citus 12/13, `cluster.sh` topology); like a lost connection, they are
/// transient and, at commit, leave the outcome unknown.
fn lost_a_citus_node(message: &str) -> bool {
    const FRAGMENTS: [&str; 7] = [
        "connection to the remote node",
        "could not commit transaction for shard",
        "could not commit transaction on any active node",
        "failed to COPY to shard",
        "server closed the connection unexpectedly",
        "SSL SYSCALL error: EOF",
        "could not establish any connections to the node",
    ];
    FRAGMENTS.iter().any(|f| message.contains(f))
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
    fn a_lost_citus_worker_is_transient_and_anything_else_is_not() {
        assert!(lost_a_citus_node(
            "connection to the remote node localhost:57637 failed with the following error: Connection refused"
        ));
        assert!(lost_a_citus_node(
            "could not commit transaction for shard 102008 on any active node"
        ));
        assert!(!lost_a_citus_node("relation \"threads\" does not exist"));
    }

    #[test]
    fn other_driver_errors_are_unexpected_and_generic() {
        let p = port_error(sqlx::Error::Protocol("SELECT secret FROM x".into()));
        assert!(matches!(p, PortError::Unexpected(_)));
        assert!(!p.to_string().contains("SELECT"));
    }
}
