//! The PostgreSQL unit of work: the shared cancellation-safe guard
//! ([`weft_adapters_sqlx::TxConn`]) with PostgreSQL's `BEGIN`, and the
//! factory that opens it.
//!
//! # Every transaction carries its own time bounds
//!
//! `BEGIN` goes out over the simple protocol together with `SET LOCAL
//! statement_timeout` and `SET LOCAL idle_in_transaction_session_timeout`
//! — one message, one round trip. Settings made that way live exactly as
//! long as the transaction, on whatever server connection a pooler lent
//! it, so they hold behind PgBouncer in transaction mode (where startup
//! parameters and session `SET`s are lost, DESIGN.md "Beyond one machine"),
//! and they are lowered to the request's remaining deadline, so no request
//! holds a connection past it (DESIGN.md rule 6; API.md: 503 "wherever the
//! time went — pool, pooler queue, locks").

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::{Executor, PgConnection, Postgres};
use weft_adapters_sqlx::{Opened, Pool, TxConn, TxManager, TxSpec};
use weft_ports::{Mode, PortError, RequestContext, UnitOfWork, UnitOfWorkFactory};

use crate::config::Isolation;
use crate::error::port_error;

pub(crate) type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// PostgreSQL's half of the guard: the `BEGIN` with its bounds, the error
/// reading.
#[derive(Debug, Clone)]
pub(crate) struct PgTx {
    pub(crate) isolation: Isolation,
    pub(crate) statement_timeout: Duration,
    pub(crate) idle_in_transaction_timeout: Duration,
    /// Single reads may run without a transaction block: only on direct
    /// connections (statement cache on), whose session carries the time
    /// bound and read-only default ([`session_sql`]); behind a pooler in
    /// transaction mode an unnamed statement outside a transaction could
    /// be split across server connections.
    pub(crate) autocommit_reads: bool,
}

/// The session settings of a direct connection (statement cache on): the
/// time bound of a single read run without a transaction block, and
/// read-only by default, so such a read cannot write (ports rule 7).
/// Every transaction sets its own access mode and bounds anyway.
///
/// On a Citus coordinator, also `plan_cache_mode = force_custom_plan`: a
/// cached generic plan of a statement over two colocated tables (an append's
/// `WITH … UPDATE threads … INSERT INTO messages`, a message archive's
/// `UPDATE … FROM threads`) cannot be pruned to one shard, so Citus either
/// refuses it ("could not create distributed plan") or runs it on every
/// shard. Custom plans see the owner and stay single-shard router queries
/// (checked by the Citus suites, which refuse multi-shard queries). Unnamed
/// statements (statement cache off) are always planned that way.
pub(crate) fn session_sql(statement_timeout: Duration) -> String {
    format!(
        "DO $$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN \
             PERFORM set_config('plan_cache_mode', 'force_custom_plan', false); \
           END IF; \
         END $$; \
         SET statement_timeout = {}; SET default_transaction_read_only = on",
        millis(statement_timeout)
    )
}

/// The one message that opens a transaction: `BEGIN` with its isolation
/// and access mode, then the per-transaction time bounds in whole
/// milliseconds (never 0, which PostgreSQL reads as "no limit"). Only
/// numbers and fixed words are spliced in.
pub(crate) fn begin_sql(
    mode: Mode,
    isolation: Isolation,
    statement_timeout: Duration,
    idle_timeout: Duration,
) -> String {
    let begin = match (mode, isolation) {
        (Mode::ReadOnly | Mode::SingleRead, Isolation::ReadCommitted) => "BEGIN READ ONLY",
        (Mode::ReadOnly | Mode::SingleRead, Isolation::Serializable) => {
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
        }
        (Mode::ReadWrite, Isolation::ReadCommitted) => "BEGIN READ WRITE",
        (Mode::ReadWrite, Isolation::Serializable) => {
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE"
        }
    };
    format!(
        "{begin}; SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
        millis(statement_timeout),
        millis(idle_timeout)
    )
}

/// `COMMIT` or `ROLLBACK` in one simple-protocol round trip: the end of
/// every PostgreSQL transaction manager here (units of work and the
/// export's snapshot).
pub(crate) fn end_transaction<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(sqlx::raw_sql(sql)).await?;
        Ok(())
    })
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

