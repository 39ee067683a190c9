//! The store: the pool, migrations, readiness, and the unit-of-work factory.

use std::str::FromStr;
use std::sync::Arc;

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Postgres, Row};
use weft_adapters_sqlx::{Pool, PoolStats, StoreError};
use weft_ports::UnitOfWorkFactory;

use crate::config::{Isolation, PgConfig};
use crate::uow::{session_sql, PgTx, PgUnitOfWorkFactory};

/// How long `close` waits for connections in use to come back.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

/// The embedded migrations (`crates/adapters-postgres/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The `application_name` of every connection: what operators (and the
/// leak checks) filter `pg_stat_activity` on.
pub const APPLICATION_NAME: &str = "weft";

/// Weft's storage on PostgreSQL: a connection pool and the factory of
/// units of work. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
    tx: Arc<PgTx>,
    cache: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool_stats())
            .field("tx", &self.tx)
            .field("statement_cache", &self.cache)
            .finish()
    }
}

impl PgStore {
    /// Opens the pool and checks the server answers (one connection is
    /// opened now). `application_name=weft` is the only extra startup
    /// parameter (`extra_float_digits`, which PgBouncer refuses by default,
    /// is not sent), and every transaction sets its own time bounds (see
    /// `uow`). With the statement cache on (a direct connection) each
    /// connection also gets session defaults for single reads run without
    /// a transaction ([`crate::uow`]'s `session_sql`); with it off (behind a
    /// pooler) none at all.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a malformed URL; [`StoreError::Connect`]
    /// when the server cannot be reached in `acquire_timeout`.
    pub async fn connect(cfg: &PgConfig) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(APPLICATION_NAME)
            .extra_float_digits(None);
        let after_connect = cfg
            .statement_cache
            .then(|| session_sql(cfg.statement_timeout));
        let pool = Pool::new(opts, after_connect, cfg.pool_max, cfg.acquire_timeout)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        drop(
            pool.acquire(None)
                .await
                .map_err(|e| StoreError::Connect(Box::new(e)))?,
        );
        Ok(Self {
            pool,
            tx: Arc::new(PgTx {
                isolation: cfg.isolation,
                statement_timeout: cfg.statement_timeout,
                idle_in_transaction_timeout: cfg.idle_in_transaction_timeout,
                autocommit_reads: cfg.statement_cache,
            }),
            cache: cfg.statement_cache,
        })
    }

    /// Applies the embedded migrations not yet applied and, on a database
    /// with the `citus` extension, distributes the tables by owner (see
    /// `migrate.rs`). One transaction under a transaction-scoped lock: safe
    /// from several instances at once, behind a pooler in transaction mode,
    /// and across restarts.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when a migration fails (nothing of the run is
    /// kept) or the applied ones differ from the embedded ones.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrate::run(&self.pool, &MIGRATOR).await
    }

    /// Succeeds when the database answers and every embedded migration is
    /// applied: the readiness signal. One statement over the simple
    /// protocol (nothing prepared, so it is safe behind any pooler).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database does not answer;
    /// [`StoreError::MigrationsPending`] naming the missing versions.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let list = versions
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Only integers are spliced in.
        let sql =
            format!("SELECT version FROM _sqlx_migrations WHERE success AND version IN ({list})");
        let mut conn = self
            .pool
            .acquire(None)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let applied: Vec<i64> =
            match sqlx::Executor::fetch_all(&mut *conn, sqlx::raw_sql(&sql)).await {
                Ok(rows) => rows
                    .iter()
                    .filter_map(|r| r.try_get::<i64, _>(0).ok())
                    .collect(),
                // 42P01 undefined_table: the database answers but was never migrated.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
            };
        let missing: Vec<i64> = versions
            .into_iter()
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::MigrationsPending(missing))
        }
    }

    /// Current connection numbers.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// The unit-of-work factory the app runs on (sharing this pool).
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        Arc::new(PgUnitOfWorkFactory {
            pool: self.pool.clone(),
            tx: Arc::clone(&self.tx),
            cache: self.cache,
        })
    }

    /// The data lifecycle's maintenance operations on this pool (`lifecycle.rs`).
    pub fn maintenance(&self) -> Arc<dyn weft_ports::Maintenance> {
        let (pool, tx) = (self.pool.clone(), Arc::clone(&self.tx));
        Arc::new(crate::lifecycle::PgMaintenance::new(pool, tx, self.cache))
    }

    /// The same store (same pool) opening read-write units of work at
    /// `isolation` instead of the configured level.
    pub fn with_isolation(&self, isolation: Isolation) -> Self {
        let mut tx = (*self.tx).clone();
        tx.isolation = isolation;
        Self {
            pool: self.pool.clone(),
            tx: Arc::new(tx),
            cache: self.cache,
        }
    }

    /// Closes the pool: waits for checked-out connections to come back, then
    /// closes every connection. Later `begin`s fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close(CLOSE_BOUND).await;
    }
}
