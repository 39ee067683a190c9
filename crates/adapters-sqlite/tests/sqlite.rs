//! SQLite-specific behaviour the shared conformance suite cannot see: the
//! file and its pragmas, migrations and readiness, another process holding
//! the write lock, pool limits, interrupted statements, corrupt rows.

// Test code: a panic is the assertion (clippy.toml allows this inside
// #[test] fns; these helpers sit outside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use weft_adapters_sqlite::{SqliteConfig, SqliteStore, StoreError};
use weft_conformance::cancel::CancelAfterPolls;
use weft_conformance::fixtures::{ctx, message, thread, NOW};
use weft_domain::{ListParams, Role};
use weft_ports::{Mode, PortError, UnitOfWork, UnitOfWorkFactory};

fn config(path: &Path) -> SqliteConfig {
    SqliteConfig::new(format!("sqlite://{}", path.display()))
}

async fn migrated(path: &Path) -> SqliteStore {
    let store = SqliteStore::connect(&config(path)).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("weft.db")
}

async fn begin(f: &dyn UnitOfWorkFactory, user: &str, mode: Mode) -> Box<dyn UnitOfWork> {
    f.begin(&ctx(user), mode).await.unwrap()
}

/// Waits (bounded) until every connection is back in the pool: sqlx returns
/// connections on a spawned task, so the count lags the end of a unit of work.
async fn all_idle(store: &SqliteStore) -> bool {
    for _ in 0..500 {
        let s = store.pool_stats();
        if s.size == s.idle {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn side_connection(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// A missing file is created on connect, in WAL mode with foreign keys on;
/// readiness fails until migrations are applied, and migrating twice is fine.
#[tokio::test]
async fn connect_creates_a_wal_database_that_is_ready_once_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-dir-free.db");
    assert!(!path.exists());
    let store = SqliteStore::connect(&config(&path)).await.unwrap();
    assert!(path.exists(), "connect creates the file");
    assert!(matches!(store.ready().await, Err(StoreError::MigrationsPending(v)) if !v.is_empty()));
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ready().await.unwrap();

    let mut conn = side_connection(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    store.close().await;
}

/// In-memory databases cannot be shared by the writer and the readers, so
/// they are refused with a configuration error instead of silently losing data.
#[tokio::test]
async fn an_in_memory_url_is_refused() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let r = SqliteStore::connect(&SqliteConfig::new(url)).await;
        assert!(matches!(r, Err(StoreError::Config(_))), "{url}: {r:?}");
    }
}

/// `sqlite://weft.db` names a file in the working directory (the default of
/// `weft serve`). This is the only test of this binary that reads the working
/// directory; every other one uses absolute paths.
#[tokio::test]
async fn a_relative_url_creates_the_file_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let store = SqliteStore::connect(&SqliteConfig::new(SqliteConfig::DEFAULT_URL))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
    assert!(dir.path().join("weft.db").exists());
    store.close().await;
}

/// A plain path works as well as a `sqlite://` URL.
#[tokio::test]
async fn a_plain_file_path_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::connect(&SqliteConfig::new(path.display().to_string()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
    assert!(path.exists());
    store.close().await;
}

/// Another process holding the write lock past the busy timeout surfaces as
/// the retryable Conflict; its reads still work (WAL), and once the lock is
/// released writing works again.
#[tokio::test]
async fn another_process_holding_the_write_lock_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let holder = migrated(&path).await;
    let mut cfg = config(&path);
    cfg.busy_timeout = Duration::from_millis(50);
    let other = SqliteStore::connect(&cfg).await.unwrap();

    let t = thread(NOW);
    let mut held = begin(&*holder.factory(), "alice", Mode::ReadWrite).await;
    held.lock_thread_sequence().await.unwrap();
    held.insert_thread(&t).await.unwrap();

    let r = other
        .factory()
        .begin(&ctx("alice"), Mode::ReadWrite)
        .await
        .map(drop);
    assert!(
        matches!(r, Err(PortError::Conflict)),
        "a busy database: {r:?}"
    );

    // Readers are not blocked by the writer and see only committed data.
    let mut reader = begin(&*other.factory(), "alice", Mode::ReadOnly).await;
    assert!(matches!(
        reader.get_thread(&t.id).await,
        Err(PortError::NotFound)
    ));
    reader.commit().await.unwrap();

    held.commit().await.unwrap();
    let mut w = begin(&*other.factory(), "alice", Mode::ReadWrite).await;
    assert_eq!(w.get_thread(&t.id).await.unwrap(), t);
    w.commit().await.unwrap();
    assert!(
        all_idle(&other).await,
        "the conflicting begin returned its connection: {:?}",
        other.pool_stats()
    );
    holder.close().await;
    other.close().await;
}

/// Read-only units of work run on read-only connections: a write fails
/// with a non-retryable error (retrying cannot help) and changes nothing.
#[tokio::test]
async fn a_write_in_a_read_only_unit_of_work_is_unexpected_not_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&db_path(&dir)).await;
    let f = store.factory();
    let t = thread(NOW);
    let mut uow = begin(&*f, "alice", Mode::ReadOnly).await;
    let r = uow.insert_thread(&t).await;
    assert!(matches!(r, Err(PortError::Unexpected(_))), "{r:?}");
    // A unit of work whose statement failed never commits (the guard rolls
    // it back instead, as on PostgreSQL).
    let c = uow.commit().await;
    assert!(matches!(c, Err(PortError::Unexpected(_))), "{c:?}");
    let mut uow = begin(&*f, "alice", Mode::ReadOnly).await;
    assert!(matches!(
        uow.get_thread(&t.id).await,
        Err(PortError::NotFound)
    ));
    uow.rollback().await.unwrap();
    store.close().await;
}

