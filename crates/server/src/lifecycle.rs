//! The data lifecycle commands' wiring (API.md "Data lifecycle"): opening
//! an existing database for `weft purge`/`export`/`erase-user`/`backup`,
//! the JSON lines `weft export` writes, the SQLite backup file, and what
//! `weft backup` says for PostgreSQL. The work itself is
//! `weft_app::lifecycle` on the adapters' `Maintenance` port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weft_app::lifecycle::{BatchPolicy, Lifecycle};
use weft_app::system::SystemClock;
use weft_http::dto::{MessageObject, ThreadObject};
use weft_ports::error::BoxError;
use weft_ports::Exported;

use crate::config::{absolute, mask_password, DatabaseArgs, DatabaseUrl};
use crate::store::{AdapterError, Store, StoreError};

/// A maintenance command could not reach the database it names, or the
/// database is not one it can work on.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database URL is not understood.
    #[error(transparent)]
    Url(#[from] crate::config::BadDatabaseUrl),
    /// The SQLite file does not exist: a maintenance command never creates
    /// a database (only `weft serve` and `weft migrate` do).
    #[error("there is no database at {0}: point WEFT_DATABASE_URL (or --database-url) at the one `weft serve` uses")]
    NoSuchFile(PathBuf),
    /// Opening failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The schema is older than this binary's (or the database is empty).
    #[error("{0} is not migrated to this version of weft: run `weft migrate` (or start `weft serve`) first")]
    NotMigrated(String),
}

/// Opens the existing database `args` name for a maintenance command:
/// never creates an SQLite file, and refuses a database whose migrations
/// are not all applied (the statements rely on the current schema).
///
/// # Errors
/// [`OpenError`] naming the database and what to do.
pub async fn open_existing(args: &DatabaseArgs) -> Result<(Store, DatabaseUrl), OpenError> {
    let database = DatabaseUrl::parse(&args.database_url)?;
    if let Some(path) = database.absolute_sqlite_path() {
        if !path.is_file() {
            return Err(OpenError::NoSuchFile(path));
        }
    }
    let store = Store::connect_url(
        &database,
        args.pool_max,
        Duration::from_millis(args.statement_timeout_ms),
        args.pg_statement_cache.is_on(),
    )
    .await?;
    if !store.ready().await {
        store.close().await;
        return Err(OpenError::NotMigrated(database.describe()));
    }
    Ok((store, database))
}

/// The lifecycle use cases over `store`, on the system clock.
pub fn lifecycle(store: &Store, policy: BatchPolicy) -> Lifecycle {
    Lifecycle::new(store.maintenance(), Arc::new(SystemClock), policy)
}

/// Writes one exported object as one line of JSON in the API's object
/// shape (API.md "Objects": a thread as `GET /v1/threads/{id}` returns it,
/// a message as `GET …/messages/{id}` does), told apart by `object`.
///
/// # Errors
/// The writer's failure (a closed pipe, a full disk).
pub fn write_json_line(out: &mut impl Write, item: &Exported) -> Result<(), BoxError> {
    match item {
        Exported::Thread(t) => serde_json::to_writer(&mut *out, &ThreadObject::from(t))?,
        Exported::Message(m) => serde_json::to_writer(&mut *out, &MessageObject::from(m))?,
    }
    out.write_all(b"\n")?;
    Ok(())
}

/// `weft backup --to` could not write its copy.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists: a backup never overwrites a file.
    #[error("{0} exists already; a backup never overwrites a file")]
    Exists(PathBuf),
    /// The target's directory is missing or not usable.
    #[error("cannot write into {dir}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not write the copy.
    #[error("writing the copy failed")]
    Copy(#[source] AdapterError),
    /// The finished copy could not be synced or moved into place.
    #[error("finishing the copy at {path} failed")]
    Finish {
        /// The target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes a consistent copy of the live SQLite database behind `store` to
/// the new file `to` (relative to the working directory) and returns its
/// absolute path.
///
/// The copy is made by the adapter (`VACUUM INTO`: one snapshot, writers
/// not blocked, no `-wal` beside it) into a private (0700) directory next
/// to `to`, made owner-only (0600, like the database itself), synced to
/// disk, and only then linked into place — so `to` never exists half
/// written, is never readable by others, and an existing file is never
/// replaced.
///
/// # Errors
/// [`BackupError`] naming the step that failed.
pub async fn backup_sqlite(store: &Store, to: &Path) -> Result<PathBuf, BackupError> {
    let to = absolute(to);
    if to.exists() {
        return Err(BackupError::Exists(to));
    }
    let dir = to
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let staging = tempfile::Builder::new()
        .prefix(".weft-backup-")
        .tempdir_in(&dir)
        .map_err(|source| BackupError::Directory {
            dir: dir.clone(),
            source,
        })?;
    let copy = staging.path().join("copy.db");
    store.backup_to(&copy).await.map_err(BackupError::Copy)?;
    let finish = |source| BackupError::Finish {
        path: to.clone(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).map_err(finish)?;
    }
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(finish)?;
    // A hard link fails if `to` appeared meanwhile: never a replaced file.
    match std::fs::hard_link(&copy, &to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Exists(to))
        }
        // Filesystems without hard links: a rename, after the check above.
        Err(_) => std::fs::rename(&copy, &to).map_err(finish)?,
    }
    Ok(to)
}

/// What `weft backup` prints for a PostgreSQL database: PostgreSQL's own
/// tools make its backups, with an example (password masked).
pub fn pg_dump_hint(url: &str) -> String {
    let masked = mask_password(url);
    format!(
        "PostgreSQL is backed up with its own tool, pg_dump (a consistent snapshot, safe while weft serves):\n\
         \n  pg_dump --format=custom --file=weft.dump '{masked}'\n\
         \nput the real password in place of *** (or in PGPASSWORD / ~/.pgpass); restore into an empty database with:\n\
         \n  pg_restore --no-owner --dbname='<url of the empty database>' weft.dump\n"
    )
}

/// `d` in the largest whole unit of `weft purge`'s syntax (`30d`, `36h`,
/// `90m`, `45s`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(human_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(human_duration(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(human_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(human_duration(Duration::from_secs(61)), "61s");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_pg_dump_hint_masks_the_password() {
        let hint = pg_dump_hint("postgres://weft:hunter2@db:5432/weft");
        assert!(
            hint.contains(
                "pg_dump --format=custom --file=weft.dump 'postgres://weft:***@db:5432/weft'"
            ),
            "{hint}"
        );
        assert!(!hint.contains("hunter2"), "{hint}");
        assert!(hint.contains("pg_restore"), "{hint}");
    }
}
