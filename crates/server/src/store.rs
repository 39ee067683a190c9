//! The adapter choice: the only place that names a concrete storage
//! adapter.
//!
//! Every adapter is used through one [`Backend`] trait, implemented here for
//! each store, and chosen by one `match` on the database URL in
//! [`Store::connect_url`]. Adding a database means one `impl Backend` and
//! one arm there; everything else in the server sees only [`Store`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_adapters_postgres::{PgConfig, PgStore};
use weft_adapters_sqlite::{SqliteConfig, SqliteStore};
use weft_http::metrics::PoolSnapshot;
use weft_ports::error::BoxError;
use weft_ports::UnitOfWorkFactory;

use crate::config::{DatabaseUrl, Settings};

use weft_adapters_sqlx::PoolStats;
/// The adapters' own error type (one for every sqlx adapter).
pub use weft_adapters_sqlx::StoreError as AdapterError;

/// What the server needs of a storage adapter beyond the ports: start-up,
/// readiness, pool numbers, shutdown.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), AdapterError>;
    /// Succeeds when the database answers and every migration is applied.
    async fn ready(&self) -> Result<(), AdapterError>;
    /// Connection numbers of the pool(s).
    fn pool_stats(&self) -> PoolStats;
    /// The unit-of-work factory the app runs on.
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory>;
    /// Closes the pool(s), waiting until every connection in use is returned.
    async fn close(&self);
}

#[async_trait]
impl Backend for SqliteStore {
    async fn migrate(&self) -> Result<(), AdapterError> {
        SqliteStore::migrate(self).await
    }
    async fn ready(&self) -> Result<(), AdapterError> {
        SqliteStore::ready(self).await
    }
    fn pool_stats(&self) -> PoolStats {
        SqliteStore::pool_stats(self)
    }
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        SqliteStore::factory(self)
    }
    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn migrate(&self) -> Result<(), AdapterError> {
        PgStore::migrate(self).await
    }
    async fn ready(&self) -> Result<(), AdapterError> {
        PgStore::ready(self).await
    }
    fn pool_stats(&self) -> PoolStats {
        PgStore::pool_stats(self)
    }
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        PgStore::factory(self)
    }
    async fn close(&self) {
        PgStore::close(self).await;
    }
}

/// An open database, whichever adapter serves it. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// The database kind and location, password masked (for logs).
    what: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("what", &self.what).finish()
    }
}

/// The database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening the database failed.
    #[error("could not open the database ({what})")]
    Connect {
        /// The database kind and location, password masked.
        what: String,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },
    /// Applying migrations failed.
    #[error("could not apply migrations")]
    Migrate(#[source] BoxError),
}

impl Store {
    /// Opens the database `settings` name. Does not migrate.
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the adapter's cause.
    pub async fn connect(settings: &Settings) -> Result<Self, StoreError> {
        Self::connect_url(
            &settings.database,
            settings.pool_max,
            settings.statement_timeout,
            settings.pg_statement_cache,
        )
        .await
    }

    /// Opens `database` with at most `pool_max` connections. Does not
    /// migrate. The one place an adapter is chosen. `pg_statement_cache`
    /// is `WEFT_PG_STATEMENT_CACHE` (PostgreSQL only).
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the adapter's cause.
    pub async fn connect_url(
        database: &DatabaseUrl,
        pool_max: u32,
        statement_timeout: Duration,
        pg_statement_cache: bool,
    ) -> Result<Self, StoreError> {
        let what = database.describe();
        let backend: Result<Arc<dyn Backend>, AdapterError> = match database {
            DatabaseUrl::Sqlite { url, .. } => {
                let mut cfg = SqliteConfig::new(url.clone());
                cfg.pool_max = pool_max;
                // SQLite has no per-statement timeout; the same budget bounds
                // all statements of one unit of work (see the adapter).
                cfg.transaction_timeout = statement_timeout;
                SqliteStore::connect(&cfg)
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Backend>)
            }
            DatabaseUrl::Postgres { url } => {
                let mut cfg = PgConfig::new(url.clone());
                cfg.pool_max = pool_max;
                cfg.statement_timeout = statement_timeout;
                cfg.statement_cache = pg_statement_cache;
                PgStore::connect(&cfg)
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Backend>)
            }
        };
        match backend {
            Ok(backend) => Ok(Self { backend, what }),
            Err(e) => Err(StoreError::Connect {
                what,
                source: Box::new(e),
            }),
        }
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] with the adapter's cause.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend
            .migrate()
            .await
            .map_err(|e| StoreError::Migrate(Box::new(e)))
    }

    /// The unit-of-work factory the app runs on.
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.backend.factory()
    }

    /// Whether the database answers and every migration is applied; the
    /// cause is logged, not returned (readiness answers yes or no).
    pub async fn ready(&self) -> bool {
        match self.backend.ready().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %weft_http::error::chain(&e), "not ready");
                false
            }
        }
    }

    /// Connection numbers for the pool gauges.
    pub fn pool(&self) -> PoolSnapshot {
        let st = self.backend.pool_stats();
        PoolSnapshot {
            size: u64::from(st.size),
            idle: u64::from(st.idle),
        }
    }

    /// Closes the pool, waiting until every connection in use is returned.
    pub async fn close(&self) {
        self.backend.close().await;
    }
}