/// With the single writer busy for longer than the acquire timeout, a second
/// writer gets Unavailable (503), not a hang.
#[tokio::test]
async fn waiting_longer_than_the_acquire_timeout_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    migrated(&path).await.close().await;
    let mut cfg = config(&path);
    cfg.acquire_timeout = Duration::from_millis(100);
    let store = SqliteStore::connect(&cfg).await.unwrap();
    let f = store.factory();
    let held = begin(&*f, "alice", Mode::ReadWrite).await;
    let r = f.begin(&ctx("alice"), Mode::ReadWrite).await.map(drop);
    assert!(matches!(r, Err(PortError::Unavailable(_))), "{r:?}");
    held.rollback().await.unwrap();
    begin(&*f, "alice", Mode::ReadWrite)
        .await
        .commit()
        .await
        .unwrap();
    store.close().await;
}

/// A repository call dropped mid-statement leaves the unit of work unusable:
/// later calls and the commit fail, and nothing it did is kept.
#[tokio::test]
async fn a_unit_of_work_whose_statement_was_cancelled_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&db_path(&dir)).await;
    let f = store.factory();
    let mut cancelled = 0;
    // Bounded: a first poll almost always leaves the statement in flight
    // (it runs on SQLite's worker thread); try a few times to be sure.
    for _ in 0..50 {
        let t = thread(NOW);
        let mut uow = begin(&*f, "alice", Mode::ReadWrite).await;
        uow.lock_thread_sequence().await.unwrap();
        if CancelAfterPolls::new(uow.insert_thread(&t), 1)
            .await
            .is_some()
        {
            uow.rollback().await.unwrap();
            continue;
        }
        cancelled += 1;
        let later = uow.get_thread(&t.id).await;
        assert!(
            matches!(later, Err(PortError::Unexpected(_))),
            "a call after a cancelled one: {later:?}"
        );
        let commit = uow.commit().await;
        assert!(
            matches!(commit, Err(PortError::Unexpected(_))),
            "commit after a cancelled call: {commit:?}"
        );
        let mut r = begin(&*f, "alice", Mode::ReadOnly).await;
        assert!(
            matches!(r.get_thread(&t.id).await, Err(PortError::NotFound)),
            "nothing of it is kept"
        );
        r.commit().await.unwrap();
        break;
    }
    assert_eq!(cancelled, 1, "no statement could be cancelled mid-flight");
    store.close().await;
}

