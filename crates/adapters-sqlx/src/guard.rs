//! The cancellation-safe transaction guard: one pooled connection inside a
//! transaction this crate opened itself, and the guarantee that the
//! connection never goes back to the pool dirty (DESIGN.md, unit-of-work
//! rule 4).
//!
//! # Why not `sqlx::Transaction`
//!
//! sqlx up to 0.9.0 can hand a connection back to the pool still inside a
//! transaction when `begin()` is cancelled during its round trip
//! (launchbadge/sqlx 4385, 4393; reproduced here: 7 of 300 cancelled
//! begins). So the guard owns the pooled connection ([`crate::pool`]),
//! sends `BEGIN`, `COMMIT` and `ROLLBACK` itself, and tracks what it knows
//! about the connection around every round trip ([`ConnState`]).
//!
//! # What happens to the connection
//!
//! - **Clean** (a `COMMIT`/`ROLLBACK` completed, or `BEGIN` certainly
//!   opened nothing): it goes back to the pool as usual.
//! - **Open, no statement in flight** (the unit of work was dropped on an
//!   error path, or its future was dropped at an await point outside the
//!   driver): a spawned task sends `ROLLBACK` off the request's path and
//!   returns the connection only if that completed within
//!   [`ROLLBACK_TIMEOUT`]; otherwise it closes it.
//! - **In flight** (the future was dropped while a statement, `BEGIN` or
//!   `COMMIT` was on the wire): the protocol state is unknown, so the
//!   connection is closed ([`crate::pool::discard`]); the server
//!   (or SQLite on close) rolls back, and the pool opens a replacement on
//!   demand.
//! - **Broken** (the driver reported a transport or protocol failure): closed.
//!
//! A single read ([`Mode::SingleRead`]) may run without a transaction
//! block at all when the manager says so ([`Opened::Autocommit`]): one
//! statement is atomic and sees one snapshot by itself, so the guard then
//! allows exactly one statement and sends no `BEGIN`/`COMMIT`.
//!
//! After any failed statement the guard refuses to commit: PostgreSQL has
//! aborted the transaction (a `COMMIT` would silently roll back), and on
//! SQLite a half-done unit of work must not commit either. `commit` then
//! rolls back and reports [`PortError::Unexpected`].
//!
//! The database-specific parts — the `BEGIN` statement (with PostgreSQL's
//! per-transaction timeouts, SQLite's deadline handler), which errors break
//! a connection, the SQLSTATE/result-code mapping — are a [`TxManager`],
//! the shape of sqlx's own `Transaction` + `TransactionManager`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::{Database, Execute, Executor};
use weft_ports::{Mode, PortError};

use crate::pool::{self, Pool, Pooled};

/// How long the background rollback of a dropped unit of work may take
/// before its connection is closed instead.
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a unit of work asks of its transaction when it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSpec {
    /// Read-only or read-write (DESIGN.md rule 7: a read-only one cannot write).
    pub mode: Mode,
    /// The request's deadline, if bounded: no statement of the transaction
    /// may run past it (DESIGN.md rule 6).
    pub deadline: Option<Instant>,
}

impl TxSpec {
    /// The time bound of one transaction: `limit`, or less when the
    /// request's deadline comes sooner. Never zero (a zero timeout means
    /// "no timeout" to PostgreSQL): a deadline already passed gives 1 ms,
    /// so the first statement fails at once with a timeout.
    pub fn budget(&self, limit: Duration) -> Duration {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match left {
            Some(left) if left < limit => left.max(Duration::from_millis(1)),
            _ => limit.max(Duration::from_millis(1)),
        }
    }
}

