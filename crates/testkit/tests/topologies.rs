//! The PgBouncer and Citus harnesses give real, working topologies: a
//! transaction-pooling PgBouncer with its defaults, and a Citus cluster
//! whose fresh databases distribute tables over both workers.

// Test code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};
use weft_testkit::{BouncerHarness, CitusHarness, HarnessError, TestDatabase};

/// Options a client needs behind PgBouncer's defaults: no startup
/// parameter it does not track.
fn through_pooler(url: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url)
        .unwrap()
        .extra_float_digits(None)
        .statement_cache_capacity(0)
}

async fn scalar_i64(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::raw_sql(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<i64, _>(0)
}

mod pgbouncer {
    use super::*;

    /// What is written through the pooler is in the database on PostgreSQL.
    #[tokio::test]
    async fn a_database_reached_through_pgbouncer_is_the_one_on_postgres() {
        let db = BouncerHarness::fresh_database().await.unwrap();
        assert_ne!(db.url(), db.direct_urls()[0]);
        let mut pooled = PgConnection::connect_with(&through_pooler(db.url()))
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
            .execute(&mut pooled)
            .await
            .unwrap();
        let mut direct = PgConnection::connect(&db.direct_urls()[0]).await.unwrap();
        assert_eq!(
            scalar_i64(&mut direct, "SELECT sum(x)::int8 FROM t").await,
            6
        );
        let name: String = sqlx::raw_sql("SELECT current_database()::text")
            .fetch_one(&mut pooled)
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, db.name());
    }

    /// PgBouncer keeps its defaults: a client that sends
    /// `extra_float_digits` (as sqlx does unless told not to) is refused.
    #[tokio::test]
    async fn pgbouncer_refuses_startup_parameters_it_does_not_track() {
        let db = BouncerHarness::fresh_database().await.unwrap();
        let err = PgConnection::connect(db.url()).await.unwrap_err();
        assert!(
            err.to_string().contains("unsupported startup parameter"),
            "{err}"
        );
    }

    /// Transaction pooling: two clients taking turns run on one server
    /// connection, and many clients at once never get more server
    /// connections than the pool size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_share_few_server_connections() {
        let bouncer = BouncerHarness::shared().await.unwrap();
        let db = bouncer.create_database().await.unwrap();
        let mut a = PgConnection::connect_with(&through_pooler(db.url()))
            .await
            .unwrap();
        let mut b = PgConnection::connect_with(&through_pooler(db.url()))
            .await
            .unwrap();
        let pid_a = scalar_i64(&mut a, "SELECT pg_backend_pid()::int8").await;
        let pid_b = scalar_i64(&mut b, "SELECT pg_backend_pid()::int8").await;
        assert_eq!(
            pid_a, pid_b,
            "one idle server connection serves both clients"
        );

        // Two pools, as two Weft instances have: 16 clients in all.
        let pools: Vec<_> = futures_pools(db.url(), 2, 8).await;
        let mut tasks = Vec::new();
        for i in 0..64 {
            let pool = pools[i % pools.len()].clone();
            tasks.push(tokio::spawn(async move {
                let row = sqlx::raw_sql(
                    "BEGIN; SELECT pg_backend_pid()::int8 FROM pg_sleep(0.02); COMMIT",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                row.get::<i64, _>(0)
            }));
        }
        let mut pids = HashSet::new();
        for t in tasks {
            pids.insert(t.await.unwrap());
        }
        let clients: u32 = pools.iter().map(|p| p.size()).sum();
        let pools_seen = bouncer.server_connections(db.name()).await.unwrap();
        assert!(
            pids.len() <= BouncerHarness::POOL_SIZE as usize,
            "{} server connections for {clients} clients",
            pids.len()
        );
        assert!(clients > BouncerHarness::POOL_SIZE, "{clients} clients");
        assert!(
            pools_seen.servers <= BouncerHarness::POOL_SIZE,
            "{pools_seen:?}"
        );
        assert!(pools_seen.servers >= 1, "{pools_seen:?}");
    }

    async fn futures_pools(url: &str, n: usize, size: u32) -> Vec<sqlx::PgPool> {
        let mut out = Vec::new();
        for _ in 0..n {
            let pool = PgPoolOptions::new()
                .min_connections(size)
                .max_connections(size)
                .connect_with(through_pooler(url))
                .await
                .unwrap();
            out.push(pool);
        }
        out
    }

    /// A dedicated PgBouncer restarts on its port: connections through it
    /// are cut, new ones work; the shared one refuses to be restarted.
    #[tokio::test]
    async fn a_dedicated_pgbouncer_restarts_on_its_port() {
        let bouncer = BouncerHarness::dedicated().await.unwrap();
        let db = bouncer.create_database().await.unwrap();
        let mut before = PgConnection::connect_with(&through_pooler(db.url()))
            .await
            .unwrap();
        assert_eq!(scalar_i64(&mut before, "SELECT 1::int8").await, 1);
        let port = bouncer.port();
        bouncer.restart().await.unwrap();
        assert_eq!(bouncer.port(), port);
        assert!(sqlx::raw_sql("SELECT 1")
            .execute(&mut before)
            .await
            .is_err());
        let mut after = PgConnection::connect_with(&through_pooler(db.url()))
            .await
            .unwrap();
        assert_eq!(scalar_i64(&mut after, "SELECT 2::int8").await, 2);

        let shared = BouncerHarness::shared().await.unwrap();
        assert!(matches!(
            shared.restart().await,
            Err(HarnessError::NotDedicated(_))
        ));
    }
}

