//! The store: the two connection pools, migrations, health and shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::SqlitePool;
use weft_ports::UnitOfWorkFactory;

use crate::{SqliteConfig, SqliteStoreError, SqliteUnitOfWorkFactory};

/// The embedded migrations of this adapter (its own, not PostgreSQL's).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connection counts for metrics, summed over the writer and the readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle or in use).
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
}

/// An open SQLite database: one writer connection (read-write units of work
/// queue for it in FIFO order) and a pool of read-only connections
/// (read-only units of work, in parallel thanks to WAL). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    transaction_timeout: Duration,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of `cfg`, in WAL mode
    /// with foreign keys on and the configured busy timeout. Does not
    /// migrate: call [`SqliteStore::migrate`].
    ///
    /// # Errors
    /// [`SqliteStoreError::Config`] for an unusable URL (e.g. in-memory);
    /// [`SqliteStoreError::Connect`] when the file cannot be opened or created.
    pub async fn connect(cfg: &SqliteConfig) -> Result<Self, SqliteStoreError> {
        let writer_opts = cfg.writer_options()?;
        let reader_opts = cfg.reader_options()?;
        let file = writer_opts.get_filename().display().to_string();
        // One writer: SQLite admits one write transaction at a time, so more
        // writer connections would only wait inside SQLite's busy handler
        // (sleep-and-poll, unfair) instead of the pool's FIFO queue. Kept
        // open (min 1) so the WAL and shared-memory files persist for the
        // read-only connections.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(cfg.acquire_timeout)
            // A local file has no network to go stale: skip the ping per acquire.
            .test_before_acquire(false)
            .connect_with(writer_opts)
            .await
            .map_err(SqliteStoreError::Connect)?;
        // Opened on demand, after the writer created the file and set WAL.
        let reader = SqlitePoolOptions::new()
            .max_connections(cfg.pool_max.max(1))
            .acquire_timeout(cfg.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(reader_opts);
        tracing::info!(file = %file, readers = cfg.pool_max.max(1), "SQLite database open");
        Ok(Self {
            writer,
            reader,
            transaction_timeout: cfg.transaction_timeout,
        })
    }

    /// Applies the embedded migrations that are not applied yet. Safe to run
    /// from several processes: SQLite serialises them on the write lock.
    ///
    /// # Errors
    /// [`SqliteStoreError::Migrate`] when a migration fails or an applied one
    /// was changed.
    pub async fn migrate(&self) -> Result<(), SqliteStoreError> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(SqliteStoreError::Migrate)
    }

    /// Succeeds when the database answers a read and every embedded
    /// migration is applied — the readiness probe.
    ///
    /// # Errors
    /// [`SqliteStoreError::MigrationsPending`] naming the missing versions;
    /// [`SqliteStoreError::Unavailable`] when the database does not answer.
    pub async fn ready(&self) -> Result<(), SqliteStoreError> {
        let applied: BTreeSet<i64> = match sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success = 1",
        )
        .fetch_all(&self.reader)
        .await
        {
            Ok(v) => v.into_iter().collect(),
            // SQLITE_ERROR (1) here is "no such table": the database
            // answers but was never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("1") => BTreeSet::new(),
            Err(e) => return Err(SqliteStoreError::Unavailable(e)),
        };
        let missing: Vec<i64> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(SqliteStoreError::MigrationsPending(missing))
        }
    }

    /// The unit-of-work factory over this store's pools.
    pub fn uow_factory(&self) -> SqliteUnitOfWorkFactory {
        SqliteUnitOfWorkFactory::new(
            self.writer.clone(),
            self.reader.clone(),
            self.transaction_timeout,
        )
    }

    /// The unit-of-work factory as the port the app takes.
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        Arc::new(self.uow_factory())
    }

    /// Current connection counts, for the pool metrics.
    pub fn stats(&self) -> PoolStats {
        let idle = self.writer.num_idle() + self.reader.num_idle();
        PoolStats {
            size: self.writer.size() + self.reader.size(),
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
        }
    }

    /// Closes both pools: new units of work fail with `Unavailable`, and this
    /// resolves once every connection in use has been returned and closed.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
