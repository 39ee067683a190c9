//! How to reach PostgreSQL and how to bound every transaction.

use std::time::Duration;

/// The isolation level of read-write units of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// PostgreSQL's default. Weft's writes stay correct at this level
    /// because every count change is one conditional UPDATE that locks its
    /// row, and every read-modify-write locks first (`lock_thread`).
    #[default]
    ReadCommitted,
    /// SERIALIZABLE: conflicting units of work fail with
    /// `PortError::Conflict` and are retried by the app. What a distributed
    /// SQL engine speaking the Postgres protocol runs at.
    Serializable,
}

/// Connection and time bounds of a [`crate::PgStore`].
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/db?…`. Never logged (it may hold
    /// a password): see the `Debug` impl.
    pub url: String,
    /// Most connections the pool opens.
    pub pool_max: u32,
    /// Longest a unit of work waits for a pooled connection before
    /// `begin` fails with `PortError::Unavailable`.
    pub acquire_timeout: Duration,
    /// `statement_timeout` of every transaction (`SET LOCAL`, sent with its
    /// `BEGIN`), lowered to the request's remaining deadline: a statement
    /// running longer — waiting on a lock included — is cancelled by the
    /// server (`PortError::Unavailable`, the API's 503).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every transaction (`SET
    /// LOCAL`, likewise bounded by the deadline): the server's own
    /// backstop, ending a session left idle inside a transaction.
    pub idle_in_transaction_timeout: Duration,
    /// Isolation of read-write units of work.
    pub isolation: Isolation,
    /// Whether statements are prepared once per connection under a name and
    /// reused (`true`, `WEFT_PG_STATEMENT_CACHE=on`), or sent as unnamed
    /// statements every time (`false`, for PgBouncer and other poolers in
    /// transaction mode, where a named statement prepared on one server
    /// connection is missing on the next). Either way every statement runs
    /// inside a transaction, which pins one server connection behind such
    /// a pooler.
    pub statement_cache: bool,
}

impl PgConfig {
    /// A configuration for `url` with production defaults: 10 connections,
    /// 5 s acquire timeout, 5 s statement timeout, 15 s idle-in-transaction
    /// backstop, READ COMMITTED, statement cache on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_max: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(15),
            isolation: Isolation::ReadCommitted,
            statement_cache: true,
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<redacted>")
            .field("pool_max", &self.pool_max)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("isolation", &self.isolation)
            .field("statement_cache", &self.statement_cache)
            .finish()
    }
}