mod citus {
    use super::*;

    async fn distribute(db: &TestDatabase) -> PgConnection {
        let mut c = PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (owner text, id int, PRIMARY KEY (owner, id));
             SELECT create_distributed_table('t', 'owner');
             INSERT INTO t SELECT 'user' || g, g FROM generate_series(1, 100) g",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c
    }

    /// A fresh Citus database has the extension, knows both workers, and
    /// spreads a distributed table's shards over them.
    #[tokio::test]
    async fn a_citus_database_distributes_tables_over_both_workers() {
        let citus = CitusHarness::shared().await.unwrap();
        let db = citus.create_database().await.unwrap();
        assert_eq!(db.direct_urls().len(), 3);
        let mut c = distribute(&db).await;
        assert_eq!(
            scalar_i64(
                &mut c,
                "SELECT count(*) FROM citus_get_active_worker_nodes()"
            )
            .await,
            2
        );
        assert_eq!(scalar_i64(&mut c, "SELECT count(*) FROM t").await, 100);
        let ports: Vec<i32> = sqlx::query_scalar(
            "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name = 't'::regclass ORDER BY 1",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        let mut workers: Vec<i32> = citus.worker_ports().iter().map(|p| i32::from(*p)).collect();
        workers.sort_unstable();
        assert_eq!(ports, workers);
        // Each worker holds rows of its shards in the same-named database.
        let mut on_workers = 0;
        for url in &db.direct_urls()[1..] {
            let mut w = PgConnection::connect(url).await.unwrap();
            // Citus hides shards from catalog queries of ordinary clients.
            sqlx::raw_sql("SET citus.override_table_visibility TO off")
                .execute(&mut w)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT relname::text FROM pg_class WHERE relname LIKE 't\\_%' AND relkind = 'r'",
            )
            .fetch_all(&mut w)
            .await
            .unwrap();
            for table in tables {
                on_workers += scalar_i64(&mut w, &format!("SELECT count(*) FROM {table}")).await;
            }
        }
        assert_eq!(on_workers, 100);
    }

    /// Two test databases are distinct, and a dropped one is gone from
    /// every node.
    #[tokio::test]
    async fn citus_test_databases_are_distinct_and_dropped_from_every_node() {
        let citus = CitusHarness::shared().await.unwrap();
        let a = citus.create_database().await.unwrap();
        let b = citus.create_database().await.unwrap();
        assert_ne!(a.name(), b.name());
        let name = a.name().to_owned();
        drop(a);
        for url in b.direct_urls() {
            let mut c = PgConnection::connect(url).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(n, 0, "{name} left on {url}");
        }
    }

    /// On a dedicated cluster, stopping a worker fails the queries of the
    /// owners whose shard it holds, not the others; once it is back, they
    /// all work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_a_citus_worker_fails_only_the_owners_it_holds() {
        let citus = CitusHarness::dedicated().await.unwrap();
        let db = citus.create_database().await.unwrap();
        let _ = distribute(&db).await;
        let mut owner_on = [None, None];
        for i in 1..=100 {
            let owner = format!("user{i}");
            let w = citus.worker_holding(&db, "t", &owner).await.unwrap();
            owner_on[w].get_or_insert(owner);
        }
        let [Some(down), Some(up)] = owner_on else {
            panic!("both workers hold shards: {owner_on:?}")
        };
        let count_for = |owner: String| {
            let url = db.url().to_owned();
            async move {
                let mut c = PgConnection::connect(&url).await?;
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t WHERE owner = $1")
                    .bind(owner)
                    .fetch_one(&mut c)
                    .await
            }
        };
        citus.stop_worker(0).await.unwrap();
        assert_eq!(count_for(up.clone()).await.unwrap(), 1);
        let started = Instant::now();
        assert!(count_for(down.clone()).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a query on a stopped worker fails instead of hanging"
        );
        citus.start_worker(0).await.unwrap();
        assert_eq!(count_for(down).await.unwrap(), 1);
        assert_eq!(count_for(up).await.unwrap(), 1);

        let shared = CitusHarness::shared().await.unwrap();
        assert!(matches!(
            shared.stop_worker(0).await,
            Err(HarnessError::NotDedicated(_))
        ));
    }
}
