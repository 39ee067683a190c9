//! [`CitusHarness`]: a Citus cluster (coordinator + 2 workers, each a
//! PostgreSQL with `citus.so` preloaded) for tests.
//!
//! How a fresh database is made cheaply: Citus keeps its metadata (the
//! extension, the node list) per database, on every node. Setting that up
//! per test (`CREATE EXTENSION citus` on three nodes, then registering the
//! nodes) costs seconds. Instead the harness prepares it once, in a
//! template database `weft_citus_template` on every node: the extension
//! created on each, then `citus_set_coordinator_host` and `citus_add_node`
//! on the coordinator (which syncs the node list into the workers'
//! template). The template is then closed to connections and the nodes
//! restarted, so that no Citus maintenance process sits in it (PostgreSQL
//! refuses to copy a database someone is connected to). A test database is
//! `CREATE DATABASE … TEMPLATE weft_citus_template` on every node at once:
//! the same name everywhere, each a copy of its node's template, so the
//! coordinator finds the workers and the workers know the cluster. Citus's
//! own `CREATE DATABASE` propagation is not used: it only copies
//! `template1`.
//!
//! Each Citus database keeps a maintenance background worker per node, so
//! test databases are dropped from every node when their
//! [`TestDatabase`] drops, and the nodes allow many background workers.

use std::path::{Path, PathBuf};

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

use crate::postgres::{drop_stale_databases, new_database_name};
use crate::process::{self, DataDir, Runner};
use crate::{io, Dropper, HarnessError, TestDatabase};

/// The template every test database is copied from, on every node.
const TEMPLATE: &str = "weft_citus_template";

/// Directory prefix of dedicated clusters (the shared one is
/// `weft-test-citus-<uid>`).
const DEDICATED_PREFIX: &str = "weft-test-dedicated-citus-";

/// Written first in a cluster's `ready` file; a cluster set up by another
/// version of this harness (other node settings) is rebuilt.
const SETUP_VERSION: &str = "weft-citus-3";

/// Workers per cluster.
const WORKERS: usize = 2;

const INSTALL_HINT: &str =
    "no PostgreSQL under /usr/lib/postgresql (or on PATH) has citus.so in its \
     library directory. Install Citus's own packages for your PostgreSQL \
     (https://docs.citusdata.com/en/stable/installation/single_node.html, e.g. \
     postgresql-15-citus-13.0 from https://packagecloud.io/citusdata/community), \
     or build it from source: sudo ../shared/citus/install.sh";

/// A Citus cluster for tests: the shared one ([`CitusHarness::shared`]) or
/// a test's own ([`CitusHarness::dedicated`], stopped when dropped).
#[derive(Debug)]
pub struct CitusHarness {
    cluster: Cluster,
    /// The directory of a dedicated cluster (removed when dropped); `None`
    /// for the shared one.
    owned: Option<tempfile::TempDir>,
}

static SHARED: OnceCell<CitusHarness> = OnceCell::const_new();

