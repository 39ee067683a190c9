//! PostgreSQL-specific behaviour beyond the shared conformance suite: the
//! time bounds every transaction gets, pool exhaustion, readiness, and data
//! corruption reported as such. Each test has its own fresh database.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use weft_adapters_postgres::{PgConfig, PgStore};
use weft_domain::{Metadata, RequestId, Thread, ThreadId, Timestamp, ToolResources, UserId};
use weft_ports::{Mode, PortError, RequestContext};
use weft_testkit::PgHarness;

fn ctx(user: &str) -> RequestContext {
    RequestContext::new(
        UserId::parse(user).unwrap(),
        RequestId::parse("test").unwrap(),
        None,
    )
}

fn thread() -> Thread {
    Thread {
        id: ThreadId::from_uuid(uuid::Uuid::now_v7()),
        created_at: Timestamp::from_unix_seconds(1),
        updated_at: Timestamp::from_unix_seconds(1),
        metadata: Metadata::default(),
        tool_resources: ToolResources::default(),
        title: None,
        message_count: 0,
    }
}

async fn store(tune: impl FnOnce(&mut PgConfig)) -> (PgStore, String) {
    let url = PgHarness::fresh_database_url().await.unwrap();
    let mut cfg = PgConfig::new(url.clone());
    tune(&mut cfg);
    let store = PgStore::connect(&cfg).await.unwrap();
    store.migrate().await.unwrap();
    (store, url)
}

async fn observer(url: &str) -> PgConnection {
    PgConnectOptions::from_str(url)
        .unwrap()
        .application_name("weft-test")
        .connect()
        .await
        .unwrap()
}

async fn seed(store: &PgStore) -> Thread {
    let t = thread();
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadWrite)
        .await
        .unwrap();
    uow.lock_thread_sequence().await.unwrap();
    uow.insert_thread(&t).await.unwrap();
    uow.commit().await.unwrap();
    t
}

/// The full chain of an error, for asserting what the logs would show.
fn chain(e: &PortError) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = e.source();
    while let Some(c) = cur {
        out.push_str(&c.to_string());
        out.push_str(" | ");
        cur = c.source();
    }
    out
}

/// A store is ready only once its migrations are applied, and the pool
/// stats see the connections it opened.
#[tokio::test]
async fn readiness_requires_the_migrations() {
    let url = PgHarness::fresh_database_url().await.unwrap();
    let store = PgStore::connect(&PgConfig::new(url)).await.unwrap();
    assert!(
        store.ready().await.is_err(),
        "an unmigrated database is not ready"
    );
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
    store.migrate().await.unwrap();
    store.ready().await.expect("migrating twice is harmless");
    assert!(store.pool_stats().size >= 1);
}

/// A statement blocked past `statement_timeout` fails as Unavailable, with
/// a generic message and the server's reason kept in the source chain.
#[tokio::test]
async fn a_statement_past_the_statement_timeout_is_unavailable() {
    let (store, url) = store(|c| c.statement_timeout = Duration::from_millis(200)).await;
    let t = seed(&store).await;
    // Another session holds the row lock the count update needs.
    let mut holder = observer(&url).await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE")
        .bind(t.id.as_str())
        .execute(&mut holder)
        .await
        .unwrap();
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadWrite)
        .await
        .unwrap();
    let err = uow
        .adjust_message_count(&t.id, 1, Timestamp::from_unix_seconds(2))
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "storage unavailable",
        "no driver text in the message"
    );
    assert!(
        chain(&err).contains("statement timeout"),
        "the cause is kept for logs: {}",
        chain(&err)
    );
    drop(uow);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

/// With every connection taken, `begin` gives up after the acquire timeout
/// with Unavailable instead of queueing forever.
#[tokio::test]
async fn an_exhausted_pool_is_unavailable() {
    let (store, _) = store(|c| {
        c.pool_max = 1;
        c.acquire_timeout = Duration::from_millis(200);
    })
    .await;
    let held = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    let err = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .err()
        .expect("a second begin fails");
    assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
    held.commit().await.unwrap();
    let again = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    again.commit().await.unwrap();
}

/// A unit of work left idle inside its transaction past the backstop is
/// ended by the server; its next statement fails as Unavailable and the
/// store keeps working with a fresh connection.
#[tokio::test]
async fn the_idle_in_transaction_backstop_ends_a_forgotten_transaction() {
    let (store, url) = store(|c| {
        c.pool_max = 1;
        c.idle_in_transaction_timeout = Duration::from_millis(200);
    })
    .await;
    let t = seed(&store).await;
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadWrite)
        .await
        .unwrap();
    uow.adjust_message_count(&t.id, 1, Timestamp::from_unix_seconds(2))
        .await
        .unwrap();
    // Leave it idle; wait (bounded) until the server has ended the session.
    let mut obs = observer(&url).await;
    let mut ended = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let idle: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'weft' \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&mut obs)
        .await
        .unwrap();
        if idle == 0 {
            ended = true;
            break;
        }
    }
    assert!(ended, "the server ended the idle transaction");
    let err = uow.get_thread(&t.id).await.unwrap_err();
    assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
    drop(uow);
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    assert_eq!(
        uow.get_thread(&t.id).await.unwrap().message_count,
        0,
        "the forgotten count change was rolled back"
    );
    uow.commit().await.unwrap();
}

/// The store's sessions show up as `application_name = 'weft'`, the name
/// operators and the leak checks filter `pg_stat_activity` on. (The two
/// timeouts are proven by the tests above that trip them.)
#[tokio::test]
async fn sessions_carry_the_application_name() {
    let (store, url) = store(|_| {}).await;
    let uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    let mut obs = observer(&url).await;
    let in_tx: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'weft' \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut obs)
    .await
    .unwrap();
    assert_eq!(in_tx, 1, "the open unit of work is the store's session");
    uow.commit().await.unwrap();
}

