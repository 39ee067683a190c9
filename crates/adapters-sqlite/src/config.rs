//! Configuration of the SQLite store and its translation into sqlx options.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use weft_adapters_sqlx::StoreError;

/// How to open the SQLite database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database: `sqlite://weft.db` (relative to the working directory),
    /// `sqlite:///abs/path.db` (absolute), or a plain file path. The file is
    /// created on first start. In-memory databases are refused: the writer
    /// and the readers must share one file.
    pub url: String,
    /// Most read-only connections (read-only units of work run on these, in
    /// parallel). Writes always go through one dedicated writer connection,
    /// because SQLite admits one writer at a time (see the crate docs).
    pub pool_max: u32,
    /// How long a statement waits for another process's lock before failing
    /// with SQLITE_BUSY, reported as [`weft_ports::PortError::Conflict`].
    pub busy_timeout: Duration,
    /// How long `begin` waits for a free connection before failing with
    /// [`weft_ports::PortError::Unavailable`].
    pub acquire_timeout: Duration,
    /// How long a unit of work's statements may run in all, from `BEGIN`:
    /// SQLite has no statement timeout, so a progress handler interrupts any
    /// statement past this deadline (reported as
    /// [`weft_ports::PortError::Unavailable`]) and the unit of work rolls back.
    /// It bounds how long one transaction can hold the single writer.
    pub transaction_timeout: Duration,
}

impl SqliteConfig {
    /// The default database of `weft serve`: `weft.db` in the working directory.
    pub const DEFAULT_URL: &'static str = "sqlite://weft.db";

    /// A configuration for `url` with the defaults: 16 readers, a 5 s busy
    /// timeout, a 10 s acquire timeout and a 5 s transaction timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_max: 16,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            transaction_timeout: Duration::from_secs(5),
        }
    }

    /// Whether `url` names a SQLite database (as opposed to PostgreSQL), for
    /// the composition root's adapter choice.
    pub fn is_sqlite_url(url: &str) -> bool {
        url.starts_with("sqlite:")
    }

    /// Options shared by both pools: the file and the busy timeout.
    fn base(&self) -> Result<SqliteConnectOptions, StoreError> {
        let opts = if Self::is_sqlite_url(&self.url) {
            SqliteConnectOptions::from_str(&self.url)
                .map_err(|e| StoreError::Config(e.to_string()))?
        } else {
            SqliteConnectOptions::new().filename(&self.url)
        };
        // The writer and the readers are separate connections; an in-memory
        // database would give each its own empty database.
        let (database, params) = split_url(&self.url);
        let param = |k: &str, v: &str| params.split('&').any(|p| p == format!("{k}={v}"));
        if database.is_empty() || database == ":memory:" || param("mode", "memory") {
            return Err(StoreError::Config(
                "an in-memory database cannot be shared by the writer and the readers; name a file"
                    .into(),
            ));
        }
        if param("mode", "ro") {
            return Err(StoreError::Config(
                "mode=ro: the store needs a writable database".into(),
            ));
        }
        Ok(opts.busy_timeout(self.busy_timeout).foreign_keys(true))
    }

    /// The writer connection: creates the file, switches it to WAL (a
    /// persistent property of the file, so readers inherit it) and uses
    /// synchronous=NORMAL, which in WAL mode is durable against application
    /// crashes and loses at most the last commits on power loss.
    pub(crate) fn writer_options(&self) -> Result<SqliteConnectOptions, StoreError> {
        Ok(self
            .base()?
            .create_if_missing(true)
            .read_only(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal))
    }

    /// The reader connections: opened with SQLITE_OPEN_READONLY, so a write
    /// through them fails in SQLite itself (SQLITE_READONLY), whatever SQL
    /// the adapter sends. They set no journal mode (a read-only connection
    /// cannot change it; the file is already WAL).
    pub(crate) fn reader_options(&self) -> Result<SqliteConnectOptions, StoreError> {
        Ok(self.base()?.create_if_missing(false).read_only(true))
    }
}

/// The database part and the query string of a URL or path, as sqlx reads them.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    match rest.split_once('?') {
        Some((db, params)) => (db, params),
        None => (rest, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_urls_name_the_right_file() {
        let rel = SqliteConfig::new("sqlite://weft.db")
            .writer_options()
            .unwrap();
        assert_eq!(rel.get_filename().to_string_lossy(), "weft.db");
        let abs = SqliteConfig::new("sqlite:///tmp/x/weft.db")
            .writer_options()
            .unwrap();
        assert_eq!(abs.get_filename().to_string_lossy(), "/tmp/x/weft.db");
        let plain = SqliteConfig::new("/tmp/y.db").reader_options().unwrap();
        assert_eq!(plain.get_filename().to_string_lossy(), "/tmp/y.db");
    }

    #[test]
    fn in_memory_databases_are_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite://a.db?mode=ro",
        ] {
            assert!(
                SqliteConfig::new(url).writer_options().is_err(),
                "{url} should be refused"
            );
        }
    }
}