impl CitusHarness {
    /// The cluster shared by every test process, started (or reused while
    /// every node answers) in `$TMPDIR/weft-test-citus-<uid>`. Also drops
    /// test databases abandoned by earlier runs.
    ///
    /// # Errors
    /// [`HarnessError::Missing`] when no PostgreSQL has the Citus extension
    /// installed; [`HarnessError::Command`] (with the node's log) when a
    /// node does not start or the setup fails.
    pub async fn shared() -> Result<&'static CitusHarness, HarnessError> {
        SHARED
            .get_or_try_init(|| async {
                let cluster = tokio::task::spawn_blocking(Cluster::ensure_shared).await??;
                for port in cluster.ports() {
                    drop_stale_databases(&cluster.url(port, "postgres")).await;
                }
                Ok(CitusHarness {
                    cluster,
                    owned: None,
                })
            })
            .await
    }

    /// A cluster of the caller's own, set up like the shared one in its own
    /// temporary directory, stopped (and removed) when dropped. Fault tests
    /// stop and start its workers ([`CitusHarness::stop_worker`]).
    ///
    /// # Errors
    /// As [`CitusHarness::shared`].
    pub async fn dedicated() -> Result<CitusHarness, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(DEDICATED_PREFIX)
            .tempdir()
            .map_err(io("creating a directory for a Citus cluster"))?;
        let path = dir.path().to_owned();
        let cluster = tokio::task::spawn_blocking(move || {
            Cluster::stop_orphans();
            process::write_owner(&path)?;
            Cluster::create(&path)
        })
        .await??;
        Ok(CitusHarness {
            cluster,
            owned: Some(dir),
        })
    }

    /// A fresh database on the shared cluster: the one call most tests need.
    ///
    /// # Errors
    /// As [`CitusHarness::shared`] and [`CitusHarness::create_database`].
    pub async fn fresh_database() -> Result<TestDatabase, HarnessError> {
        Self::shared().await?.create_database().await
    }

    /// Creates a fresh database on every node, with the Citus extension and
    /// the cluster's node list in it, and no tables.
    /// [`TestDatabase::url`] is the coordinator's;
    /// [`TestDatabase::direct_urls`] are the coordinator's then each
    /// worker's. Dropped from every node when the value drops, even after a
    /// failure.
    ///
    /// # Errors
    /// [`HarnessError::Database`] when a node refuses.
    pub async fn create_database(&self) -> Result<TestDatabase, HarnessError> {
        let name = new_database_name();
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE}");
        let creates = self.cluster.ports().into_iter().map(|port| {
            let (url, sql) = (self.cluster.url(port, "postgres"), sql.clone());
            async move {
                let mut admin = PgConnection::connect(&url).await?;
                admin.execute(sql.as_str()).await?;
                admin.close().await?;
                Ok::<(), HarnessError>(())
            }
        });
        let results = futures_join(creates).await;
        let urls: Vec<String> = self
            .cluster
            .ports()
            .into_iter()
            .map(|p| self.cluster.url(p, &name))
            .collect();
        // Dropped from every node (also those where the create succeeded)
        // if any create failed.
        let db = TestDatabase::new(
            urls[0].clone(),
            urls,
            Dropper::OnNodes(DropOnNodes {
                runner: self.cluster.runner.clone(),
                ports: self.cluster.ports(),
            }),
        )?;
        for r in results {
            r?;
        }
        Ok(db)
    }

    /// The coordinator's port (127.0.0.1).
    pub fn coordinator_port(&self) -> u16 {
        self.cluster.ports[0]
    }

    /// The workers' ports (127.0.0.1), in registration order.
    pub fn worker_ports(&self) -> &[u16] {
        &self.cluster.ports[1..]
    }

    /// The index (into [`CitusHarness::worker_ports`]) of the worker that
    /// holds the shard of distributed table `table` for distribution value
    /// `value`, in `db`.
    ///
    /// # Errors
    /// [`HarnessError::NotDistributed`] when the table is not distributed;
    /// [`HarnessError::Database`] when the coordinator does not answer.
    pub async fn worker_holding(
        &self,
        db: &TestDatabase,
        table: &str,
        value: &str,
    ) -> Result<usize, HarnessError> {
        let mut conn = PgConnection::connect(db.url()).await?;
        let distributed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await?;
        if !distributed {
            return Err(HarnessError::NotDistributed(table.to_owned()));
        }
        let port: i32 = sqlx::query_scalar(
            "SELECT nodeport FROM citus_shards \
             WHERE shardid = get_shard_id_for_distribution_column($1::regclass, $2)",
        )
        .bind(table)
        .bind(value)
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        self.worker_ports()
            .iter()
            .position(|p| i32::from(*p) == port)
            .ok_or_else(|| {
                HarnessError::Database(sqlx::Error::Protocol(format!(
                    "the shard of {table} for {value} is on port {port}, not on a worker"
                )))
            })
    }

    /// Stops worker `index` of this (dedicated) cluster the way a crash
    /// does (`pg_ctl stop -m immediate`), waiting until it is down.
    ///
    /// # Errors
    /// [`HarnessError::NotDedicated`] on the shared cluster;
    /// [`HarnessError::Command`] when `pg_ctl` fails.
    pub async fn stop_worker(&self, index: usize) -> Result<(), HarnessError> {
        self.dedicated_only("stopping a Citus worker")?;
        let node = self.cluster.worker(index)?;
        let runner = self.cluster.runner.clone();
        tokio::task::spawn_blocking(move || node.stop(&runner, "immediate")).await?
    }

    /// Starts worker `index` of this (dedicated) cluster again, on its
    /// port, waiting until it accepts connections.
    ///
    /// # Errors
    /// [`HarnessError::NotDedicated`] on the shared cluster;
    /// [`HarnessError::Command`] (with the node's log) when it does not start.
    pub async fn start_worker(&self, index: usize) -> Result<(), HarnessError> {
        self.dedicated_only("starting a Citus worker")?;
        let node = self.cluster.worker(index)?;
        let runner = self.cluster.runner.clone();
        tokio::task::spawn_blocking(move || node.start(&runner, None)).await?
    }

    fn dedicated_only(&self, what: &'static str) -> Result<(), HarnessError> {
        match self.owned {
            Some(_) => Ok(()),
            None => Err(HarnessError::NotDedicated(what)),
        }
    }
}

