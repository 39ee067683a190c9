//! The shared adapter conformance suite (`weft-conformance`), run on SQLite:
//! the acceptance gate of this adapter. Each test gets a fresh database file
//! in its own temporary directory.

// Test code: a panic is the assertion (clippy.toml allows this inside
// #[test] fns; these helpers sit outside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use weft_adapters_sqlite::{SqliteConfig, SqliteStore};
use weft_conformance::{ConformanceTarget, LeakReport};
use weft_domain::{
    Attachments, Content, MessageId, Metadata, Role, ThreadId, Title, ToolResources,
};
use weft_ports::UnitOfWorkFactory;

/// The SQLite store on a fresh file, plus the directory that holds it.
struct SqliteTarget {
    store: SqliteStore,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A connection of the test's own, outside the store's pools.
async fn side_connection(path: &Path, read_only: bool) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap()
}

/// Whether some connection holds SQLite's write lock right now. With every
/// pooled connection idle, a held lock is a leaked write transaction — the
/// SQLite form of "idle in transaction".
async fn write_lock_held(path: &Path) -> bool {
    let mut probe = side_connection(path, false).await;
    let held = match sqlx::query("BEGIN IMMEDIATE").execute(&mut probe).await {
        Ok(_) => {
            sqlx::query("ROLLBACK").execute(&mut probe).await.unwrap();
            false
        }
        Err(_) => true,
    };
    probe.close().await.unwrap();
    held
}

