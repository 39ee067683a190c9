//! The connection pool under the guard: deadpool over sqlx connections.
//!
//! # Why not `sqlx::Pool`
//!
//! sqlx 0.8 (and 0.9) pings every connection when it goes back to its pool
//! — one more round trip per unit of work, after the response but on both
//! processes' CPU (measured: +9 % create-message throughput at 8 clients
//! without it, docs/BENCHMARKS.md). Weft's guard already knows exactly
//! which connections are clean: only those go back, the others are closed
//! (see `guard.rs`). So the pool here trusts the guard and returns a
//! connection without a round trip. `deadpool` (a small, widely used
//! generic async pool) does the bookkeeping: a fair FIFO wait queue with a
//! timeout, creation on demand up to a maximum, status numbers.
//!
//! A connection idle for longer than [`IDLE_CHECK`] is pinged before it is
//! handed out again, so one left broken by a database restart is replaced
//! instead of failing the next request.

use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult, Timeouts};
use deadpool::Runtime;
use sqlx::{ConnectOptions, Connection, Database};

use crate::store::PoolStats;

/// Idle time after which a connection is pinged before reuse.
pub const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How long closing one connection gracefully may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections for the pool.
pub struct Connector<DB: Database> {
    options: <DB::Connection as Connection>::Options,
    /// Run once on every new connection (session settings), if any.
    after_connect: Option<String>,
}

impl<DB: Database> std::fmt::Debug for Connector<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl<DB: Database> managed::Manager for Connector<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    type Type = DB::Connection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<DB::Connection, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        if let Some(sql) = &self.after_connect {
            sqlx::Executor::execute(&mut conn, sqlx::raw_sql(sql)).await?;
        }
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut DB::Connection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if metrics.last_used() > IDLE_CHECK {
            conn.ping().await.map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

/// A pooled connection: goes back to the pool when dropped.
pub type Pooled<DB> = Object<Connector<DB>>;

/// A pool of connections to one database. Cheap to clone.
pub struct Pool<DB: Database>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    inner: managed::Pool<Connector<DB>>,
}

impl<DB: Database> Clone for Pool<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Pool<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// None came free within the wait (pool timeout or the request's deadline).
    #[error("timed out waiting for a database connection")]
    Timeout,
    /// The pool was closed (the server is shutting down).
    #[error("the connection pool is closed")]
    Closed,
    /// Opening a new connection failed.
    #[error("cannot open a database connection")]
    Connect(#[source] sqlx::Error),
}

impl<DB: Database> Pool<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    /// A pool of at most `max` connections opened with `options` (then
    /// `after_connect`, if given, run on each), waiting at most
    /// `acquire_timeout` for one. Opens nothing until asked.
    ///
    /// # Errors
    /// Never in practice: deadpool refuses only a missing runtime for
    /// timeouts, and the Tokio runtime is always named here.
    pub fn new(
        options: <DB::Connection as Connection>::Options,
        after_connect: Option<String>,
        max: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, managed::BuildError> {
        let connector = Connector {
            options,
            after_connect,
        };
        let inner = managed::Pool::builder(connector)
            .max_size(usize::try_from(max.max(1)).unwrap_or(1))
            .timeouts(Timeouts {
                wait: Some(acquire_timeout),
                create: Some(acquire_timeout),
                recycle: Some(acquire_timeout),
            })
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self { inner })
    }

    /// A connection, waiting in FIFO order at most the pool's acquire
    /// timeout and never past `deadline`. Cancel-safe: a connection not yet
    /// handed out stays in the pool.
    ///
    /// # Errors
    /// [`AcquireError`].
    pub async fn acquire(&self, deadline: Option<Instant>) -> Result<Pooled<DB>, AcquireError> {
        let mut timeouts = self.inner.timeouts();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            timeouts.wait = Some(timeouts.wait.map_or(left, |w| w.min(left)));
        }
        self.inner
            .timeout_get(&timeouts)
            .await
            .map_err(|e| match e {
                managed::PoolError::Timeout(_) => AcquireError::Timeout,
                managed::PoolError::Closed => AcquireError::Closed,
                managed::PoolError::Backend(e) => AcquireError::Connect(e),
                managed::PoolError::PostCreateHook(_) | managed::PoolError::NoRuntimeSpecified => {
                    AcquireError::Closed
                }
            })
    }

    /// Open connections and how many of them are idle.
    pub fn stats(&self) -> PoolStats {
        let s = self.inner.status();
        PoolStats {
            size: u32::try_from(s.size).unwrap_or(u32::MAX),
            idle: u32::try_from(s.available).unwrap_or(u32::MAX),
        }
    }

    /// Closes the pool: later acquires fail at once; idle connections are
    /// closed gracefully (a `Terminate` to the server); connections in use
    /// are closed as they come back. Resolves once every connection is
    /// gone, or after `bound`.
    pub async fn close(&self, bound: Duration) {
        let idle = self.inner.retain(|_, _| false).removed;
        self.inner.close();
        for conn in idle {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        }
        let until = Instant::now() + bound;
        while self.inner.status().size > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Removes a connection from its pool (freeing its slot) and closes it on
/// a spawned task, bounded: for connections whose state is unknown. The
/// server (or SQLite, on close) rolls back whatever was open.
pub fn discard<DB: Database>(conn: Pooled<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let raw = Object::take(conn);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, raw.close()).await;
            });
        }
        Err(_) => drop(raw),
    }
}