/// `insert_messages` takes the messages of one thread; a mixed batch is a
/// caller bug, refused whole.
#[tokio::test]
async fn messages_of_two_threads_in_one_insert_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&db_path(&dir)).await;
    let f = store.factory();
    let (a, b) = (thread(NOW), thread(NOW));
    let mut uow = begin(&*f, "alice", Mode::ReadWrite).await;
    uow.lock_thread_sequence().await.unwrap();
    uow.insert_thread(&a).await.unwrap();
    uow.lock_thread_sequence().await.unwrap();
    uow.insert_thread(&b).await.unwrap();
    let mixed = [
        message(&a.id, Role::User, "a", NOW),
        message(&b.id, Role::User, "b", NOW),
    ];
    let r = uow.insert_messages(&mixed).await;
    assert!(matches!(r, Err(PortError::Unexpected(_))), "{r:?}");
    let page = uow
        .list_messages(&a.id, &ListParams::default())
        .await
        .unwrap();
    assert!(
        page.items.is_empty(),
        "nothing of a refused batch is stored"
    );
    uow.rollback().await.unwrap();
    store.close().await;
}

/// A row that breaks a domain rule (here: edited behind Weft's back) is
/// reported as Unexpected (data corruption), never returned as a value.
#[tokio::test]
async fn a_corrupt_row_is_an_unexpected_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = migrated(&path).await;
    let f = store.factory();
    let t = thread(NOW);
    let m = message(&t.id, Role::User, "hello", NOW);
    let mut uow = begin(&*f, "alice", Mode::ReadWrite).await;
    uow.lock_thread_sequence().await.unwrap();
    uow.insert_thread(&t).await.unwrap();
    uow.insert_messages(std::slice::from_ref(&m)).await.unwrap();
    uow.adjust_message_count(&t.id, 1, NOW).await.unwrap();
    uow.commit().await.unwrap();

    let mut side = side_connection(&path).await;
    sqlx::query("UPDATE messages SET content = '[]' WHERE id = ?")
        .bind(m.id.as_str())
        .execute(&mut side)
        .await
        .unwrap();
    sqlx::query("UPDATE threads SET metadata = '{\"k\": 1}' WHERE id = ?")
        .bind(t.id.as_str())
        .execute(&mut side)
        .await
        .unwrap();
    side.close().await.unwrap();

    let mut uow = begin(&*f, "alice", Mode::ReadOnly).await;
    let got = uow.get_message(&t.id, &m.id).await;
    assert!(
        matches!(got, Err(PortError::Unexpected(_))),
        "corrupt content: {got:?}"
    );
    let got = uow.get_thread(&t.id).await;
    assert!(
        matches!(got, Err(PortError::Unexpected(_))),
        "corrupt metadata: {got:?}"
    );
    let page = uow.list_threads(&ListParams::default()).await;
    assert!(
        matches!(page, Err(PortError::Unexpected(_))),
        "corrupt row in a list: {page:?}"
    );
    uow.commit().await.unwrap();
    store.close().await;
}

