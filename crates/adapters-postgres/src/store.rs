//! The store: the pool, migrations, readiness, and the unit-of-work factory.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use weft_ports::{Mode, PortError, RequestContext, UnitOfWork, UnitOfWorkFactory};

use crate::config::{Isolation, PgConfig};
use crate::error::{acquire_error, PgError};
use crate::uow::PgUnitOfWork;

/// The embedded migrations (`crates/adapters-postgres/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The `application_name` of every connection: what operators (and the
/// leak checks) filter `pg_stat_activity` on.
pub const APPLICATION_NAME: &str = "weft";

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle or in use).
    pub size: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
}

/// Weft's storage on PostgreSQL: a connection pool and the factory of
/// units of work. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    isolation: Isolation,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool_stats())
            .field("isolation", &self.isolation)
            .finish()
    }
}

fn millis(d: std::time::Duration) -> String {
    // PostgreSQL treats 0 as "no timeout": never round a positive bound down to 0.
    let ms = d.as_millis().max(u128::from(!d.is_zero()));
    ms.to_string()
}

impl PgStore {
    /// Opens the pool and checks the server answers. Every connection is
    /// opened with `application_name=weft`, `statement_timeout` and
    /// `idle_in_transaction_session_timeout` as startup parameters (no
    /// extra round trip per connection).
    ///
    /// # Errors
    /// [`PgError::Url`] for a malformed URL; [`PgError::Connect`] when the
    /// server cannot be reached in `acquire_timeout`.
    pub async fn connect(cfg: &PgConfig) -> Result<Self, PgError> {
        let opts = PgConnectOptions::from_str(&cfg.url)
            .map_err(PgError::Url)?
            .application_name(APPLICATION_NAME)
            .options([
                ("statement_timeout", millis(cfg.statement_timeout)),
                (
                    "idle_in_transaction_session_timeout",
                    millis(cfg.idle_in_transaction_timeout),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(cfg.pool_max.max(1))
            .acquire_timeout(cfg.acquire_timeout)
            // The pool already pings a connection when it comes back (after
            // our COMMIT/ROLLBACK); pinging again on every acquire would add
            // a round trip to every unit of work.
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(PgError::Connect)?;
        Ok(Self {
            pool,
            isolation: cfg.isolation,
        })
    }

    /// Applies the embedded migrations not yet applied. Safe to run from
    /// several instances at once (sqlx takes an advisory lock).
    ///
    /// # Errors
    /// [`PgError::Migrate`] when a migration fails or the applied ones
    /// differ from the embedded ones.
    pub async fn migrate(&self) -> Result<(), PgError> {
        MIGRATOR.run(&self.pool).await.map_err(PgError::Migrate)
    }

    /// Whether the database answers and every embedded migration is applied:
    /// the readiness signal. Never fails; any error reads as "not ready".
    pub async fn ready(&self) -> bool {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let applied: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM _sqlx_migrations WHERE success AND version = ANY($1)",
        )
        .bind(&versions)
        .fetch_one(&self.pool)
        .await;
        match applied {
            Ok(n) => usize::try_from(n).is_ok_and(|n| n == versions.len()),
            Err(e) => {
                tracing::debug!(error = %e, "readiness check failed");
                false
            }
        }
    }

    /// Current pool occupancy.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        }
    }

    /// This store as a factory for the app (sharing the pool).
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        Arc::new(self.clone())
    }

    /// The same store (same pool) opening read-write units of work at
    /// `isolation` instead of the configured level.
    pub fn with_isolation(&self, isolation: Isolation) -> Self {
        Self {
            pool: self.pool.clone(),
            isolation,
        }
    }

    /// Closes the pool: waits for checked-out connections to come back, then
    /// closes every connection. Later `begin`s fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl UnitOfWorkFactory for PgStore {
    #[tracing::instrument(name = "pg.begin", skip_all, fields(request_id = %ctx.request_id(), ?mode, isolation = ?self.isolation))]
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let conn = self.pool.acquire().await.map_err(acquire_error)?;
        let uow =
            PgUnitOfWork::begin(conn, ctx.user().as_str().to_owned(), mode, self.isolation).await?;
        Ok(Box::new(uow))
    }
}
