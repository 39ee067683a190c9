//! Test harnesses for Weft's tests: [`PgHarness`] gives every test a fresh,
//! empty database on a real PostgreSQL ([`PgHarness::fresh_database`]
//! drops it again when the test passes).
//!
//! Where the server comes from:
//! - `WEFT_TEST_DATABASE_URL` set: that server; each test gets a new
//!   database on it (the URL's own database is only used to create others).
//! - otherwise: a throwaway cluster started from the installed binaries
//!   (`initdb`/`pg_ctl` from `PATH`, else the newest
//!   `/usr/lib/postgresql/*/bin`), shared by every test process of this user
//!   (cargo-nextest runs each test in its own process): its data lives in
//!   `$TMPDIR/weft-test-pg-<uid>`, a file lock there serializes start-up, and
//!   a cluster left running by an earlier run is reused while it answers.
//!   It listens on 127.0.0.1 only, on a free port, with `trust` auth,
//!   `fsync=off` and room for 300 connections. PostgreSQL refuses to run as
//!   root, so as root the binaries run as the `postgres` user via
//!   `runuser`.
//!
//! Architecture invariant: a dev-dependency only. Nothing in the service
//! depends on this crate; it knows nothing of Weft's schema (each adapter
//! migrates its own fresh database).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// Environment variable naming an existing server to test against.
pub const DATABASE_URL_ENV: &str = "WEFT_TEST_DATABASE_URL";

/// Prefix of every database the harness creates; databases with this
/// prefix older than [`STALE_AFTER`] are dropped by later runs.
pub const DATABASE_PREFIX: &str = "weft_test_";

/// Age after which a test database is considered abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 60 * 60);

