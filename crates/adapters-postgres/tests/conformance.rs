//! The adapter conformance suite (`weft-conformance`) against real
//! PostgreSQL deployments, every case on a fresh database from
//! `weft-testkit`, once per topology:
//!
//! - `postgres::<case>`: one store on one PostgreSQL.
//! - `pgbouncer::<case>`: two stores (two Weft instances' pools) on one
//!   database through PgBouncer in transaction mode, with the statement
//!   cache off; units of work alternate between them.
//! - `citus::<case>`: one store on the coordinator of a Citus cluster.
//!
//! (SQLite, the fourth topology, runs the same suite in
//! `weft-adapters-sqlite`.)

// Test and benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use weft_adapters_postgres::{Isolation, PgConfig, PgStore, APPLICATION_NAME};
use weft_conformance::{ConformanceTarget, LeakReport};
use weft_ports::{Mode, PortError, RequestContext, UnitOfWork, UnitOfWorkFactory};
use weft_testkit::{BouncerHarness, CitusHarness, PgHarness, TestDatabase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Postgres,
    PgBouncer,
    Citus,
}

/// The stores under test plus observer connections straight to every
/// server of the database (under another application name, so they never
/// count themselves).
struct PgTarget {
    stores: Vec<PgStore>,
    /// The first observes the database PostgreSQL (or the Citus
    /// coordinator); the others observe the Citus workers.
    observers: Vec<PgPool>,
    next: Arc<AtomicUsize>,
    /// How the stores were opened (a second store for the lifecycle cases).
    cfg: PgConfig,
    _db: TestDatabase,
}

async fn make_target(topology: Topology) -> PgTarget {
    let db = match topology {
        Topology::Postgres => PgHarness::fresh_database().await,
        Topology::PgBouncer => BouncerHarness::fresh_database().await,
        Topology::Citus => CitusHarness::fresh_database().await,
    }
    .unwrap_or_else(|e| panic!("a fresh {topology:?} test database: {e}"));
    // On Citus, any multi-shard query of the service fails its case.
    let url = match topology {
        Topology::Citus => weft_testkit::router_queries_only(db.url()),
        _ => db.url().to_owned(),
    };
    let mut cfg = PgConfig::new(&url);
    cfg.pool_max = 8;
    // Generous bounds: the storm queues 1,000 units of work on 8 connections.
    cfg.acquire_timeout = Duration::from_secs(60);
    cfg.statement_timeout = Duration::from_secs(30);
    cfg.idle_in_transaction_timeout = Duration::from_secs(60);
    cfg.statement_cache = topology != Topology::PgBouncer;
    let instances = if topology == Topology::PgBouncer {
        2
    } else {
        1
    };
    let mut stores = Vec::new();
    for _ in 0..instances {
        let store = PgStore::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("connect on {topology:?}: {}", chain(&e)));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate on {topology:?}: {}", chain(&e)));
        store.ready().await.expect("a migrated store is ready");
        stores.push(store);
    }
    let mut observers = Vec::new();
    for url in db.direct_urls() {
        let opts = PgConnectOptions::from_str(url)
            .expect("url")
            .application_name("weft-conformance");
        observers.push(
            PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .expect("observer"),
        );
    }
    PgTarget {
        stores,
        observers,
        next: Arc::new(AtomicUsize::new(0)),
        cfg,
        _db: db,
    }
}

/// An error with its causes, for a failure message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Two Weft instances' factories behind one: each unit of work goes to the
/// next, round robin.
struct Alternating {
    factories: Vec<Arc<dyn UnitOfWorkFactory>>,
    next: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl UnitOfWorkFactory for Alternating {
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.factories.len();
        self.factories[i].begin(ctx, mode).await
    }
}

impl PgTarget {
    fn alternating(
        &self,
        factory: impl Fn(&PgStore) -> Arc<dyn UnitOfWorkFactory>,
    ) -> Arc<dyn UnitOfWorkFactory> {
        if self.stores.len() == 1 {
            return factory(&self.stores[0]);
        }
        Arc::new(Alternating {
            factories: self.stores.iter().map(factory).collect(),
            next: Arc::clone(&self.next),
        })
    }
}

