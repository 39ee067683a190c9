//! The storage adapter choice: the only place that names a concrete
//! storage adapter (the title model adapter is chosen in `titles`).
//!
//! Every storage adapter is used through one [`Backend`] trait, implemented
//! here for each store, and chosen by one `match` on the database URL in
//! [`Store::connect_url`]. Adding a database means one `impl Backend` and
//! one arm there; everything else in the server sees only [`Store`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_adapters_postgres::{PgConfig, PgStore};
use weft_adapters_sqlite::{SqliteConfig, SqliteStore};
use weft_adapters_sqlx::PoolStats;
use weft_http::metrics::PoolSnapshot;
use weft_ports::error::BoxError;
use weft_ports::{Maintenance, UnitOfWorkFactory};

use crate::config::{DatabaseUrl, Settings};

/// The adapters' own error type (one for every sqlx adapter).
pub use weft_adapters_sqlx::StoreError as AdapterError;

/// What the server needs of a storage adapter beyond the ports: start-up,
/// readiness, pool numbers, the data lifecycle, backups, shutdown.
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
    /// The data lifecycle's maintenance operations (sharing the pools).
    fn maintenance(&self) -> Arc<dyn Maintenance>;
    /// Writes a consistent copy of the live database to the new file `to`
    /// (API.md "Data lifecycle": `weft backup`), where the database can.
    async fn backup_to(&self, to: &Path) -> Result<(), AdapterError>;
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
    fn maintenance(&self) -> Arc<dyn Maintenance> {
        SqliteStore::maintenance(self)
    }
    async fn backup_to(&self, to: &Path) -> Result<(), AdapterError> {
        SqliteStore::backup_to(self, to).await
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
    fn maintenance(&self) -> Arc<dyn Maintenance> {
        PgStore::maintenance(self)
    }
    /// A server's backup is `pg_dump`'s job (`weft backup` says so before
    /// ever connecting); a copy through one connection would be neither
    /// consistent with the server's own tools nor restorable by them.
    async fn backup_to(&self, _to: &Path) -> Result<(), AdapterError> {
        Err(AdapterError::Config(
            "a PostgreSQL database is backed up with pg_dump".to_owned(),
        ))
    }
    async fn close(&self) {
        PgStore::close(self).await;
    }
}

/// An open database, whichever adapter serves it. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.backend.pool_stats())
            .finish()
    }
}

/// How long the start-up reachability check waits for PostgreSQL to accept
/// a TCP connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening the database failed.
    #[error("could not open the database ({what}){hint}")]
    Connect {
        /// The database kind and location, password masked.
        what: String,
        /// What was found wrong with the location, if anything (`": …"`).
        hint: String,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },
    /// Nothing accepts connections at the PostgreSQL server's address:
    /// said at once, instead of the pool's timeout seconds later.
    #[error("cannot reach PostgreSQL at {address}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// Refused, unresolvable, timed out…
        #[source]
        source: std::io::Error,
    },
    /// Applying migrations failed.
    #[error("could not apply migrations")]
    Migrate(#[source] BoxError),
}

impl Store {
    /// Opens the database `settings` name. Does not migrate.
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the adapter's cause;
    /// [`StoreError::Unreachable`] when nothing answers at PostgreSQL's address.
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
    /// As [`Store::connect`].
    pub async fn connect_url(
        database: &DatabaseUrl,
        pool_max: u32,
        statement_timeout: Duration,
        pg_statement_cache: bool,
    ) -> Result<Self, StoreError> {
        let connect_err = |source: AdapterError, hint: String| StoreError::Connect {
            what: database.describe(),
            hint,
            source: Box::new(source),
        };
        let backend: Arc<dyn Backend> = match database {
            DatabaseUrl::Sqlite { url, path } => {
                create_private(url, path);
                let mut cfg = SqliteConfig::new(url.clone());
                cfg.pool_max = pool_max;
                // SQLite has no per-statement timeout; the same budget bounds
                // all statements of one unit of work (see the adapter).
                cfg.transaction_timeout = statement_timeout;
                match SqliteStore::connect(&cfg).await {
                    Ok(store) => Arc::new(store),
                    Err(e) => {
                        let hint = diagnose_sqlite_location(&crate::config::absolute(path))
                            .map(|h| format!(": {h}"))
                            .unwrap_or_default();
                        return Err(connect_err(e, hint));
                    }
                }
            }
            DatabaseUrl::Postgres { url } => {
                probe_postgres(url).await?;
                let mut cfg = PgConfig::new(url.clone());
                cfg.pool_max = pool_max;
                cfg.statement_timeout = statement_timeout;
                cfg.statement_cache = pg_statement_cache;
                Arc::new(
                    PgStore::connect(&cfg)
                        .await
                        .map_err(|e| connect_err(e, String::new()))?,
                )
            }
        };
        Ok(Self { backend })
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

    /// The data lifecycle's maintenance operations on this database.
    pub fn maintenance(&self) -> Arc<dyn Maintenance> {
        self.backend.maintenance()
    }

    /// Writes a consistent copy of the live database to the new file `to`
    /// (SQLite; `weft backup`).
    ///
    /// # Errors
    /// The adapter's refusal (`to` exists, PostgreSQL) or failure.
    pub async fn backup_to(&self, to: &Path) -> Result<(), AdapterError> {
        self.backend.backup_to(to).await
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

    /// Connection numbers for the pool gauges. The adapters read size and
    /// idle count at two moments, so idle can briefly exceed size; it is
    /// capped at size, so `size - idle` (connections in use) never underflows.
    pub fn pool(&self) -> PoolSnapshot {
        let st = self.backend.pool_stats();
        PoolSnapshot {
            size: u64::from(st.size),
            idle: u64::from(st.idle.min(st.size)),
        }
    }

    /// Closes the pool, waiting until every connection in use is returned.
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// Checks that something accepts TCP connections at the PostgreSQL URL's
/// host and port, so a server that is down or a wrong port is named at once
/// ("cannot reach PostgreSQL at 127.0.0.1:5433: Connection refused")
/// instead of as a pool timeout. URLs this cannot read (a Unix socket, a
/// `host=` query parameter, several hosts) are left to the adapter.
///
/// # Errors
/// [`StoreError::Unreachable`] when the connection is refused, the host
/// does not resolve, or nothing answers within [`PROBE_TIMEOUT`].
pub async fn probe_postgres(url: &str) -> Result<(), StoreError> {
    let Some((host, port)) = postgres_tcp_address(url) else {
        return Ok(());
    };
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let unreachable = |source| StoreError::Unreachable {
        address: address.clone(),
        source,
    };
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e)),
        Err(_) => Err(unreachable(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ))),
    }
}