/// The database-specific half of the guard: how to open a transaction and
/// how to read the driver's errors. One per adapter, shared by all its
/// units of work.
pub trait TxManager: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;

    /// Opens the transaction described by `spec` on `conn`, a connection
    /// just taken from the pool and known to be outside any transaction.
    /// Should cost one round trip (the guard counts it as one: a drop
    /// during it closes the connection).
    fn begin<'c>(
        &'c self,
        conn: &'c mut <Self::Db as Database>::Connection,
        spec: TxSpec,
    ) -> BoxFuture<'c, Result<Opened, sqlx::Error>>;

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`), in one
    /// round trip over the simple protocol (nothing to prepare), after any
    /// clean-up the database needs first (SQLite removes its deadline
    /// handler, so neither the end nor the connection's next user is
    /// interrupted by a stale one).
    fn end<'c>(
        &'c self,
        conn: &'c mut <Self::Db as Database>::Connection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Whether a failed [`TxManager::begin`] certainly left no transaction
    /// open, so the connection can go back to the pool as it is (SQLite:
    /// `BEGIN IMMEDIATE` refused with `SQLITE_BUSY`). The default, `false`,
    /// rolls the connection back (or closes it) instead.
    fn begin_opened_nothing(&self, _e: &sqlx::Error) -> bool {
        false
    }

    /// Whether the connection that produced `e` may be broken (protocol
    /// state unknown), so it must be closed rather than rolled back. The
    /// default, [`breaks_connection`], suits sqlx's drivers.
    fn breaks_connection(&self, e: &sqlx::Error) -> bool {
        breaks_connection(e)
    }

    /// The one translation of this database's errors into port errors.
    fn port_error(&self, e: sqlx::Error) -> PortError;
}

/// What [`TxManager::begin`] opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A transaction block: statements until `COMMIT`/`ROLLBACK`.
    Transaction,
    /// Nothing: the unit of work is a [`Mode::SingleRead`] whose one
    /// statement runs on its own (atomic, one snapshot, bounded by the
    /// session's own time bound), so nothing needs ending.
    Autocommit,
}

/// sqlx's own reading of a failure: an error the database reported about a
/// statement (or a value that failed to decode) leaves the connection in a
/// known protocol state; anything else — I/O, TLS, protocol, a crashed
/// worker, a pool error — may not, so the connection must be closed.
pub fn breaks_connection(e: &sqlx::Error) -> bool {
    !matches!(
        e,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
    )
}

/// What the guard knows about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// No transaction open and nothing in flight: safe to reuse.
    Clean,
    /// Inside a transaction, no round trip in flight: reusable after a ROLLBACK.
    Open,
    /// A round trip was started and has not been seen to finish: if this is
    /// still the state when the guard drops, its future was dropped
    /// mid-statement and only closing the connection is safe.
    InFlight,
    /// The driver reported a transport or protocol failure.
    Broken,
}

/// A pooled connection inside a transaction the guard opened. See the
/// module docs for what happens to the connection in each state.
pub struct TxConn<M: TxManager>
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    /// `Some` until dropped (an `Option` so `Drop` can move it out).
    conn: Option<Pooled<M::Db>>,
    state: ConnState,
    /// A statement of this transaction failed: it must not commit.
    failed: bool,
    /// A transaction block is open (else a single read in autocommit).
    in_transaction: bool,
    /// Statements started so far (a single read allows one).
    statements: u32,
    manager: Arc<M>,
}

impl<M: TxManager> std::fmt::Debug for TxConn<M>
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxConn")
            .field("state", &self.state)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The request's deadline passed while the unit of work waited for a
/// connection (API.md "Errors": 503 wherever the time went).
#[derive(Debug, thiserror::Error)]
#[error("the request's deadline passed while waiting for a database connection")]
pub struct DeadlinePassed;

/// A guard method was called in a state the type system cannot rule out.
#[derive(Debug, thiserror::Error)]
pub enum Misuse {
    /// A round trip of this unit of work was cancelled (its future dropped)
    /// and the unit of work was used again: its state is unknown.
    #[error(
        "a previous statement of this unit of work was cancelled; the unit of work must be dropped"
    )]
    Interrupted,
    /// A statement failed earlier, so the transaction was rolled back
    /// instead of committed.
    #[error("commit refused: a statement of this unit of work failed, so it was rolled back")]
    CommitAfterFailure,
    /// A single read (run without a transaction) was asked for a second
    /// statement, which would see another snapshot.
    #[error("a single-read unit of work makes one repository call only")]
    SecondRead,
}

impl<M: TxManager> TxConn<M>
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    /// Takes a connection from `pool` (waiting at most until `spec`'s
    /// deadline, besides the pool's own acquire timeout) and opens the
    /// transaction on it.
    ///
    /// # Errors
    /// [`PortError::Unavailable`] when no connection comes in time or the
    /// database cannot be reached; whatever the manager maps a failed
    /// `BEGIN` to (e.g. [`PortError::Conflict`] for SQLite's busy writer).
    pub async fn begin(
        pool: &Pool<M::Db>,
        manager: Arc<M>,
        spec: TxSpec,
    ) -> Result<Self, PortError> {
        // Whatever kept us from a connection — pool timeout, the request's
        // deadline, a refused or unknown database, credentials, a server
        // shutting down — the request could not reach its data: 503, never
        // a 500 that would blame the request itself. `acquire` is
        // cancel-safe.
        let conn = pool
            .acquire(spec.deadline)
            .await
            .map_err(PortError::unavailable)?;
        let mut tx = Self {
            conn: Some(conn),
            state: ConnState::InFlight,
            failed: false,
            in_transaction: true,
            statements: 0,
            manager,
        };
        // From here on a drop closes the connection (in flight) until BEGIN
        // is seen to complete.
        let manager = Arc::clone(&tx.manager);
        let result = match tx.conn.as_deref_mut() {
            Some(conn) => manager.begin(conn, spec).await,
            // invariant: set to Some just above; only Drop takes it.
            None => return Err(PortError::unexpected(Misuse::Interrupted)),
        };
        match result {
            Ok(opened) => {
                tx.in_transaction = opened == Opened::Transaction;
                tx.state = ConnState::Open;
                Ok(tx)
            }
            Err(e) => {
                tx.state = if manager.breaks_connection(&e) {
                    ConnState::Broken
                } else if manager.begin_opened_nothing(&e) {
                    ConnState::Clean
                } else {
                    // Part of a multi-statement BEGIN may have run: roll back.
                    ConnState::Open
                };
                Err(manager.port_error(e))
            }
        }
    }

    /// The connection for the next round trip, marked in flight until
    /// [`TxConn::settle`] sees its result. Use it for one statement only.
    ///
    /// # Errors
    /// [`Misuse::Interrupted`] (as `Unexpected`) when an earlier round trip
    /// never settled (its future was dropped) or the connection is broken.
    pub fn start(&mut self) -> Result<&mut <M::Db as Database>::Connection, PortError> {
        if self.state != ConnState::Open {
            return Err(PortError::unexpected(Misuse::Interrupted));
        }
        if !self.in_transaction && self.statements > 0 {
            return Err(PortError::unexpected(Misuse::SecondRead));
        }
        self.statements += 1;
        match self.conn.as_deref_mut() {
            Some(conn) => {
                self.state = ConnState::InFlight;
                Ok(conn)
            }
            // invariant: only Drop takes the connection.
            None => Err(PortError::unexpected(Misuse::Interrupted)),
        }
    }

    /// Records the result of the round trip begun by [`TxConn::start`]:
    /// the connection is open again, or broken; a failure marks the
    /// transaction as not committable.
    ///
    /// # Errors
    /// The statement's error, mapped by the manager.
    pub fn settle<T>(&mut self, r: Result<T, sqlx::Error>) -> Result<T, PortError> {
        match r {
            Ok(v) => {
                self.state = ConnState::Open;
                Ok(v)
            }
            Err(e) => {
                self.failed = true;
                self.state = if self.manager.breaks_connection(&e) {
                    ConnState::Broken
                } else {
                    ConnState::Open
                };
                Err(self.manager.port_error(e))
            }
        }
    }

    /// Commits. Only a completed `COMMIT` makes the connection reusable.
    ///
    /// # Errors
    /// [`Misuse::CommitAfterFailure`] (as `Unexpected`, after rolling back)
    /// when a statement failed earlier; the manager's mapping of a failed
    /// `COMMIT` otherwise (a serialization failure is `Conflict`: it
    /// certainly did not commit; a lost connection is `Unavailable`: the
    /// outcome is unknown).
    pub async fn commit(mut self) -> Result<(), PortError> {
        if self.failed {
            self.end("ROLLBACK").await?;
            return Err(PortError::unexpected(Misuse::CommitAfterFailure));
        }
        self.end("COMMIT").await
    }

    /// Rolls back.
    ///
    /// # Errors
    /// The manager's mapping of a failed `ROLLBACK`; the connection is then
    /// closed instead of reused.
    pub async fn rollback(mut self) -> Result<(), PortError> {
        self.end("ROLLBACK").await
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`) through the
    /// manager; only a completed end makes the connection reusable.
    async fn end(&mut self, sql: &'static str) -> Result<(), PortError> {
        if !self.in_transaction {
            // A single read in autocommit: nothing open, nothing to end.
            if self.state != ConnState::Open {
                return Err(PortError::unexpected(Misuse::Interrupted));
            }
            self.state = ConnState::Clean;
            return Ok(());
        }
        let manager = Arc::clone(&self.manager);
        let conn = self.start()?;
        match manager.end(conn, sql).await {
            Ok(()) => {
                self.state = ConnState::Clean;
                Ok(())
            }
            Err(e) => {
                // A database error on COMMIT (e.g. a serialization failure)
                // ends the transaction server-side; anything else leaves
                // the connection unknown. Either way, closing it is cheap
                // next to the cost of guessing wrong.
                self.state = ConnState::Broken;
                Err(manager.port_error(e))
            }
        }
    }

    /// What the guard knows about its connection now (for tests and logs).
    pub fn state(&self) -> ConnState {
        self.state
    }
}