#[async_trait::async_trait]
impl ConformanceTarget for PgTarget {
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.alternating(PgStore::factory)
    }

    fn serializable_factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.alternating(|s| s.with_isolation(Isolation::Serializable).factory())
    }

    async fn leak_report(&self) -> LeakReport {
        let busy_connections = self.stores.iter().map(|s| s.pool_stats().busy()).sum();
        let (mut idle_in_tx, mut active) = (0i64, 0i64);
        for (i, observer) in self.observers.iter().enumerate() {
            // The service's own sessions; on a Citus worker every client
            // session of the database is the coordinator acting for it.
            let (tx, act): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'), \
                        count(*) FILTER (WHERE state = 'active') \
                 FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND backend_type = 'client backend' \
                   AND (application_name = $1 OR $2)",
            )
            .bind(APPLICATION_NAME)
            .bind(i > 0)
            .fetch_one(observer)
            .await
            .expect("pg_stat_activity");
            idle_in_tx += tx;
            active += act;
        }
        LeakReport {
            busy_connections,
            idle_in_transaction: u32::try_from(idle_in_tx).unwrap_or(u32::MAX),
            active_statements: u32::try_from(active).unwrap_or(u32::MAX),
        }
    }

    async fn invariant_violations(&self) -> Vec<String> {
        // Counts exact; every message in a thread of its own owner (the
        // foreign key includes the owner); ids within their sequences
        // (ports rule 8). Joins are on the owner too, so they stay
        // colocated on Citus.
        let checks = [
            (
                "message_count differs from live messages",
                "SELECT t.id || ': count ' || t.message_count || ' live ' || count(m.id) \
                 FROM threads t LEFT JOIN messages m \
                   ON m.owner = t.owner AND m.thread_id = t.id AND m.deleted_at IS NULL \
                 WHERE t.deleted_at IS NULL GROUP BY t.owner, t.id, t.message_count \
                 HAVING t.message_count <> count(m.id)",
            ),
            (
                "message without a thread of its owner",
                "SELECT m.id FROM messages m LEFT JOIN threads t ON t.owner = m.owner AND t.id = m.thread_id \
                 WHERE t.id IS NULL",
            ),
            (
                "thread above its owner's newest thread id",
                "SELECT t.id FROM threads t LEFT JOIN owners o ON o.owner = t.owner \
                 WHERE o.newest_thread_id IS NULL OR t.id > o.newest_thread_id",
            ),
            (
                "message above its thread's newest message id",
                "SELECT m.id FROM messages m JOIN threads t ON t.owner = m.owner AND t.id = m.thread_id \
                 WHERE m.id > t.newest_message_id",
            ),
        ];
        let mut out = Vec::new();
        for (what, sql) in checks {
            let rows: Vec<String> = sqlx::query_scalar(sql)
                .fetch_all(&self.observers[0])
                .await
                .expect(what);
            out.extend(rows.into_iter().map(|r| format!("{what}: {r}")));
        }
        out
    }
}

#[async_trait::async_trait]
impl weft_conformance::lifecycle::LifecycleTarget for PgTarget {
    fn maintenance(&self) -> Arc<dyn weft_ports::Maintenance> {
        self.stores[0].maintenance()
    }

    /// A second store on the same database (through the same PgBouncer or
    /// Citus coordinator), with its own pool: what `weft purge` run beside
    /// `weft serve` has.
    async fn other_process(&self) -> Arc<dyn weft_ports::Maintenance> {
        PgStore::connect(&self.cfg)
            .await
            .expect("second store")
            .maintenance()
    }

    async fn rows_of(&self, owner: &str) -> weft_conformance::lifecycle::RowCounts {
        let mut counts = [0u64; 4];
        for (n, table) in counts
            .iter_mut()
            .zip(["threads", "messages", "idempotency", "owners"])
        {
            let c: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE owner = $1"))
                    .bind(owner)
                    .fetch_one(&self.observers[0])
                    .await
                    .expect("count");
            *n = u64::try_from(c).expect("a count");
        }
        weft_conformance::lifecycle::RowCounts {
            threads: counts[0],
            messages: counts[1],
            idempotency: counts[2],
            owners: counts[3],
        }
    }

    async fn bulk_messages(
        &self,
        owner: &str,
        thread: &weft_domain::ThreadId,
        n: u64,
        text: &str,
        deleted_at: Option<weft_domain::Timestamp>,
    ) {
        let newest: String = sqlx::query_scalar(
            "SELECT newest_message_id FROM threads WHERE owner = $1 AND id = $2",
        )
        .bind(owner)
        .bind(thread.as_str())
        .fetch_one(&self.observers[0])
        .await
        .expect("thread");
        let newest = weft_domain::MessageId::parse(&newest).ok();
        let prefix = weft_conformance::lifecycle::bulk_id_prefix(newest.as_ref());
        let content = weft_conformance::fixtures::content(text).to_stored_json();
        let n = i64::try_from(n).expect("n");
        let mut tx = self.observers[0].begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at) \
             SELECT $1, $2, 'msg_' || $3 || lpad(to_hex(i), 12, '0'), $4, 'user', $5::jsonb, '[]'::jsonb, \
                    '{}'::jsonb, $6 \
             FROM generate_series(1::bigint, $7::bigint) AS i",
        )
        .bind(owner)
        .bind(thread.as_str())
        .bind(&prefix)
        .bind(weft_conformance::fixtures::NOW.unix_seconds())
        .bind(&content)
        .bind(deleted_at.map(|t| t.unix_seconds()))
        .bind(n)
        .execute(&mut *tx)
        .await
        .expect("bulk insert");
        sqlx::query(
            "UPDATE threads SET newest_message_id = 'msg_' || $3 || lpad(to_hex($4::bigint), 12, '0'), \
                    message_count = message_count + $5 WHERE owner = $1 AND id = $2",
        )
        .bind(owner)
        .bind(thread.as_str())
        .bind(&prefix)
        .bind(n)
        .bind(if deleted_at.is_some() { 0 } else { n })
        .execute(&mut *tx)
        .await
        .expect("thread sequence");
        tx.commit().await.expect("commit");
    }
}

mod postgres {
    async fn make() -> super::PgTarget {
        super::make_target(super::Topology::Postgres).await
    }
    weft_conformance::conformance_tests!(make);
    weft_conformance::lifecycle_tests!(make);
}

mod pgbouncer {
    async fn make() -> super::PgTarget {
        super::make_target(super::Topology::PgBouncer).await
    }
    weft_conformance::conformance_tests!(make);
    weft_conformance::lifecycle_tests!(make);
}

mod citus {
    async fn make() -> super::PgTarget {
        super::make_target(super::Topology::Citus).await
    }
    weft_conformance::conformance_tests!(make);
    weft_conformance::lifecycle_tests!(make);
}
