//! Test harnesses for Weft's tests: every test gets a fresh, empty database
//! on a real server of the topology it runs on ([`TestDatabase`]), dropped
//! again when the test passes.
//!
//! - [`PgHarness`]: one PostgreSQL.
//! - [`BouncerHarness`]: a real PgBouncer (transaction pooling) in front of
//!   that PostgreSQL.
//! - [`CitusHarness`]: a Citus cluster, a coordinator and two workers.
//!
//! Each harness has a `shared()` server used by every test process of this
//! user (cargo-nextest runs each test in its own process): its state lives
//! in `$TMPDIR/weft-test-<kind>-<uid>`, a file lock there serializes
//! start-up, and a server left running by an earlier run is reused while it
//! answers; stale state (dead pid files, half-initialised directories, a
//! server that stopped answering) is cleaned up and started afresh. PgBouncer
//! and Citus also come `dedicated()`: private to one test, stopped when
//! dropped, for fault tests that stop and restart them without disturbing
//! the other tests (one orphaned by a killed test process is stopped by the
//! next `dedicated()` call).
//!
//! Where the PostgreSQL server comes from:
//! - `WEFT_TEST_DATABASE_URL` set: that server; each test gets a new
//!   database on it (the URL's own database is only used to create others).
//! - otherwise: a throwaway cluster started from the installed binaries
//!   (`initdb`/`pg_ctl` from `PATH`, else the newest
//!   `/usr/lib/postgresql/*/bin`), in `$TMPDIR/weft-test-pg-<uid>`. It
//!   listens on 127.0.0.1 only, on a free port, with `trust` auth,
//!   `fsync=off` and room for 300 connections.
//!
//! Every server listens on 127.0.0.1 only, on a free port. PostgreSQL and
//! PgBouncer refuse to run as root, so as root they run as the `postgres`
//! user via `runuser`. When a component is missing the error names it and
//! how to install it ([`HarnessError::Missing`]).
//!
//! Architecture invariant: a dev-dependency only. Nothing in the service
//! depends on this crate; it knows nothing of Weft's schema (each adapter
//! migrates its own fresh database).

use std::time::Duration;

mod bouncer;
mod citus;
mod postgres;
mod process;

pub use bouncer::{BouncerHarness, ServerConnections};
pub use citus::CitusHarness;
pub use postgres::PgHarness;

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
    /// A component a topology needs is not installed.
    #[error("{what} is not installed: {hint}")]
    Missing {
        /// What is missing (e.g. `pgbouncer`, `the Citus extension`).
        what: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// A call that only a dedicated (test-owned) server allows.
    #[error("{0} is only allowed on a dedicated server (other tests share this one)")]
    NotDedicated(&'static str),
    /// A table asked about is not a distributed (Citus) table.
    #[error("table {0} is not distributed (no row in pg_dist_partition)")]
    NotDistributed(String),
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
        /// Its combined output (and the server log tail, for a start).
        output: String,
    },
    /// The server answered with an error, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// `WEFT_TEST_DATABASE_URL` is not a URL.
    #[error("{DATABASE_URL_ENV} is not a valid URL: {0}")]
    Url(#[from] url::ParseError),
    /// The blocking start-up task panicked or was cancelled.
    #[error("server start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A fresh, empty database of one topology, never shared with another
/// test, dropped (`DROP DATABASE … WITH (FORCE)`, ending any session still
/// on it) when this guard is dropped — unless the thread is panicking: a
/// failing test keeps its database for inspection, and a later run drops it
/// once older than [`STALE_AFTER`]. So passing tests leave nothing behind on
/// the shared servers. On Citus the database is dropped from every node
/// even after a failure: each Citus database keeps a maintenance worker per
/// node, and they must not pile up.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    direct_urls: Vec<String>,
    name: String,
    drop_with: Option<Dropper>,
}

/// How a [`TestDatabase`] is dropped.
#[derive(Debug)]
pub(crate) enum Dropper {
    /// On one PostgreSQL server, through its maintenance database's URL;
    /// kept when the test failed.
    OnServer(String),
    /// On every node of a Citus cluster, always.
    OnNodes(citus::DropOnNodes),
}

impl TestDatabase {
    pub(crate) fn new(
        url: String,
        direct_urls: Vec<String>,
        drop_with: Dropper,
    ) -> Result<Self, HarnessError> {
        let name = url::Url::parse(&url)?
            .path()
            .trim_start_matches('/')
            .to_owned();
        Ok(Self {
            url,
            direct_urls,
            name,
            drop_with: Some(drop_with),
        })
    }

    /// The URL the service under test connects to (through the pooler, for
    /// PgBouncer; the coordinator, for Citus).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URLs of this database on each server directly, never through a
    /// pooler, for inspection (`pg_stat_activity`): the PostgreSQL server
    /// (behind the pooler, for PgBouncer); for Citus the coordinator first,
    /// then each worker.
    pub fn direct_urls(&self) -> &[String] {
        &self.direct_urls
    }

    /// The database's name (`weft_test_…`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match self.drop_with.take() {
            Some(Dropper::OnNodes(nodes)) => nodes.drop_database(&self.name),
            Some(Dropper::OnServer(admin_url)) if !std::thread::panicking() => {
                postgres::drop_database(admin_url, self.name.clone());
            }
            _ => {}
        }
    }
}