impl TxManager for PgTx {
    type Db = Postgres;

    fn begin<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        spec: TxSpec,
    ) -> BoxFuture<'c, Result<Opened, sqlx::Error>> {
        let budget = spec.budget(self.statement_timeout);
        // A single read with the whole statement timeout before the
        // deadline runs on its own: one round trip instead of three, bounded
        // by the session's statement_timeout (never past the deadline, or
        // it would take the transaction path with a lower bound).
        if spec.mode == Mode::SingleRead
            && self.autocommit_reads
            && self.isolation == Isolation::ReadCommitted
            && budget >= self.statement_timeout
        {
            return Box::pin(async { Ok(Opened::Autocommit) });
        }
        let sql = begin_sql(
            spec.mode,
            self.isolation,
            budget,
            spec.budget(self.idle_in_transaction_timeout),
        );
        Box::pin(async move {
            conn.execute(sqlx::raw_sql(&sql)).await?;
            Ok(Opened::Transaction)
        })
    }

    fn end<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        end_transaction(conn, sql)
    }

    fn port_error(&self, e: sqlx::Error) -> PortError {
        port_error(e)
    }
}

/// An open PostgreSQL transaction for one request's owner. The
/// repositories on it are in `repo.rs`.
pub(crate) struct PgUnitOfWork {
    pub(crate) tx: TxConn<PgTx>,
    pub(crate) owner: String,
    mode: Mode,
    /// Whether statements may be prepared under a name and cached on the
    /// connection (see `PgConfig::statement_cache`).
    cache: bool,
}

impl PgUnitOfWork {
    /// A statement with this unit of work's statement-cache policy.
    pub(crate) fn query<'q>(&self, sql: &'q str) -> Query<'q> {
        sqlx::query(sql).persistent(self.cache)
    }

    pub(crate) async fn rows(&mut self, q: Query<'_>) -> Result<Vec<PgRow>, PortError> {
        self.tx.fetch_all(q).await
    }

    pub(crate) async fn row(&mut self, q: Query<'_>) -> Result<Option<PgRow>, PortError> {
        self.tx.fetch_optional(q).await
    }

    pub(crate) async fn exec(&mut self, q: Query<'_>) -> Result<PgQueryResult, PortError> {
        self.tx.execute(q).await
    }
}

#[async_trait]
impl UnitOfWork for PgUnitOfWork {
    fn mode(&self) -> Mode {
        self.mode
    }

    async fn commit(self: Box<Self>) -> Result<(), PortError> {
        self.tx.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<(), PortError> {
        self.tx.rollback().await
    }
}

/// Opens PostgreSQL units of work on a pool. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct PgUnitOfWorkFactory {
    pub(crate) pool: Pool<Postgres>,
    pub(crate) tx: Arc<PgTx>,
    pub(crate) cache: bool,
}

#[async_trait]
impl UnitOfWorkFactory for PgUnitOfWorkFactory {
    #[tracing::instrument(name = "pg.begin", skip_all, fields(request_id = %ctx.request_id(), ?mode))]
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let spec = TxSpec {
            mode,
            deadline: ctx.deadline(),
        };
        let tx = TxConn::begin(&self.pool, Arc::clone(&self.tx), spec).await?;
        Ok(Box::new(PgUnitOfWork {
            tx,
            owner: ctx.user().as_str().to_owned(),
            mode,
            cache: self.cache,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_carries_the_bounds_of_its_transaction() {
        assert_eq!(
            begin_sql(
                Mode::ReadOnly,
                Isolation::ReadCommitted,
                Duration::from_millis(1500),
                Duration::from_secs(15)
            ),
            "BEGIN READ ONLY; SET LOCAL statement_timeout = 1500; \
             SET LOCAL idle_in_transaction_session_timeout = 15000"
        );
        assert!(begin_sql(
            Mode::ReadWrite,
            Isolation::Serializable,
            Duration::ZERO,
            Duration::ZERO
        )
        .starts_with(
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE; SET LOCAL statement_timeout = 1;"
        ));
    }
}
