//! The store: the two connection pools, migrations, readiness, backups and
//! shutdown.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::SqlitePool;
use weft_adapters_sqlx::{PoolStats, StoreError};
use weft_ports::UnitOfWorkFactory;

use crate::uow::{SqliteTx, SqliteUnitOfWorkFactory};
use crate::SqliteConfig;

/// The embedded migrations of this adapter (its own, not PostgreSQL's).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// An open SQLite database: one writer connection (read-write units of work
/// queue for it in FIFO order) and a pool of read-only connections
/// (read-only units of work, in parallel thanks to WAL). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    tx: Arc<SqliteTx>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of `cfg`, in WAL mode
    /// with foreign keys on and the configured busy timeout. Does not
    /// migrate: call [`SqliteStore::migrate`].
    ///
    /// # Errors
    /// [`StoreError::Config`] for an unusable URL (e.g. in-memory);
    /// [`StoreError::Connect`] when the file cannot be opened or created.
    pub async fn connect(cfg: &SqliteConfig) -> Result<Self, StoreError> {
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
            .map_err(StoreError::Connect)?;
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
            tx: Arc::new(SqliteTx {
                transaction_timeout: cfg.transaction_timeout,
            }),
        })
    }

    /// Applies the embedded migrations that are not applied yet. Safe to run
    /// from several processes: SQLite serialises them on the write lock.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when a migration fails or an applied one
    /// was changed.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Migrate(Box::new(e)))
    }

    /// Succeeds when the database answers a read and every embedded
    /// migration is applied — the readiness probe.
    ///
    /// # Errors
    /// [`StoreError::MigrationsPending`] naming the missing versions;
    /// [`StoreError::Unavailable`] when the database does not answer.
    pub async fn ready(&self) -> Result<(), StoreError> {
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
            Err(e) => return Err(StoreError::Unavailable(e)),
        };
        let missing: Vec<i64> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::MigrationsPending(missing))
        }
    }

    pub(crate) fn uow_factory(&self) -> SqliteUnitOfWorkFactory {
        SqliteUnitOfWorkFactory {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            tx: Arc::clone(&self.tx),
        }
    }

    /// The unit-of-work factory the app runs on (sharing this store's pools).
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        Arc::new(self.uow_factory())
    }

    /// Current connection numbers, summed over the writer and the readers.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats::of(&self.writer).plus(PoolStats::of(&self.reader))
    }

    /// Writes a consistent copy of the live database to `to`, a new file
    /// that a fresh store opens with every object intact (API.md, "Data
    /// lifecycle": `weft backup`). Uses `VACUUM INTO` on a read-only
    /// connection: one snapshot, writers are not blocked, and the copy is
    /// compact and self-contained (no `-wal` beside it).
    ///
    /// # Errors
    /// [`StoreError::Config`] when `to` exists already (never overwritten)
    /// or is not valid UTF-8; [`StoreError::Unavailable`] when SQLite
    /// cannot write it.
    pub async fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::Config(format!(
                "{} exists already; a backup never overwrites a file",
                to.display()
            )));
        }
        let Some(target) = to.to_str() else {
            return Err(StoreError::Config(format!(
                "{} is not a UTF-8 path",
                to.display()
            )));
        };
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.reader)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }

    /// Closes both pools: new units of work fail with `Unavailable`, and this
    /// resolves once every connection in use has been returned and closed.
    ///
    /// Afterwards the database is one self-contained file (API.md,
    /// "Configuration": no data left only in its `-wal`): the read-only
    /// connections close first, because a read-only connection can neither
    /// checkpoint nor remove the WAL and would otherwise keep it alive;
    /// then the writer folds the WAL back into the database
    /// (`wal_checkpoint(TRUNCATE)`) and closes last, which lets SQLite
    /// delete the `-wal` and `-shm` files.
    pub async fn close(&self) {
        self.reader.close().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(%error, "could not checkpoint the SQLite WAL at close");
        }
        self.writer.close().await;
    }
}
