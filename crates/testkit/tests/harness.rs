//! The harness gives each caller its own empty database on a live server.

// Test and benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};
use weft_testkit::PgHarness;

/// Two calls give two different databases, each reachable and empty of tables.
#[tokio::test]
async fn each_call_gives_a_distinct_empty_database() {
    let a = PgHarness::fresh_database().await.unwrap();
    let b = PgHarness::fresh_database().await.unwrap();
    assert_ne!(a.url(), b.url());
    for url in [a.url(), b.url()] {
        let mut conn = PgConnection::connect(url).await.unwrap();
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

/// A passing test's database is gone once its guard is dropped; the
/// database of a test that panics is kept for inspection.
#[tokio::test]
async fn a_guarded_database_is_dropped_unless_its_test_failed() {
    let exists = |name: String| async move {
        let harness = PgHarness::shared().await.unwrap();
        let mut admin = PgConnection::connect(harness.admin_url()).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        n == 1
    };
    let name_of = |url: &str| url.rsplit('/').next().unwrap().to_owned();

    let passing = PgHarness::fresh_database().await.unwrap();
    let name = name_of(passing.url());
    // A session still open on it does not keep it alive.
    let open = PgConnection::connect(passing.url()).await.unwrap();
    assert!(exists(name.clone()).await);
    drop(passing);
    assert!(!exists(name).await, "a passing test's database is dropped");
    let _ = open.close().await;

    let failing = PgHarness::fresh_database().await.unwrap();
    let name = name_of(failing.url());
    let panicked = std::thread::spawn(move || {
        let _guard = failing;
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    assert!(
        exists(name.clone()).await,
        "a failing test's database is kept"
    );
    let harness = PgHarness::shared().await.unwrap();
    let mut admin = PgConnection::connect(harness.admin_url()).await.unwrap();
    sqlx::Executor::execute(&mut admin, format!("DROP DATABASE \"{name}\"").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
}
