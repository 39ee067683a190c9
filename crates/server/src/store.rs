//! The adapter choice: the only place that names a concrete adapter.
//!
//! `sqlite://…` opens the embedded SQLite store, `postgres://…` the
//! PostgreSQL one; both are handed to the app as the same
//! `UnitOfWorkFactory` port. Everything else in the server sees only
//! [`Store`]'s small surface: migrate, readiness, pool numbers, close.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weft_adapters_sqlite::{SqliteConfig, SqliteStore};
use weft_ports::error::BoxError;
use weft_ports::UnitOfWorkFactory;

use crate::config::{DatabaseUrl, Settings};
use weft_http::metrics::PoolSnapshot;

/// An open database, whichever adapter serves it. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// A PostgreSQL server.
    Postgres(weft_adapters_postgres::PgStore),
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
        )
        .await
    }

    /// Opens `database` with at most `pool_max` connections. Does not migrate.
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the adapter's cause.
    pub async fn connect_url(
        database: &DatabaseUrl,
        pool_max: u32,
        statement_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let connect_err = |source: BoxError| StoreError::Connect {
            what: database.describe(),
            source,
        };
        match database {
            DatabaseUrl::Sqlite { url, path } => {
                create_private(url, path);
                let mut cfg = SqliteConfig::new(url.clone());
                cfg.pool_max = pool_max;
                // SQLite has no per-statement timeout; the same budget bounds
                // all statements of one unit of work (see the adapter).
                cfg.transaction_timeout = statement_timeout;
                let store = SqliteStore::connect(&cfg)
                    .await
                    .map_err(|e| connect_err(Box::new(e)))?;
                Ok(Self::Sqlite(store))
            }
            DatabaseUrl::Postgres { url } => {
                let mut cfg = weft_adapters_postgres::PgConfig::new(url.clone());
                cfg.pool_max = pool_max;
                cfg.statement_timeout = statement_timeout;
                let store = weft_adapters_postgres::PgStore::connect(&cfg)
                    .await
                    .map_err(|e| connect_err(Box::new(e)))?;
                Ok(Self::Postgres(store))
            }
        }
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] with the adapter's cause.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s
                .migrate()
                .await
                .map_err(|e| StoreError::Migrate(Box::new(e))),
            Self::Postgres(s) => s
                .migrate()
                .await
                .map_err(|e| StoreError::Migrate(Box::new(e))),
        }
    }

    /// The unit-of-work factory the app runs on.
    pub fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        match self {
            Self::Sqlite(s) => s.factory(),
            Self::Postgres(s) => s.factory(),
        }
    }

    /// Whether the database answers and every migration is applied; the
    /// cause is logged, not returned (readiness answers yes or no).
    pub async fn ready(&self) -> bool {
        let result: Result<(), BoxError> = match self {
            Self::Sqlite(s) => s.ready().await.map_err(|e| Box::new(e) as BoxError),
            Self::Postgres(s) => {
                if s.ready().await {
                    Ok(())
                } else {
                    Err("PostgreSQL unreachable or migrations pending".into())
                }
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %weft_http::error::chain(e.as_ref()), "not ready");
                false
            }
        }
    }

    /// Connection numbers for the pool gauges.
    pub fn pool(&self) -> PoolSnapshot {
        match self {
            Self::Sqlite(s) => {
                let st = s.stats();
                PoolSnapshot {
                    size: u64::from(st.size),
                    idle: u64::from(st.idle),
                }
            }
            Self::Postgres(s) => {
                let st = s.pool_stats();
                PoolSnapshot {
                    size: u64::from(st.size),
                    idle: u64::from(st.idle),
                }
            }
        }
    }

    /// Closes the pool, waiting until every connection in use is returned.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

/// Creates the SQLite file owner-only (0600) before SQLite does, so the
/// database never exists with wider permissions (API.md "Operations":
/// files it creates are owner-only). SQLite gives its `-wal`, `-shm` and
/// journal files the permissions of the database file, so they are 0600
/// too. An empty file is a valid empty database. This is narrower than a
/// process-wide umask, which would also change every other file the
/// process or its libraries create. An existing file is left as it is;
/// any failure here is left for the adapter to report with its own words.
fn create_private(url: &str, path: &Path) {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let special = path.as_os_str().is_empty()
        || path.as_os_str() == ":memory:"
        || query
            .split('&')
            .any(|kv| kv == "mode=memory" || kv == "mode=ro");
    if special {
        return;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "could not pre-create the database file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_and_its_wal_and_shm_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("weft.db");
        let url = DatabaseUrl::parse(&format!("sqlite://{}", db.display())).unwrap();
        let store = Store::connect_url(&url, 2, Duration::from_secs(5))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        for name in ["weft.db", "weft.db-wal", "weft.db-shm"] {
            let meta =
                std::fs::metadata(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        store.close().await;
    }
}