/// The TCP host and port of a `postgres://` URL (default port 5432), when
/// it names exactly one TCP host.
fn postgres_tcp_address(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed
        .query_pairs()
        .any(|(k, _)| k == "host" || k == "hostaddr")
    {
        return None;
    }
    let host = match parsed.host()? {
        url::Host::Domain(d) if d.is_empty() || d.contains(',') => return None,
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((host, parsed.port().unwrap_or(5432)))
}

/// Why an SQLite file could not be opened, found by looking at its
/// location: the directory missing, not a directory, or not writable, or
/// the file itself not writable. `None` when nothing looks wrong (the
/// adapter's own error then stands alone).
pub fn diagnose_sqlite_location(file: &std::path::Path) -> Option<String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
    match std::fs::metadata(dir) {
        Err(e) => {
            return Some(format!(
                "the directory {} cannot be used: {e}",
                dir.display()
            ))
        }
        Ok(m) if !m.is_dir() => {
            return Some(format!("{} is not a directory", dir.display()));
        }
        Ok(_) => {}
    }
    if file.exists() {
        return match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
        {
            Ok(_) => None,
            Err(e) => Some(format!(
                "the file {} cannot be opened for writing: {e}",
                file.display()
            )),
        };
    }
    // SQLite creates the file and its -wal/-shm beside it: try creating one.
    let probe = dir.join(format!(".weft-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "the directory {} is not writable: {e}",
            dir.display()
        )),
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

    #[test]
    fn the_probe_reads_the_tcp_address_of_a_postgres_url() {
        assert_eq!(
            postgres_tcp_address("postgres://u:p@db.example:6543/weft"),
            Some(("db.example".to_owned(), 6543))
        );
        assert_eq!(
            postgres_tcp_address("postgresql://127.0.0.1/weft"),
            Some(("127.0.0.1".to_owned(), 5432))
        );
        assert_eq!(
            postgres_tcp_address("postgres://[::1]:5433/weft"),
            Some(("::1".to_owned(), 5433))
        );
        assert_eq!(
            postgres_tcp_address("postgres:///weft?host=/var/run/postgresql"),
            None
        );
        assert_eq!(postgres_tcp_address("postgres://u@/weft"), None);
    }

    #[tokio::test]
    async fn a_refused_postgres_connection_is_named_with_its_address_at_once() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = probe_postgres(&format!("postgres://u:secret@127.0.0.1:{port}/db"))
            .await
            .unwrap_err();
        let text = weft_http::error::chain(&err);
        assert!(
            text.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn an_unusable_sqlite_location_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let hint = diagnose_sqlite_location(&file.join("w.db")).unwrap();
        assert!(
            hint.contains(&format!("{} is not a directory", file.display())),
            "{hint}"
        );
        let missing = dir.path().join("missing").join("w.db");
        let hint = diagnose_sqlite_location(&missing).unwrap();
        assert!(
            hint.contains(&dir.path().join("missing").display().to_string()),
            "{hint}"
        );
        assert_eq!(diagnose_sqlite_location(&dir.path().join("fine.db")), None);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the check leaves nothing behind"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_and_its_wal_and_shm_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("weft.db");
        let url = DatabaseUrl::parse(&format!("sqlite://{}", db.display())).unwrap();
        let store = Store::connect_url(&url, 2, Duration::from_secs(5), false)
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