impl Drop for CitusHarness {
    fn drop(&mut self) {
        if self.owned.is_some() {
            for node in &self.cluster.nodes {
                let _ = node.stop(&self.cluster.runner, "immediate");
            }
        }
    }
}

/// Runs `futures` concurrently; their results in order.
async fn futures_join<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// Drops a test database from every node of a cluster (blocking).
#[derive(Debug, Clone)]
pub(crate) struct DropOnNodes {
    runner: Runner,
    ports: Vec<u16>,
}

impl DropOnNodes {
    /// Best effort: a node that is down keeps the database until a later
    /// run drops it as stale.
    pub(crate) fn drop_database(&self, name: &str) {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return;
        }
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let threads: Vec<_> = self
            .ports
            .iter()
            .map(|&port| {
                let (runner, sql) = (self.runner.clone(), sql.clone());
                std::thread::spawn(move || {
                    if let Err(e) = runner.psql(port, "postgres", &sql) {
                        tracing::debug!(port, error = %e, "could not drop a Citus test database");
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The nodes of one cluster on disk: `n0` is the coordinator.
#[derive(Debug)]
struct Cluster {
    base: PathBuf,
    nodes: Vec<DataDir>,
    ports: Vec<u16>,
    runner: Runner,
}

impl Cluster {
    fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    fn url(&self, port: u16, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{db}")
    }

    fn worker(&self, index: usize) -> Result<DataDir, HarnessError> {
        self.nodes
            .get(index + 1)
            .filter(|_| index < WORKERS)
            .cloned()
            .ok_or_else(|| HarnessError::Command {
                command: format!("worker {index}"),
                status: "no such worker".into(),
                output: format!("the cluster has {WORKERS} workers"),
            })
    }

    fn layout(base: &Path) -> Result<Self, HarnessError> {
        let bin = process::find_bin_dir(Some("citus.so")).ok_or(HarnessError::Missing {
            what: "the Citus extension",
            hint: INSTALL_HINT,
        })?;
        let runner = Runner::new(bin, base.to_owned())?;
        runner.own(base)?;
        let nodes = (0..=WORKERS)
            .map(|i| DataDir {
                data: base.join(format!("n{i}")),
                log: base.join(format!("n{i}.log")),
            })
            .collect();
        Ok(Self {
            base: base.to_owned(),
            nodes,
            ports: Vec::new(),
            runner,
        })
    }

    /// Stops the dedicated clusters of test processes that died without
    /// stopping them, and removes their directories. Best effort.
    fn stop_orphans() {
        for dir in process::orphaned_dirs(DEDICATED_PREFIX) {
            if let Ok(cluster) = Self::layout(&dir) {
                for node in &cluster.nodes {
                    if node.running_port().is_some() {
                        let _ = node.stop(&cluster.runner, "immediate");
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// The shared cluster: reuse it when it was set up completely and every
    /// node runs (starting stopped nodes on their ports, e.g. after a
    /// reboot); otherwise remove what is left and set it up afresh.
    fn ensure_shared() -> Result<Self, HarnessError> {
        let uid = process::current_uid()?;
        let base = std::env::temp_dir().join(format!("weft-test-citus-{uid}"));
        let _lock = process::lock_dir(&base)?;
        let mut cluster = Self::layout(&base)?;
        if let Some(ports) = cluster.recorded_ports() {
            cluster.ports = ports;
            if cluster.revive() {
                return Ok(cluster);
            }
        }
        for node in &cluster.nodes {
            if node.running_port().is_some() {
                let _ = node.stop(&cluster.runner, "immediate");
            }
        }
        let _ = std::fs::remove_file(base.join("ready"));
        for node in &cluster.nodes {
            if node.data.exists() {
                std::fs::remove_dir_all(&node.data)
                    .map_err(io(format!("removing {}", node.data.display())))?;
            }
        }
        Self::create(&base)
    }

    /// The ports of a completely set-up cluster of this harness version
    /// (its `ready` file).
    fn recorded_ports(&self) -> Option<Vec<u16>> {
        let text = std::fs::read_to_string(self.base.join("ready")).ok()?;
        let mut words = text.split_whitespace();
        if words.next() != Some(SETUP_VERSION) {
            return None;
        }
        let ports: Vec<u16> = words.map(str::parse).collect::<Result<_, _>>().ok()?;
        (ports.len() == WORKERS + 1).then_some(ports)
    }

    /// Whether every node runs on its recorded port and answers, after
    /// starting those that do not run.
    fn revive(&self) -> bool {
        self.nodes.iter().zip(&self.ports).all(|(node, &port)| {
            match node.running_port() {
                Some(p) if p == port => {}
                Some(_) => return false,
                None => {
                    if node.start(&self.runner, None).is_err() {
                        return false;
                    }
                }
            }
            self.runner.answers(port)
        })
    }

    /// Initialises, starts and sets up a new cluster in `base`.
    fn create(base: &Path) -> Result<Self, HarnessError> {
        let mut cluster = Self::layout(base)?;
        let mut ports = Vec::new();
        while ports.len() <= WORKERS {
            let p = process::free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        cluster.ports = ports;
        tracing::info!(base = %base.display(), ports = ?cluster.ports, "setting up a Citus cluster");
        for (node, port) in cluster.nodes.iter().zip(&cluster.ports) {
            node.init(&cluster.runner, &node_config(*port))?;
            node.start(&cluster.runner, None)?;
        }
        cluster.set_up_template()?;
        // No Citus maintenance process may stay connected to the template:
        // restart the nodes (it is closed to connections from now on).
        for node in &cluster.nodes {
            node.stop(&cluster.runner, "fast")?;
            node.start(&cluster.runner, None)?;
        }
        let ready = std::iter::once(SETUP_VERSION.to_owned())
            .chain(cluster.ports.iter().map(u16::to_string))
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(base.join("ready"), ready)
            .map_err(io("writing the cluster's ready file"))?;
        Ok(cluster)
    }

    fn set_up_template(&self) -> Result<(), HarnessError> {
        let r = &self.runner;
        for &port in &self.ports {
            r.psql(port, "postgres", &format!("CREATE DATABASE {TEMPLATE}"))?;
            r.psql(port, TEMPLATE, "CREATE EXTENSION citus")?;
        }
        let coordinator = self.ports[0];
        r.psql(
            coordinator,
            TEMPLATE,
            &format!("SELECT citus_set_coordinator_host('127.0.0.1', {coordinator})"),
        )?;
        for &worker in &self.ports[1..] {
            r.psql(
                coordinator,
                TEMPLATE,
                &format!("SELECT citus_add_node('127.0.0.1', {worker})"),
            )?;
        }
        for &port in &self.ports {
            r.psql(
                port,
                "postgres",
                &format!("ALTER DATABASE {TEMPLATE} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"),
            )?;
        }
        Ok(())
    }
}

/// `postgresql.conf` additions of every node.
fn node_config(port: u16) -> String {
    format!(
        "
# weft-testkit: a Citus node for tests. Loopback only.
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
citus.local_hostname = '127.0.0.1'
# 4 shards per distributed table instead of 32: still spread over both
# workers, and distributing a fresh test database's tables takes a
# fraction of the time.
citus.shard_count = 4
max_connections = 300
# One Citus maintenance worker per database with the extension.
max_worker_processes = 64
shared_buffers = 32MB
# No fsync (the machine does not crash), but synchronous commit stays on: a
# node stopped like a crash (fault tests) keeps every commit it acknowledged.
fsync = off
full_page_writes = off
log_min_messages = warning
"
    )
}