/// The statements of a unit of work: each one round trip, tracked by the guard.
impl<M: TxManager> TxConn<M>
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    /// Runs a statement, returning what it affected.
    ///
    /// # Errors
    /// As [`TxConn::start`] and [`TxConn::settle`].
    pub async fn execute<'q, E>(
        &mut self,
        query: E,
    ) -> Result<<M::Db as Database>::QueryResult, PortError>
    where
        E: 'q + Execute<'q, M::Db>,
    {
        let conn = self.start()?;
        let r = conn.execute(query).await;
        self.settle(r)
    }

    /// Runs a query, returning all its rows.
    ///
    /// # Errors
    /// As [`TxConn::start`] and [`TxConn::settle`].
    pub async fn fetch_all<'q, E>(
        &mut self,
        query: E,
    ) -> Result<Vec<<M::Db as Database>::Row>, PortError>
    where
        E: 'q + Execute<'q, M::Db>,
    {
        let conn = self.start()?;
        let r = conn.fetch_all(query).await;
        self.settle(r)
    }

    /// Runs a query, returning its first row if any.
    ///
    /// # Errors
    /// As [`TxConn::start`] and [`TxConn::settle`].
    pub async fn fetch_optional<'q, E>(
        &mut self,
        query: E,
    ) -> Result<Option<<M::Db as Database>::Row>, PortError>
    where
        E: 'q + Execute<'q, M::Db>,
    {
        let conn = self.start()?;
        let r = conn.fetch_optional(query).await;
        self.settle(r)
    }
}