/// The pool stats count both the writer and the readers, and a closed store
/// refuses new units of work as Unavailable.
#[tokio::test]
async fn stats_count_connections_and_a_closed_store_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&db_path(&dir)).await;
    let f = store.factory();
    let r1 = begin(&*f, "alice", Mode::ReadOnly).await;
    let r2 = begin(&*f, "alice", Mode::ReadOnly).await;
    let w = begin(&*f, "alice", Mode::ReadWrite).await;
    let busy = store.pool_stats();
    assert_eq!(busy.busy(), 3, "{busy:?}");
    r1.commit().await.unwrap();
    r2.rollback().await.unwrap();
    w.commit().await.unwrap();
    assert!(all_idle(&store).await, "{:?}", store.pool_stats());
    store.close().await;
    let r = f.begin(&ctx("alice"), Mode::ReadOnly).await.map(drop);
    assert!(matches!(r, Err(PortError::Unavailable(_))), "{r:?}");
}

/// Writes `n` threads with two messages each through the store, using its
/// read-only pool too (so readers hold the WAL open), and returns their ids.
async fn fill(store: &SqliteStore, n: usize) -> Vec<weft_domain::ThreadId> {
    let f = store.factory();
    let mut ids = Vec::new();
    for _ in 0..n {
        let t = thread(NOW);
        let mut uow = begin(&*f, "alice", Mode::ReadWrite).await;
        uow.lock_thread_sequence().await.unwrap();
        uow.insert_thread(&t).await.unwrap();
        uow.insert_messages(&[
            message(&t.id, Role::User, "question", NOW),
            message(&t.id, Role::Assistant, "answer", NOW),
        ])
        .await
        .unwrap();
        uow.adjust_message_count(&t.id, 2, NOW).await.unwrap();
        uow.commit().await.unwrap();
        let mut r = begin(&*f, "alice", Mode::ReadOnly).await;
        r.get_thread(&t.id).await.unwrap();
        r.commit().await.unwrap();
        ids.push(t.id);
    }
    ids
}

/// Every thread of `ids` reads back with its two messages from `path`.
async fn reads_back(path: &Path, ids: &[weft_domain::ThreadId]) {
    let store = migrated(path).await;
    let f = store.factory();
    let mut uow = begin(&*f, "alice", Mode::ReadOnly).await;
    for id in ids {
        let t = uow.get_thread(id).await.unwrap();
        assert_eq!(t.message_count, 2);
        let page = uow.list_messages(id, &ListParams::default()).await.unwrap();
        assert_eq!(page.items.len(), 2);
    }
    uow.commit().await.unwrap();
    store.close().await;
}

/// After a clean close the database is one self-contained file: the WAL
/// was folded back and removed, so copying `weft.db` alone (what people do
/// to back up or move it) keeps every object (API.md "Configuration").
#[tokio::test]
async fn after_close_the_database_file_alone_holds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = migrated(&path).await;
    let ids = fill(&store, 30).await;
    store.close().await;
    let wal = dir.path().join("weft.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "data left in the WAL after close: {} bytes",
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
    );
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    reads_back(&copy, &ids).await;
}

/// `backup_to` writes a consistent copy of a live database (writers keep
/// going) that a fresh store opens with every object intact, and never
/// overwrites an existing file.
#[tokio::test]
async fn a_backup_of_a_live_database_opens_with_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&db_path(&dir)).await;
    let ids = fill(&store, 20).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { fill(&store, 20).await })
    };
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("backup.db");
    store.backup_to(&backup).await.unwrap();
    writer.await.unwrap();
    assert!(matches!(
        store.backup_to(&backup).await,
        Err(StoreError::Config(_))
    ));
    store.close().await;
    reads_back(&backup, &ids).await;
}

/// A database filled through the first schema (migration 0001: id-only
/// keys) upgrades in place to the owner-keyed one with nothing lost: every
/// object reads back unchanged and new writes continue above the old ids.
#[tokio::test]
async fn a_database_of_the_first_schema_upgrades_in_place_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let first_only = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0001_init.sql");
    std::fs::copy(&src, first_only.path().join("0001_init.sql")).unwrap();
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
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
    conn.close().await.unwrap();
    let store = migrated(&path).await;
    store.ready().await.unwrap();
    weft_conformance::upgrade::verify(store.factory()).await;
    store.close().await;
}