#[async_trait::async_trait]
impl ConformanceTarget for SqliteTarget {
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.store.factory()
    }

    /// Writers on SQLite are always serialized (one writer connection,
    /// BEGIN IMMEDIATE): the normal factory is already the strongest.
    fn serializable_factory(&self) -> Arc<dyn UnitOfWorkFactory> {
        self.store.factory()
    }

    /// Writers wait for each other (one writer connection, BEGIN IMMEDIATE)
    /// instead of conflicting, so no retry is expected, only the final state.
    fn serializable_conflicts(&self) -> bool {
        false
    }

    async fn leak_report(&self) -> LeakReport {
        let stats = self.store.pool_stats();
        LeakReport {
            busy_connections: stats.busy(),
            idle_in_transaction: u32::from(write_lock_held(&self.path).await),
            active_statements: 0,
        }
    }

    async fn invariant_violations(&self) -> Vec<String> {
        let mut conn = side_connection(&self.path, true).await;
        let mut out = Vec::new();
        let counts = sqlx::query(
            "SELECT t.id, t.message_count, \
                    (SELECT count(*) FROM messages m WHERE m.owner = t.owner AND m.thread_id = t.id \
                       AND m.deleted_at IS NULL) AS live \
             FROM threads t WHERE t.deleted_at IS NULL AND t.message_count <> live",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for r in counts {
            out.push(format!(
                "thread {} counts {} messages but has {} live",
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<i64, _>(2)
            ));
        }
        // Every message belongs to a thread of its own owner (the foreign
        // key includes the owner), and ids stay within their sequences
        // (ports rule 8): no thread above its owner's newest, no message
        // above its thread's newest.
        for (what, sql) in [
            (
                "message without a thread of its owner",
                "SELECT m.id FROM messages m WHERE NOT EXISTS \
                 (SELECT 1 FROM threads t WHERE t.owner = m.owner AND t.id = m.thread_id)",
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
        ] {
            let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
            for r in rows {
                out.push(format!("{what}: {}", r.get::<String, _>(0)));
            }
        }
        // Every stored row re-parses into the domain types.
        let threads =
            sqlx::query("SELECT id, metadata, tool_resources, title, message_count FROM threads")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for r in threads {
            let id: String = r.get(0);
            let ok = ThreadId::parse(&id).is_ok()
                && serde_json::from_str(&r.get::<String, _>(1))
                    .ok()
                    .and_then(|m| Metadata::parse(m).ok())
                    .is_some()
                && serde_json::from_str(&r.get::<String, _>(2))
                    .ok()
                    .and_then(|v| ToolResources::parse(v).ok())
                    .is_some()
                && r.get::<Option<String>, _>(3)
                    .is_none_or(|t| Title::parse(&t).is_ok())
                && r.get::<i64, _>(4) >= 0;
            if !ok {
                out.push(format!("thread row {id} does not re-parse"));
            }
        }
        let messages =
            sqlx::query("SELECT id, thread_id, role, content, attachments, metadata FROM messages")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for r in messages {
            let id: String = r.get(0);
            let ok = MessageId::parse(&id).is_ok()
                && ThreadId::parse(&r.get::<String, _>(1)).is_ok()
                && Role::parse(&r.get::<String, _>(2)).is_ok()
                && Content::from_stored_json(&r.get::<String, _>(3)).is_ok()
                && serde_json::from_str(&r.get::<String, _>(4))
                    .ok()
                    .and_then(|v| Attachments::parse(v).ok())
                    .is_some()
                && serde_json::from_str(&r.get::<String, _>(5))
                    .ok()
                    .and_then(|m| Metadata::parse(m).ok())
                    .is_some();
            if !ok {
                out.push(format!("message row {id} does not re-parse"));
            }
        }
        conn.close().await.unwrap();
        out
    }
}

/// A migrated store on a fresh file. The acquire timeout is generous because
/// the load cases queue up to a thousand writers for the single writer
/// connection.
async fn make_target() -> SqliteTarget {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let mut cfg = SqliteConfig::new(format!("sqlite://{}", path.display()));
    cfg.acquire_timeout = Duration::from_secs(120);
    let store = SqliteStore::connect(&cfg).await.unwrap();
    store.migrate().await.unwrap();
    SqliteTarget {
        store,
        path,
        _dir: dir,
    }
}

weft_conformance::conformance_tests!(make_target);

#[async_trait::async_trait]
impl weft_conformance::lifecycle::LifecycleTarget for SqliteTarget {
    fn maintenance(&self) -> Arc<dyn weft_ports::Maintenance> {
        self.store.maintenance()
    }

    /// A second store on the same file: its own writer connection, so its
    /// batches contend for SQLite's write lock as another process's do.
    async fn other_process(&self) -> Arc<dyn weft_ports::Maintenance> {
        let cfg = SqliteConfig::new(format!("sqlite://{}", self.path.display()));
        SqliteStore::connect(&cfg).await.unwrap().maintenance()
    }

    async fn rows_of(&self, owner: &str) -> weft_conformance::lifecycle::RowCounts {
        let mut conn = side_connection(&self.path, true).await;
        let mut counts = [0u64; 4];
        for (n, table) in counts
            .iter_mut()
            .zip(["threads", "messages", "idempotency", "owners"])
        {
            let c: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE owner = ?"))
                    .bind(owner)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            *n = u64::try_from(c).unwrap();
        }
        conn.close().await.unwrap();
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
        thread: &ThreadId,
        n: u64,
        text: &str,
        deleted_at: Option<weft_domain::Timestamp>,
    ) {
        let mut conn = side_connection(&self.path, false).await;
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut conn)
            .await
            .unwrap();
        let newest: String =
            sqlx::query_scalar("SELECT newest_message_id FROM threads WHERE owner = ? AND id = ?")
                .bind(owner)
                .bind(thread.as_str())
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let newest = MessageId::parse(&newest).ok();
        let prefix = weft_conformance::lifecycle::bulk_id_prefix(newest.as_ref());
        let content = weft_conformance::fixtures::content(text).to_stored_json();
        let n = i64::try_from(n).unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1) \
             INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at) \
             SELECT ?2, ?3, 'msg_' || ?4 || printf('%012x', i), ?5, 'user', ?6, '[]', '{}', ?7 FROM seq",
        )
        .bind(n)
        .bind(owner)
        .bind(thread.as_str())
        .bind(&prefix)
        .bind(weft_conformance::fixtures::NOW.unix_seconds())
        .bind(&content)
        .bind(deleted_at.map(|t| t.unix_seconds()))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE threads SET newest_message_id = 'msg_' || ?3 || printf('%012x', ?4), \
                    message_count = message_count + ?5 WHERE owner = ?1 AND id = ?2",
        )
        .bind(owner)
        .bind(thread.as_str())
        .bind(&prefix)
        .bind(n)
        .bind(if deleted_at.is_some() { 0 } else { n })
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        conn.close().await.unwrap();
    }
}

weft_conformance::lifecycle_tests!(make_target);
