//! [`BouncerHarness`]: a real PgBouncer in transaction-pooling mode in front
//! of the shared PostgreSQL ([`crate::PgHarness`]).
//!
//! The harness runs its own `pgbouncer` (the Debian package's binary, never
//! the system service) as an unprivileged user, with its own ini file in its
//! own directory, listening on 127.0.0.1 on a free port. The ini keeps
//! PgBouncer's defaults except what a test bed needs:
//!
//! - `pool_mode = transaction`: the mode that breaks session state, the one
//!   Weft must survive.
//! - `default_pool_size = 4` ([`BouncerHarness::POOL_SIZE`]): fewer server
//!   connections per database than one Weft pool, so two Weft instances
//!   really take turns on the same server connections.
//! - `auth_type = trust` with an auth file naming the user: the PostgreSQL
//!   behind it trusts loopback connections too.
//! - `* = host=… port=…`: every database of the server is reachable through
//!   the pooler without listing it, so each test's fresh database is.
//! - `max_client_conn = 500` (default 100): room for the clients of two
//!   tests running at once, each with two Weft pools.
//! - `server_idle_timeout = 10` (default 600 s): each test database gets its
//!   own server pool; idle server connections of finished tests are closed
//!   quickly instead of piling up against PostgreSQL's `max_connections`.
//!
//! Not set, on purpose: `ignore_startup_parameters`. A client sending a
//! startup parameter PgBouncer does not track (`extra_float_digits`,
//! `options`) is refused, exactly as in a default deployment.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::postgres::{with_database, PgHarness};
use crate::process::{self, Runner};
use crate::{io, Dropper, HarnessError, TestDatabase};

const INSTALL_HINT: &str =
    "install the Debian package: apt-get update && apt-get install -y pgbouncer \
     (scripts/test.sh and .ci/run do this when run as root)";

/// A PgBouncer for tests: the shared one ([`BouncerHarness::shared`]) or a
/// test's own ([`BouncerHarness::dedicated`], stopped when dropped).
#[derive(Debug)]
pub struct BouncerHarness {
    bouncer: Bouncer,
    pg: &'static PgHarness,
    /// The directory of a dedicated instance (removed when dropped);
    /// `None` for the shared one.
    owned: Option<tempfile::TempDir>,
}

/// What PgBouncer reports for one database's pool (`SHOW POOLS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerConnections {
    /// Client connections linked to a server connection right now.
    pub clients_active: u32,
    /// Client connections waiting for a server connection.
    pub clients_waiting: u32,
    /// Server connections open to PostgreSQL for this database, whatever
    /// their state (active, idle, used, tested, logging in).
    pub servers: u32,
}

static SHARED: OnceCell<BouncerHarness> = OnceCell::const_new();

impl BouncerHarness {
    /// Server connections PgBouncer opens per database (and user):
    /// `default_pool_size`.
    pub const POOL_SIZE: u32 = 4;

