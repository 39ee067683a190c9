//! The adapter conformance suite (`weft-conformance`) against a real
//! PostgreSQL: every case of the unit-of-work contract, each on a fresh
//! database from `weft-testkit`.

// Test and benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use weft_adapters_postgres::{Isolation, PgConfig, PgStore, APPLICATION_NAME};
use weft_conformance::{ConformanceTarget, LeakReport};
use weft_ports::UnitOfWorkFactory;
use weft_testkit::PgHarness;

/// The store under test plus an observer connection (under another
/// application name, so it never counts itself).
struct PgTarget {
    store: PgStore,
    observer: PgPool,
    url: String,
}

async fn make_target() -> PgTarget {
    let url = PgHarness::fresh_database_url()
        .await
        .expect("a fresh test database");
    let mut cfg = PgConfig::new(url.clone());
    cfg.pool_max = 8;
    // Generous bounds: the storm queues 1,000 units of work on 8 connections.
    cfg.acquire_timeout = Duration::from_secs(60);
    cfg.statement_timeout = Duration::from_secs(30);
    cfg.idle_in_transaction_timeout = Duration::from_secs(60);
    let store = PgStore::connect(&cfg).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.ready().await.expect("a migrated store is ready");
    let opts = PgConnectOptions::from_str(&url)
        .expect("url")
        .application_name("weft-conformance");
    let observer = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("observer");
    PgTarget {
        store,
        observer,
        url,
    }
}

#[async_trait::async_trait]
impl ConformanceTarget for PgTarget {
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.store.factory()
    }

    fn serializable_factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.store.with_isolation(Isolation::Serializable).factory()
    }

    async fn leak_report(&self) -> LeakReport {
        let stats = self.store.pool_stats();
        let (idle_in_tx, active): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'), \
                    count(*) FILTER (WHERE state = 'active') \
             FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        )
        .bind(APPLICATION_NAME)
        .fetch_one(&self.observer)
        .await
        .expect("pg_stat_activity");
        LeakReport {
            busy_connections: stats.busy(),
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
                .fetch_all(&self.observer)
                .await
                .expect(what);
            out.extend(rows.into_iter().map(|r| format!("{what}: {r}")));
        }
        out
    }
}

weft_conformance::conformance_tests!(make_target);

#[async_trait::async_trait]
impl weft_conformance::lifecycle::LifecycleTarget for PgTarget {
    fn maintenance(&self) -> Arc<dyn weft_ports::Maintenance> {
        self.store.maintenance()
    }

    /// A second store on the same database, with its own pool: what `weft
    /// purge` run beside `weft serve` has.
    async fn other_process(&self) -> Arc<dyn weft_ports::Maintenance> {
        PgStore::connect(&PgConfig::new(self.url.clone()))
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
                    .fetch_one(&self.observer)
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
        .fetch_one(&self.observer)
        .await
        .expect("thread");
        let newest = weft_domain::MessageId::parse(&newest).ok();
        let prefix = weft_conformance::lifecycle::bulk_id_prefix(newest.as_ref());
        let content = weft_conformance::fixtures::content(text).to_stored_json();
        let n = i64::try_from(n).expect("n");
        let mut tx = self.observer.begin().await.expect("begin");
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

weft_conformance::lifecycle_tests!(make_target);
