//! The store: the two connection pools, migrations, readiness, backups and
//! shutdown.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::Sqlite;
use weft_adapters_sqlx::pool::Pooled;
use weft_adapters_sqlx::{Pool, PoolStats, StoreError};
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
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    tx: Arc<SqliteTx>,
}

/// How long `close` waits for connections in use to come back.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

async fn acquire(pool: &Pool<Sqlite>) -> Result<Pooled<Sqlite>, StoreError> {
    pool.acquire(None)
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
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
        let build = |opts, max| {
            Pool::new(opts, None, max, cfg.acquire_timeout)
                .map_err(|e| StoreError::Config(e.to_string()))
        };
        // One writer: SQLite admits one write transaction at a time, so more
        // writer connections would only wait inside SQLite's busy handler
        // (sleep-and-poll, unfair) instead of the pool's FIFO queue.
        let writer = build(writer_opts, 1)?;
        // Open it now: it creates the file and switches it to WAL (so the
        // read-only connections can open it), and a path that cannot be
        // written fails here, at start. It then stays open in the pool.
        drop(
            writer
                .acquire(None)
                .await
                .map_err(|e| StoreError::Connect(Box::new(e)))?,
        );
        // Opened on demand.
        let reader = build(reader_opts, cfg.pool_max.max(1))?;
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
        let mut conn = acquire(&self.writer).await?;
        MIGRATOR
            .run_direct(&mut *conn)
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
        let mut conn = acquire(&self.reader).await?;
        let applied: BTreeSet<i64> = match sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success = 1",
        )
        .fetch_all(&mut *conn)
        .await
        {
            Ok(v) => v.into_iter().collect(),
            // SQLITE_ERROR (1) here is "no such table": the database
            // answers but was never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("1") => BTreeSet::new(),
            Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
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
        self.writer.stats().plus(self.reader.stats())
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
        let mut conn = acquire(&self.reader).await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
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
        self.reader.close(CLOSE_BOUND).await;
        match acquire(&self.writer).await {
            Ok(mut conn) => {
                if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await
                {
                    tracing::warn!(%error, "could not checkpoint the SQLite WAL at close");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no writer connection to checkpoint the SQLite WAL at close");
            }
        }
        self.writer.close(CLOSE_BOUND).await;
    }
}