    /// The PgBouncer shared by every test process, started (or reused
    /// while it answers) in front of [`PgHarness::shared`].
    ///
    /// # Errors
    /// [`HarnessError::Missing`] when `pgbouncer` is not installed; as
    /// [`PgHarness::shared`]; [`HarnessError::Command`] (with PgBouncer's
    /// log) when it does not start.
    pub async fn shared() -> Result<&'static BouncerHarness, HarnessError> {
        SHARED
            .get_or_try_init(|| async {
                let pg = PgHarness::shared().await?;
                let exe = find_pgbouncer()?;
                let bouncer =
                    tokio::task::spawn_blocking(move || Bouncer::ensure_shared(exe, pg)).await??;
                Ok(BouncerHarness {
                    bouncer,
                    pg,
                    owned: None,
                })
            })
            .await
    }

    /// A PgBouncer of the caller's own, in front of [`PgHarness::shared`],
    /// configured like the shared one, in its own temporary directory;
    /// stopped (and its directory removed) when dropped. Fault tests stop
    /// and restart it ([`BouncerHarness::restart`]).
    ///
    /// # Errors
    /// As [`BouncerHarness::shared`].
    pub async fn dedicated() -> Result<BouncerHarness, HarnessError> {
        let pg = PgHarness::shared().await?;
        let exe = find_pgbouncer()?;
        let dir = tempfile::Builder::new()
            .prefix(DEDICATED_PREFIX)
            .tempdir()
            .map_err(io("creating a directory for PgBouncer"))?;
        let path = dir.path().to_owned();
        let bouncer = tokio::task::spawn_blocking(move || -> Result<Bouncer, HarnessError> {
            stop_orphans(&exe);
            process::write_owner(&path)?;
            let b = Bouncer::new(exe, path, process::free_port()?)?;
            b.write_config(pg)?;
            b.start()?;
            Ok(b)
        })
        .await??;
        Ok(BouncerHarness {
            bouncer,
            pg,
            owned: Some(dir),
        })
    }

    /// A fresh, empty database on the shared PostgreSQL, reached through
    /// the shared PgBouncer: the one call most tests need.
    ///
    /// # Errors
    /// As [`BouncerHarness::shared`] and [`BouncerHarness::create_database`].
    pub async fn fresh_database() -> Result<TestDatabase, HarnessError> {
        Self::shared().await?.create_database().await
    }

    /// Creates a fresh, empty database on the PostgreSQL behind this
    /// pooler: [`TestDatabase::url`] goes through PgBouncer, its one
    /// [`TestDatabase::direct_urls`] straight to PostgreSQL. Dropped when
    /// the guard is, if the test passed.
    ///
    /// # Errors
    /// [`HarnessError::Database`] when PostgreSQL refuses.
    pub async fn create_database(&self) -> Result<TestDatabase, HarnessError> {
        let direct = self.pg.create_database().await?;
        let name = url::Url::parse(&direct)?
            .path()
            .trim_start_matches('/')
            .to_owned();
        TestDatabase::new(
            self.url_for(&name)?,
            vec![direct],
            Dropper::OnServer(self.pg.admin_url().to_owned()),
        )
    }

    /// The URL of database `name` through this pooler.
    ///
    /// # Errors
    /// [`HarnessError::Url`] when the PostgreSQL URL cannot be rebuilt.
    pub fn url_for(&self, name: &str) -> Result<String, HarnessError> {
        let mut url = url::Url::parse(self.pg.admin_url())?;
        // invariant: a postgres:// URL has a host, so a port can be set.
        let _ = url.set_host(Some("127.0.0.1"));
        let _ = url.set_port(Some(self.bouncer.port));
        Ok(with_database(&url, name))
    }

    /// The port PgBouncer listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.bouncer.port
    }

    /// PgBouncer's pool numbers for database `name` (from the admin
    /// console's `SHOW POOLS`); all zero when it has no pool for it yet.
    ///
    /// # Errors
    /// [`HarnessError::Command`] when the admin console does not answer.
    pub async fn server_connections(&self, name: &str) -> Result<ServerConnections, HarnessError> {
        let b = self.bouncer.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || b.pools(&name)).await?
    }

    /// Stops this (dedicated) PgBouncer at once (SIGTERM: PgBouncer's
    /// immediate shutdown, cutting every client and server connection) and
    /// starts it again on the same port, as an operator's restart does.
    ///
    /// # Errors
    /// [`HarnessError::NotDedicated`] on the shared instance; as
    /// [`BouncerHarness::start`].
    pub async fn restart(&self) -> Result<(), HarnessError> {
        self.stop().await?;
        self.start().await
    }

    /// Stops this (dedicated) PgBouncer at once (SIGTERM) and waits until
    /// it is gone.
    ///
    /// # Errors
    /// [`HarnessError::NotDedicated`] on the shared instance;
    /// [`HarnessError::Command`] when it does not exit within 10 s.
    pub async fn stop(&self) -> Result<(), HarnessError> {
        self.dedicated_only("stopping PgBouncer")?;
        let b = self.bouncer.clone();
        tokio::task::spawn_blocking(move || b.stop()).await?
    }

    /// Starts this (dedicated) PgBouncer again on its port, waiting until
    /// it answers.
    ///
    /// # Errors
    /// [`HarnessError::NotDedicated`] on the shared instance;
    /// [`HarnessError::Command`] (with its log) when it does not start.
    pub async fn start(&self) -> Result<(), HarnessError> {
        self.dedicated_only("starting PgBouncer")?;
        let b = self.bouncer.clone();
        tokio::task::spawn_blocking(move || b.start()).await?
    }

    fn dedicated_only(&self, what: &'static str) -> Result<(), HarnessError> {
        match self.owned {
            Some(_) => Ok(()),
            None => Err(HarnessError::NotDedicated(what)),
        }
    }
}