impl<M: TxManager> Drop for TxConn<M>
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        match self.state {
            // Dropping a pooled connection returns it to the pool.
            ConnState::Clean => {}
            ConnState::Open if !self.in_transaction => {}
            ConnState::Open => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    tracing::debug!("unit of work dropped inside its transaction: rolling back");
                    let manager = Arc::clone(&self.manager);
                    rt.spawn(rollback_in_background(conn, manager));
                }
                Err(_) => pool::discard(conn),
            },
            ConnState::InFlight | ConnState::Broken => {
                tracing::debug!(state = ?self.state, "closing a connection instead of returning it to the pool");
                pool::discard(conn);
            }
        }
    }
}

/// Rolls back a transaction abandoned between statements, then returns the
/// connection to the pool; closes it if the rollback fails or takes longer
/// than [`ROLLBACK_TIMEOUT`] (or if this task itself is dropped, e.g. at
/// runtime shutdown: the guard it builds is then in flight and closes).
async fn rollback_in_background<M: TxManager>(conn: Pooled<M::Db>, manager: Arc<M>)
where
    for<'c> &'c mut <M::Db as Database>::Connection: Executor<'c, Database = M::Db>,
{
    let mut tx = TxConn {
        conn: Some(conn),
        state: ConnState::Open,
        failed: false,
        in_transaction: true,
        statements: 0,
        manager,
    };
    match tokio::time::timeout(ROLLBACK_TIMEOUT, tx.end("ROLLBACK")).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "rollback of a dropped unit of work failed; closing its connection");
        }
        Err(_) => {
            tracing::warn!("rollback of a dropped unit of work timed out; closing its connection");
            tx.state = ConnState::Broken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_the_limit_or_what_is_left_of_the_deadline_and_never_zero() {
        let limit = Duration::from_secs(5);
        let none = TxSpec {
            mode: Mode::ReadOnly,
            deadline: None,
        };
        assert_eq!(none.budget(limit), limit);
        let far = TxSpec {
            mode: Mode::ReadOnly,
            deadline: Some(Instant::now() + Duration::from_secs(60)),
        };
        assert_eq!(far.budget(limit), limit);
        let near = TxSpec {
            mode: Mode::ReadOnly,
            deadline: Some(Instant::now() + Duration::from_secs(2)),
        };
        assert!(near.budget(limit) <= Duration::from_secs(2));
        assert!(near.budget(limit) > Duration::from_secs(1));
        let passed = TxSpec {
            mode: Mode::ReadWrite,
            deadline: Some(Instant::now()),
        };
        assert_eq!(passed.budget(limit), Duration::from_millis(1));
    }
}
