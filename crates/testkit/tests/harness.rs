//! The harness gives each caller its own empty database on a live server.

// Test and benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};
use weft_testkit::PgHarness;

/// Two calls give two different databases, each reachable and empty of tables.
#[tokio::test]
async fn each_call_gives_a_distinct_empty_database() {
    let a = PgHarness::fresh_database_url().await.unwrap();
    let b = PgHarness::fresh_database_url().await.unwrap();
    assert_ne!(a, b);
    for url in [a, b] {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(tables, 0, "{url} is not empty");
        conn.close().await.unwrap();
    }
}

/// The shared server is reused: a second harness lookup names the same server.
#[tokio::test]
async fn the_server_is_shared_within_a_process() {
    let a = PgHarness::shared().await.unwrap().admin_url().to_owned();
    let b = PgHarness::shared().await.unwrap().admin_url().to_owned();
    assert_eq!(a, b);
}