/// A stored row that breaks a domain rule is reported as data corruption
/// (Unexpected), never served.
#[tokio::test]
async fn a_corrupt_row_is_reported_not_served() {
    let (store, url) = store(|_| {}).await;
    let t = seed(&store).await;
    let mut obs = observer(&url).await;
    sqlx::query("UPDATE threads SET metadata = '{\"k\": 1}'::jsonb WHERE id = $1")
        .bind(t.id.as_str())
        .execute(&mut obs)
        .await
        .unwrap();
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    let err = uow.get_thread(&t.id).await.unwrap_err();
    assert!(matches!(err, PortError::Unexpected(_)), "{err:?}");
    assert!(chain(&err).contains("data corruption"), "{}", chain(&err));
    drop(uow);
}

/// After `close`, new units of work fail as Unavailable.
#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let (store, _) = store(|_| {}).await;
    store.close().await;
    let err = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .err()
        .expect("begin after close fails");
    assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
    assert!(store.ready().await.is_err());
}

/// A commit after a failed statement does not pretend to succeed
/// (PostgreSQL would silently roll back): it reports the failure.
#[tokio::test]
async fn a_commit_after_a_failed_statement_is_refused() {
    let (store, _) = store(|_| {}).await;
    let t = seed(&store).await;
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadWrite)
        .await
        .unwrap();
    // A message id that exists already: a unique violation, which aborts
    // the transaction server-side.
    let m = weft_conformance::fixtures::message(
        &t.id,
        weft_domain::Role::User,
        "twice",
        Timestamp::from_unix_seconds(2),
    );
    uow.insert_messages(std::slice::from_ref(&m)).await.unwrap();
    assert!(matches!(
        uow.insert_messages(std::slice::from_ref(&m)).await,
        Err(PortError::Duplicate)
    ));
    let err = uow.commit().await.unwrap_err();
    assert!(matches!(err, PortError::Unexpected(_)), "{err:?}");
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::ReadOnly)
        .await
        .unwrap();
    assert_eq!(uow.get_thread(&t.id).await.unwrap(), t);
    uow.commit().await.unwrap();
}

/// A database filled through the first schema (migration 0001: id-only
/// keys) upgrades in place to the owner-keyed one with nothing lost: every
/// object reads back unchanged and new writes continue above the old ids.
#[tokio::test]
async fn a_database_of_the_first_schema_upgrades_in_place_with_nothing_lost() {
    let url = PgHarness::fresh_database_url().await.unwrap();
    let first_only = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0001_init.sql");
    std::fs::copy(&src, first_only.path().join("0001_init.sql")).unwrap();
    let mut conn = observer(&url).await;
    sqlx::migrate::Migrator::new(first_only.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(weft_conformance::upgrade::V1_ROWS)
        .execute(&mut conn)
        .await
        .unwrap();
    let store = PgStore::connect(&PgConfig::new(url)).await.unwrap();
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
    weft_conformance::upgrade::verify(store.factory()).await;
}

/// The request's deadline bounds every statement of its transaction, not
/// only the wait for a connection: with a 30 s statement timeout and a row
/// locked elsewhere, a unit of work whose request has 1 s left fails with
/// Unavailable (the API's 503) long before 30 s — the per-transaction
/// `statement_timeout` is the lesser of the two (DESIGN.md rule 6).
#[tokio::test]
async fn a_lock_wait_ends_at_the_requests_deadline() {
    let (store, url) = store(|c| c.statement_timeout = Duration::from_secs(30)).await;
    let t = seed(&store).await;
    let mut holder = observer(&url).await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE")
        .bind(t.id.as_str())
        .execute(&mut holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(1);
    let ctx = RequestContext::new(
        UserId::parse("alice").unwrap(),
        RequestId::parse("deadline").unwrap(),
        Some(deadline),
    );
    let mut uow = store.factory().begin(&ctx, Mode::ReadWrite).await.unwrap();
    let err = uow
        .adjust_message_count(&t.id, 1, Timestamp::from_unix_seconds(2))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
    assert!(
        waited < Duration::from_secs(20),
        "the lock wait ended at the deadline, not at the 30 s statement timeout ({waited:?})"
    );
    drop(uow);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

/// On a direct connection (statement cache on) a single read runs without
/// a transaction block, so a second repository call on it is refused
/// instead of reading another snapshot (ports rule 9); behind a pooler
/// (cache off) it runs in a transaction and a second call reads the same
/// snapshot.
#[tokio::test]
async fn a_single_read_is_one_statement_on_a_direct_connection() {
    let (store, _) = store(|_| {}).await;
    let t = seed(&store).await;
    let mut uow = store
        .factory()
        .begin(&ctx("alice"), Mode::SingleRead)
        .await
        .unwrap();
    uow.get_thread(&t.id).await.unwrap();
    let again = uow.get_thread(&t.id).await;
    assert!(matches!(again, Err(PortError::Unexpected(_))), "{again:?}");
    drop(uow);

    let (pooled, _) = store_with_cache_off().await;
    let t = seed(&pooled).await;
    let mut uow = pooled
        .factory()
        .begin(&ctx("alice"), Mode::SingleRead)
        .await
        .unwrap();
    uow.get_thread(&t.id).await.unwrap();
    uow.get_thread(&t.id).await.unwrap();
    uow.commit().await.unwrap();
}

async fn store_with_cache_off() -> (PgStore, String) {
    store(|c| c.statement_cache = false).await
}