impl Drop for BouncerHarness {
    fn drop(&mut self) {
        if self.owned.is_some() {
            let _ = self.bouncer.stop();
        }
    }
}

/// Directory prefix of dedicated instances (the shared one is
/// `weft-test-pgbouncer-<uid>`).
const DEDICATED_PREFIX: &str = "weft-test-dedicated-pgbouncer-";

/// Stops the dedicated PgBouncers of test processes that died without
/// stopping them, and removes their directories. Best effort.
fn stop_orphans(exe: &std::path::Path) {
    for dir in process::orphaned_dirs(DEDICATED_PREFIX) {
        if let Ok(b) = Bouncer::new(exe.to_owned(), dir.clone(), 0) {
            let _ = b.stop();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn find_pgbouncer() -> Result<PathBuf, HarnessError> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or(HarnessError::Missing {
            what: "pgbouncer",
            hint: INSTALL_HINT,
        })
}

/// One PgBouncer process: its directory, port and how to run it.
#[derive(Debug, Clone)]
struct Bouncer {
    exe: PathBuf,
    dir: PathBuf,
    port: u16,
    runner: Runner,
}

impl Bouncer {
    fn new(exe: PathBuf, dir: PathBuf, port: u16) -> Result<Self, HarnessError> {
        let bin = process::find_bin_dir(None).ok_or(HarnessError::NoBinaries)?;
        let runner = Runner::new(bin, dir.clone())?;
        runner.own(&dir)?;
        Ok(Self {
            exe,
            dir,
            port,
            runner,
        })
    }

    fn ini_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.pid")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// The shared instance: reuse the running one when its configuration
    /// is current and it answers; otherwise stop what is left and start
    /// afresh (on the same port when it is free).
    fn ensure_shared(exe: PathBuf, pg: &PgHarness) -> Result<Bouncer, HarnessError> {
        let uid = process::current_uid()?;
        let dir = std::env::temp_dir().join(format!("weft-test-pgbouncer-{uid}"));
        let _lock = process::lock_dir(&dir)?;
        let old_port = std::fs::read_to_string(dir.join("pgbouncer.ini"))
            .ok()
            .and_then(|ini| {
                ini.lines()
                    .find_map(|l| l.strip_prefix("listen_port = "))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
        let b = Bouncer::new(exe, dir, old_port.unwrap_or(0))?;
        if old_port.is_some() {
            let current = std::fs::read_to_string(b.ini_path()).unwrap_or_default();
            if current == b.config(pg) && b.pid().is_some() && b.answers() {
                return Ok(b);
            }
        }
        // Stale: a dead pid file, an old configuration (the PostgreSQL
        // behind it moved), or a process that stopped answering.
        b.stop()?;
        let port = match old_port {
            Some(p) if process::port_is_free(p) => p,
            _ => process::free_port()?,
        };
        let b = Bouncer { port, ..b };
        b.write_config(pg)?;
        b.start()?;
        Ok(b)
    }

    fn config(&self, pg: &PgHarness) -> String {
        let (host, pg_port) = pg.host_port();
        format!(
            "\
;; weft-testkit: PgBouncer for tests. Loopback only; defaults otherwise,
;; except what the harness documents (crates/testkit/src/bouncer.rs).
[databases]
* = host={host} port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth}
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool}
max_client_conn = 500
server_idle_timeout = 10
logfile = {log}
pidfile = {pid}
",
            port = self.port,
            auth = self.dir.join("userlist.txt").display(),
            user = pg.credentials().0,
            pool = BouncerHarness::POOL_SIZE,
            log = self.log_path().display(),
            pid = self.pid_path().display(),
        )
    }

    fn write_config(&self, pg: &PgHarness) -> Result<(), HarnessError> {
        let (user, password) = pg.credentials();
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        // PgBouncer logs in to PostgreSQL with the password of the auth file.
        let userlist = format!(
            "{} {}\n",
            quote(&user),
            quote(password.as_deref().unwrap_or(""))
        );
        let auth = self.dir.join("userlist.txt");
        std::fs::write(&auth, userlist).map_err(io(format!("writing {}", auth.display())))?;
        std::fs::write(self.ini_path(), self.config(pg))
            .map_err(io(format!("writing {}", self.ini_path().display())))?;
        self.runner.own(&auth)?;
        self.runner.own(&self.ini_path())
    }

    /// The pid of our running PgBouncer, from its pid file.
    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        process::process_is(pid, "pgbouncer").then_some(pid)
    }

    /// Whether a query reaches PostgreSQL through this PgBouncer.
    fn answers(&self) -> bool {
        self.runner.psql(self.port, "postgres", "SELECT 1").is_ok()
    }

    fn start(&self) -> Result<(), HarnessError> {
        let _ = std::fs::remove_file(self.pid_path());
        let ini = process::arg(&self.ini_path());
        let exe = process::arg(&self.exe);
        // `-d`: daemonize once the listening socket is open.
        self.runner
            .run(&exe, &["-d", &ini])
            .map_err(|e| self.with_log(e))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.pid().is_some() && self.answers() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.with_log(HarnessError::Command {
            command: format!("{exe} -d {ini}"),
            status: "started".into(),
            output: format!("PgBouncer does not answer on 127.0.0.1:{}", self.port),
        }))
    }

    fn stop(&self) -> Result<(), HarnessError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        process::signal(pid, "TERM");
        if process::wait_gone(pid, Duration::from_secs(10)) {
            return Ok(());
        }
        process::signal(pid, "KILL");
        if process::wait_gone(pid, Duration::from_secs(5)) {
            Ok(())
        } else {
            Err(HarnessError::Command {
                command: format!("kill {pid}"),
                status: "still running".into(),
                output: "PgBouncer did not exit".into(),
            })
        }
    }

    fn pools(&self, database: &str) -> Result<ServerConnections, HarnessError> {
        let p = self.port.to_string();
        let out = self.runner.run(
            "psql",
            &[
                "-X",
                "-A",
                "-P",
                "footer=off",
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
                "-c",
                "SHOW POOLS",
            ],
        )?;
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split('|').collect();
        let col = |row: &[&str], name: &str| -> u32 {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| row.get(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut total = ServerConnections::default();
        for line in lines {
            let row: Vec<&str> = line.split('|').collect();
            if row.first() != Some(&database) {
                continue;
            }
            total.clients_active += col(&row, "cl_active");
            total.clients_waiting += col(&row, "cl_waiting");
            total.servers += ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
                .iter()
                .map(|c| col(&row, c))
                .sum::<u32>();
        }
        Ok(total)
    }

    fn with_log(&self, e: HarnessError) -> HarnessError {
        match e {
            HarnessError::Command {
                command,
                status,
                output,
            } => HarnessError::Command {
                command,
                status,
                output: format!(
                    "{output}\n--- {} ---\n{}",
                    self.log_path().display(),
                    process::tail(&self.log_path(), 20)
                ),
            },
            other => other,
        }
    }
}