/// The harness could not provide a database.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `initdb`/`pg_ctl` on `PATH` nor under `/usr/lib/postgresql/*/bin`.
    #[error("no PostgreSQL server binaries found (install postgresql, or set {DATABASE_URL_ENV})")]
    NoBinaries,
    /// A file-system step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A server binary failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its combined output (and the server log tail, for `pg_ctl start`).
        output: String,
    },
    /// The server answered with an error, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// `WEFT_TEST_DATABASE_URL` is not a URL.
    #[error("{DATABASE_URL_ENV} is not a valid URL: {0}")]
    Url(#[from] url::ParseError),
    /// The blocking start-up task panicked or was cancelled.
    #[error("cluster start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

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
                harness.drop_stale_databases().await;
                Ok(harness)
            })
            .await
    }

    /// A fresh, empty database on the shared server that is dropped again
    /// when the returned guard is, if the test passed (see [`TestDatabase`]).
    ///
    /// # Errors
    /// As [`PgHarness::shared`] and [`PgHarness::create_database`].
    pub async fn fresh_database() -> Result<TestDatabase, HarnessError> {
        let harness = Self::shared().await?;
        let url = harness.create_database().await?;
        let name = url::Url::parse(&url)?
            .path()
            .trim_start_matches('/')
            .to_owned();
        Ok(TestDatabase {
            url,
            name,
            admin_url: harness.admin_url.to_string(),
        })
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

    /// Creates a new, empty database (`weft_test_<unix time>_<random>`) and
    /// returns its URL. The database is never shared with another test.
    ///
    /// # Errors
    /// [`HarnessError::Database`] when the server refuses.
    pub async fn create_database(&self) -> Result<String, HarnessError> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!("{DATABASE_PREFIX}{secs}_{:016x}", fastrand::u64(..));
        let mut admin = PgConnection::connect(self.admin_url.as_str()).await?;
        // The name is generated above from digits and hex only: safe to splice.
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        admin.close().await?;
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        Ok(url.to_string())
    }

    /// The URL of the server's maintenance database, for administrative
    /// queries (e.g. `pg_stat_activity`) on a connection that is not the
    /// service's.
    pub fn admin_url(&self) -> &str {
        self.admin_url.as_str()
    }

    /// Best effort: a failure here only leaves disk space in use.
    async fn drop_stale_databases(&self) {
        let Ok(mut admin) = PgConnection::connect(self.admin_url.as_str()).await else {
            return;
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'weft\\_test\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
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
}

/// A test's own database, dropped (`DROP DATABASE … WITH (FORCE)`, ending
/// any session still on it) when this guard is dropped — unless the thread
/// is panicking: a failing test keeps its database for inspection, and a
/// later run drops it once older than [`STALE_AFTER`]. So passing tests
/// leave nothing behind on the shared server.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await and may run inside a runtime or outside one: a
        // short-lived thread with its own runtime issues the DROP. Best
        // effort: a failure only leaves the database for the stale sweep.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                // The name was generated by `create_database` from digits
                // and hex only: safe to splice.
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let result = admin.execute(sql.as_str()).await.map(|_| ());
                let _ = admin.close().await;
                result.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            tracing::debug!(database = %self.name, error = %e, "could not drop a test database");
        }
    }
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
        let uid = current_uid()?;
        let as_postgres = uid == 0;
        let base = std::env::temp_dir().join(format!("weft-test-pg-{uid}"));
        std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
        let lock_path = base.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        // Held until `lock` drops at the end of this function: one process
        // starts the cluster, the others wait and then reuse it.
        fs4::FileExt::lock(&lock).map_err(io("locking the cluster directory"))?;

        let bin = find_bin_dir().ok_or(HarnessError::NoBinaries)?;
        let runner = Runner {
            bin,
            as_postgres,
            base: base.clone(),
        };
        if as_postgres {
            runner.chown_to_postgres(&base)?;
        }
        let data = base.join("data");
        if let Some(port) = running_port(&data) {
            if runner.answers(port) {
                return Ok(port);
            }
            // Ours, but not answering: stop it hard before starting afresh.
            let _ = runner.run(
                "pg_ctl",
                &["stop", "-m", "immediate", "-w", "-D", &path(&data)],
            );
        }
        // A pid file left by a previous boot (or a killed server) would stop
        // the start: `running_port` found no live postmaster behind it.
        let _ = std::fs::remove_file(data.join("postmaster.pid"));

        if data.join("PG_VERSION").exists() && runner.start(&data).is_ok() {
            if let Some(port) = running_port(&data) {
                return Ok(port);
            }
        }
        // Never initialised, half-initialised or unstartable: start over.
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io(format!("removing {}", data.display())))?;
        }
        runner.init(&data)?;
        runner.start(&data)?;
        running_port(&data).ok_or_else(|| HarnessError::Command {
            command: "pg_ctl start".into(),
            status: "started".into(),
            output: "no running postmaster found after start".into(),
        })
    }

    fn path(p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    fn current_uid() -> Result<u32, HarnessError> {
        let out = Command::new("id")
            .arg("-u")
            .output()
            .map_err(io("running `id -u`"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| HarnessError::Command {
                command: "id -u".into(),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stdout).into_owned(),
            })
    }

    /// The port of a postmaster that is really running on `data`: its pid
    /// file names a live process that is a postgres server.
    fn running_port(data: &Path) -> Option<u16> {
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // After a reboot the pid may belong to an unrelated process.
        String::from_utf8_lossy(&cmdline)
            .contains("postgres")
            .then_some(port)
    }

    fn find_bin_dir() -> Option<PathBuf> {
        let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
        if let Some(paths) = std::env::var_os("PATH") {
            if let Some(d) = std::env::split_paths(&paths).find(|d| has_tools(d)) {
                // `initdb` on PATH is often a symlink into the versioned
                // directory that holds the other tools (pg_isready).
                let real = std::fs::canonicalize(d.join("initdb")).ok();
                return Some(
                    real.and_then(|r| r.parent().map(Path::to_path_buf))
                        .unwrap_or(d),
                );
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                has_tools(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    fn free_port() -> Result<u16, HarnessError> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
        l.local_addr()
            .map(|a| a.port())
            .map_err(io("finding a free port"))
    }

    struct Runner {
        bin: PathBuf,
        as_postgres: bool,
        base: PathBuf,
    }

    impl Runner {
        fn run(&self, tool: &str, args: &[&str]) -> Result<String, HarnessError> {
            let exe = self.bin.join(tool);
            let mut cmd = if self.as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            // The server user must be able to enter its working directory.
            cmd.args(args)
                .current_dir(&self.base)
                .stdin(std::process::Stdio::null());
            let out = cmd
                .output()
                .map_err(io(format!("running {}", exe.display())))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                Ok(text)
            } else {
                Err(HarnessError::Command {
                    command: format!("{tool} {}", args.join(" ")),
                    status: out.status.to_string(),
                    output: text,
                })
            }
        }

        fn chown_to_postgres(&self, dir: &Path) -> Result<(), HarnessError> {
            let id = |flag: &str| -> Result<u32, HarnessError> {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .map_err(io("looking up the postgres user"))?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .map_err(|_| HarnessError::Command {
                        command: format!("id {flag} postgres"),
                        status: out.status.to_string(),
                        output: String::from_utf8_lossy(&out.stderr).into_owned(),
                    })
            };
            let (uid, gid) = (id("-u")?, id("-g")?);
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", dir.display())))
        }

        fn init(&self, data: &Path) -> Result<(), HarnessError> {
            tracing::info!(data = %data.display(), "initialising a throwaway PostgreSQL cluster");
            self.run(
                "initdb",
                &[
                    "-D",
                    &path(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )?;
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).map_err(io("reading postgresql.conf"))?;
            text.push_str(CONFIG);
            std::fs::write(&conf, text).map_err(io("writing postgresql.conf"))
        }

        fn start(&self, data: &Path) -> Result<(), HarnessError> {
            let port = free_port()?;
            let log = self.base.join("server.log");
            let opts = format!("-p {port}");
            let r = self.run(
                "pg_ctl",
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    &path(data),
                    "-l",
                    &path(&log),
                    "-o",
                    &opts,
                ],
            );
            if let Err(HarnessError::Command {
                command,
                status,
                output,
            }) = r
            {
                let tail: String = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(HarnessError::Command {
                    command,
                    status,
                    output: format!("{output}\n--- server log ---\n{tail}"),
                });
            }
            r.map(|_| ())
        }

        fn answers(&self, port: u16) -> bool {
            let p = port.to_string();
            self.run("pg_isready", &["-h", "127.0.0.1", "-p", &p, "-t", "5"])
                .is_ok()
        }
    }
}
