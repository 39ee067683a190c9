//! [`PgHarness`]: one PostgreSQL server shared by every test process, a
//! fresh database per test.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

use crate::process::{self, DataDir, Runner};
use crate::{Dropper, HarnessError, TestDatabase, DATABASE_PREFIX, DATABASE_URL_ENV, STALE_AFTER};

/// A PostgreSQL server for tests, shared by every test of the process.
#[derive(Debug)]
pub struct PgHarness {
    admin_url: url::Url,
}

static SHARED: OnceCell<PgHarness> = OnceCell::const_new();

impl PgHarness {
    /// The process-wide harness: connects to `WEFT_TEST_DATABASE_URL`, or
    /// starts (or reuses) the shared throwaway cluster. Also drops test
    /// databases abandoned by earlier runs (older than [`STALE_AFTER`]).
    ///
    /// # Errors
    /// [`HarnessError`] when no server can be had; the message says why.
    pub async fn shared() -> Result<&'static PgHarness, HarnessError> {
        SHARED
            .get_or_try_init(|| async {
                let admin_url = match std::env::var(DATABASE_URL_ENV) {
                    Ok(u) if !u.trim().is_empty() => url::Url::parse(u.trim())?,
                    _ => {
                        let port = tokio::task::spawn_blocking(cluster::ensure_running).await??;
                        url::Url::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))?
                    }
                };
                let harness = PgHarness { admin_url };
                drop_stale_databases(harness.admin_url.as_str()).await;
                Ok(harness)
            })
            .await
    }

    /// A URL of a fresh, empty database on the shared server, kept after
    /// the test (until [`STALE_AFTER`]); [`PgHarness::fresh_database`]
    /// drops it when the test passes.
    ///
    /// # Errors
    /// As [`PgHarness::shared`] and [`PgHarness::create_database`].
    pub async fn fresh_database_url() -> Result<String, HarnessError> {
        Self::shared().await?.create_database().await
    }

    /// A fresh, empty database on the shared server that is dropped again
    /// when the returned guard is, if the test passed (see
    /// [`TestDatabase`]); its URL is also its one direct URL.
    ///
    /// # Errors
    /// As [`PgHarness::shared`] and [`PgHarness::create_database`].
    pub async fn fresh_database() -> Result<TestDatabase, HarnessError> {
        let harness = Self::shared().await?;
        let url = harness.create_database().await?;
        TestDatabase::new(
            url.clone(),
            vec![url],
            Dropper::OnServer(harness.admin_url().to_owned()),
        )
    }

    /// Creates a new, empty database (`weft_test_<unix time>_<random>`) and
    /// returns its URL. The database is never shared with another test.
    ///
    /// # Errors
    /// [`HarnessError::Database`] when the server refuses.
    pub async fn create_database(&self) -> Result<String, HarnessError> {
        let name = new_database_name();
        let mut admin = PgConnection::connect(self.admin_url.as_str()).await?;
        // The name is generated from digits and hex only: safe to splice.
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        admin.close().await?;
        Ok(with_database(&self.admin_url, &name))
    }

    /// The URL of the server's maintenance database, for administrative
    /// queries (e.g. `pg_stat_activity`) on a connection that is not the
    /// service's.
    pub fn admin_url(&self) -> &str {
        self.admin_url.as_str()
    }

    /// The host and port of the server (for a pooler in front of it).
    pub(crate) fn host_port(&self) -> (String, u16) {
        (
            self.admin_url.host_str().unwrap_or("127.0.0.1").to_owned(),
            self.admin_url.port().unwrap_or(5432),
        )
    }

    /// The user and password of the admin URL (for a pooler's auth file).
    pub(crate) fn credentials(&self) -> (String, Option<String>) {
        let user = match self.admin_url.username() {
            "" => "postgres".to_owned(),
            u => u.to_owned(),
        };
        (user, self.admin_url.password().map(str::to_owned))
    }
}

/// `weft_test_<unix seconds>_<16 hex digits>`: unique, and its age readable
/// by [`drop_stale_databases`].
pub(crate) fn new_database_name() -> String {
    format!("{DATABASE_PREFIX}{}_{:016x}", unix_now(), fastrand::u64(..))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `base` with its path replaced by `/name`.
pub(crate) fn with_database(base: &url::Url, name: &str) -> String {
    let mut url = base.clone();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops database `name` (`WITH (FORCE)`) through `admin_url`, from any
/// context: `Drop` cannot await and may run inside a runtime or outside
/// one, so a short-lived thread with its own runtime issues the DROP. Best
/// effort: a failure only leaves the database for the stale sweep.
pub(crate) fn drop_database(admin_url: String, name: String) {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return;
    }
    let what = name.clone();
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .map_err(|e| e.to_string())?;
            // Checked above: digits, letters and underscores only.
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let result = admin.execute(sql.as_str()).await.map(|_| ());
            let _ = admin.close().await;
            result.map_err(|e| e.to_string())
        })
    })
    .join();
    if let Ok(Err(e)) = dropped {
        tracing::debug!(database = %what, error = %e, "could not drop a test database");
    }
}

/// Drops the test databases on the server of `admin_url` that are older
/// than [`STALE_AFTER`]. Best effort: a failure only leaves disk space in use.
pub(crate) async fn drop_stale_databases(admin_url: &str) {
    let Ok(mut admin) = PgConnection::connect(admin_url).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'weft\\_test\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
    let now = unix_now();
    for name in names {
        let created = name
            .strip_prefix(DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if let (Some(created), true) = (created, valid_name) {
            if now.saturating_sub(created) > STALE_AFTER.as_secs() {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = admin.execute(sql.as_str()).await {
                    tracing::debug!(%name, error = %e, "could not drop a stale test database");
                }
            }
        }
    }
    let _ = admin.close().await;
}

/// The throwaway cluster: find binaries, init, start, reuse.
mod cluster {
    use super::*;

    const CONFIG: &str = "
# weft-testkit: a throwaway cluster for tests. Loopback only; durability off.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
";

    /// Makes sure the shared cluster is up; returns its port.
    pub(super) fn ensure_running() -> Result<u16, HarnessError> {
        let uid = process::current_uid()?;
        let base = std::env::temp_dir().join(format!("weft-test-pg-{uid}"));
        let _lock = process::lock_dir(&base)?;
        let bin = process::find_bin_dir(None).ok_or(HarnessError::NoBinaries)?;
        let runner = Runner::new(bin, base.clone())?;
        runner.own(&base)?;
        let dir = DataDir {
            data: base.join("data"),
            log: base.join("server.log"),
        };
        if let Some(port) = dir.running_port() {
            if runner.answers(port) {
                return Ok(port);
            }
            // Ours, but not answering: stop it hard before starting afresh.
            let _ = dir.stop(&runner, "immediate");
        }
        if dir.data.join("PG_VERSION").exists()
            && dir.start(&runner, Some(process::free_port()?)).is_ok()
        {
            if let Some(port) = dir.running_port() {
                return Ok(port);
            }
        }
        // Never initialised, half-initialised or unstartable: start over.
        if dir.data.exists() {
            std::fs::remove_dir_all(&dir.data)
                .map_err(crate::io(format!("removing {}", dir.data.display())))?;
        }
        dir.init(&runner, CONFIG)?;
        dir.start(&runner, Some(process::free_port()?))?;
        dir.running_port().ok_or_else(|| HarnessError::Command {
            command: "pg_ctl start".into(),
            status: "started".into(),
            output: "no running postmaster found after start".into(),
        })
    }
}
