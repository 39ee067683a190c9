//! API.md "Data lifecycle" and `WEFT_IDEMPOTENCY_RETENTION`: `weft purge`,
//! `weft export`, `weft erase-user` and `weft backup` run as the real
//! binary against a running server's database, the server's background
//! expiry of idempotency records, and the export's memory bound. Tables are
//! checked directly where the API cannot see (erased and purged rows).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::binary::weft_in;
use crate::both_databases;
use crate::helpers::{spawn_app, spawn_app_with, Db, TestApp, Topology};

/// What a finished `weft` command printed.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `weft ARGS` against `app`'s database (`WEFT_DATABASE_URL`), to
/// its end, bounded at 120 s.
async fn weft(app: &TestApp, args: &[&str]) -> Ran {
    weft_within(app, args, Duration::from_secs(120)).await
}

/// [`weft`], bounded at `bound`.
async fn weft_within(app: &TestApp, args: &[&str], bound: Duration) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = weft_in(dir.path());
    cmd.args(args)
        .envs(database_env(app))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(bound, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("weft {args:?} did not end within {bound:?}"))
        .expect("weft runs");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The environment that points a `weft` command at `app`'s database the
/// way the server reaches it (through PgBouncer: no statement cache).
fn database_env(app: &TestApp) -> [(&'static str, String); 2] {
    let cache = if app.db == Topology::PgBouncer {
        "off"
    } else {
        "on"
    };
    [
        ("WEFT_DATABASE_URL", app.database_url().to_owned()),
        ("WEFT_PG_STATEMENT_CACHE", cache.to_owned()),
    ]
}

/// A connection of the test's own to the server's database.
enum Sql {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Sql {
    async fn open(app: &TestApp) -> Self {
        let url = app.pg_url.as_deref().unwrap_or_else(|| app.database_url());
        if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .unwrap()
                .busy_timeout(Duration::from_secs(10));
            Self::Sqlite(sqlx::SqliteConnection::connect_with(&opts).await.unwrap())
        } else {
            Self::Pg(sqlx::PgConnection::connect(url).await.unwrap())
        }
    }

    /// `sql` with `$1` … written for PostgreSQL; SQLite reads `$1` too.
    async fn exec(&mut self, sql: &str, binds: &[&str]) -> u64 {
        match self {
            Self::Sqlite(c) => {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.execute(&mut *c).await.unwrap().rows_affected()
            }
            Self::Pg(c) => {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.execute(&mut *c).await.unwrap().rows_affected()
            }
        }
    }

    async fn count(&mut self, sql: &str, binds: &[&str]) -> i64 {
        match self {
            Self::Sqlite(c) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.fetch_one(&mut *c).await.unwrap()
            }
            Self::Pg(c) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.fetch_one(&mut *c).await.unwrap()
            }
        }
    }

    /// Rows of `owner` in threads, messages, idempotency and owners.
    async fn rows_of(&mut self, owner: &str) -> [i64; 4] {
        let mut out = [0; 4];
        for (n, table) in out
            .iter_mut()
            .zip(["threads", "messages", "idempotency", "owners"])
        {
            *n = self
                .count(
                    &format!("SELECT count(*) FROM {table} WHERE owner = $1"),
                    &[owner],
                )
                .await;
        }
        out
    }
}

fn text_message(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

async fn messages_of(app: &TestApp, user: &str, thread: &str) -> Vec<Value> {
    app.list_all(&format!("/v1/threads/{thread}/messages"), user, "asc", 100)
        .await
}

both_databases! {
    /// `weft purge --archived-before 1d` beside the running server removes
    /// what was deleted more than a day ago — a deleted thread with all its
    /// messages, a deleted message of a live thread — and nothing deleted
    /// since; a purged object's id is then an unknown cursor (400), one
    /// deleted but not purged still pages on; a second run purges nothing.
    async fn weft_purge_removes_what_was_deleted_long_enough_ago_while_the_server_runs(app) {
        let a = app.create_thread("alice", json!({"messages": [text_message("one"), text_message("two"), text_message("three")]})).await;
        let a = a["id"].as_str().unwrap().to_owned();
        let msgs: Vec<String> = messages_of(&app, "alice", &a).await.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        app.delete(&format!("/v1/threads/{a}/messages/{}", msgs[1]), "alice").await.expect(200);
        let old = app.create_thread("alice", json!({"messages": [text_message("x"), text_message("y")]})).await;
        let old = old["id"].as_str().unwrap().to_owned();
        app.delete(&format!("/v1/threads/{old}"), "alice").await.expect(200);
        let recent = app.create_thread("alice", json!({})).await;
        let recent = recent["id"].as_str().unwrap().to_owned();
        app.delete(&format!("/v1/threads/{recent}"), "alice").await.expect(200);
        // Two days ago, as far as the rows know.
        let mut sql = Sql::open(&app).await;
        sql.exec("UPDATE messages SET deleted_at = deleted_at - 172800 WHERE owner = $1 AND id = $2", &["alice", &msgs[1]]).await;
        sql.exec("UPDATE threads SET deleted_at = deleted_at - 172800 WHERE owner = $1 AND id = $2", &["alice", &old]).await;

        let ran = weft(&app, &["purge", "--archived-before", "1d"]).await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        assert!(ran.stdout.contains("purged 1 threads and 3 messages deleted through the API more than 1d ago"), "{ran:?}");

        assert_eq!(sql.rows_of("alice").await, [2, 2, 0, 1], "a and recent stay, with a's two live messages; the sequence stays");
        let left: Vec<String> = messages_of(&app, "alice", &a).await.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(left, vec![msgs[0].clone(), msgs[2].clone()]);
        app.get(&format!("/v1/threads/{a}/messages?after={}", msgs[1]), "alice").await.expect_error(400);
        app.get(&format!("/v1/threads?after={old}"), "alice").await.expect_error(400);
        app.get(&format!("/v1/threads?after={recent}"), "alice").await.expect(200);

        let again = weft(&app, &["purge", "--archived-before", "1d"]).await;
        assert_eq!(again.code, Some(0), "{again:?}");
        assert!(again.stdout.contains("purged 0 threads and 0 messages"), "{again:?}");
    }

    /// `weft export --user alice` writes alice's live threads, oldest
    /// first, each followed by its live messages, one JSON object a line,
    /// each exactly what the API returns for it; nothing deleted, nothing
    /// of bob; a summary on stderr, so stdout is the export alone.
    async fn weft_export_writes_the_users_live_objects_exactly_as_the_api_shows_them(app) {
        let t1 = app.create_thread("alice", json!({
            "title": "GPU costs", "metadata": {"project": "alpha"}, "tool_resources": {"code_interpreter": {"file_ids": ["f1"]}},
            "messages": [text_message("Why did the bill go up?"),
                         {"role": "assistant", "content": [{"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": "https://example.com/chart.png", "detail": "high"}}]}]
        })).await;
        let t1 = t1["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/threads/{t1}/messages"), "alice", json!({"role": "user", "content": "thanks", "metadata": {"k": "v"}, "attachments": [{"file_id": "f2"}]})).await.expect(200);
        let gone = app.create_message("alice", &t1, "never mind").await;
        app.delete(&format!("/v1/threads/{t1}/messages/{}", gone["id"].as_str().unwrap()), "alice").await.expect(200);
        app.create_thread("alice", json!({})).await;
        let deleted = app.create_thread("alice", json!({"messages": [text_message("secret")]})).await;
        app.delete(&format!("/v1/threads/{}", deleted["id"].as_str().unwrap()), "alice").await.expect(200);
        app.create_thread("bob", json!({"messages": [text_message("bob's")]})).await;

        let mut expected = Vec::new();
        for t in app.list_all("/v1/threads", "alice", "asc", 100).await {
            let id = t["id"].as_str().unwrap();
            expected.push(app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200));
            expected.extend(messages_of(&app, "alice", id).await);
        }
        assert_eq!(expected.len(), 2 + 3);

        let ran = weft(&app, &["export", "--user", "alice"]).await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let lines: Vec<Value> = ran.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
        assert_eq!(lines, expected);
        assert!(ran.stderr.contains("exported 2 threads and 3 messages of user 'alice'"), "{ran:?}");

        let nobody = weft(&app, &["export", "--user", "nobody"]).await;
        assert_eq!((nobody.code, nobody.stdout.as_str()), (Some(0), ""), "{nobody:?}");
    }

    /// `weft erase-user --user alice` deletes every row of alice — live and
    /// deleted threads and messages, idempotency records, her thread
    /// sequence — and prints the counts; afterwards no table holds a row of
    /// hers, bob's rows are all there, and a second run finds nothing.
    async fn weft_erase_user_leaves_nothing_of_the_user_in_any_table(app) {
        for user in ["alice", "bob"] {
            for i in 0..3 {
                let body = json!({"messages": [text_message("a"), text_message("b")]});
                app.send(app.request(Method::POST, "/v1/threads", Some(user)).header("Idempotency-Key", format!("k{i}")).json(&body)).await.expect(200);
            }
            let t = app.create_thread(user, json!({"messages": [text_message("c")]})).await;
            let t = t["id"].as_str().unwrap().to_owned();
            let m = app.create_message(user, &t, "d").await;
            app.delete(&format!("/v1/threads/{t}/messages/{}", m["id"].as_str().unwrap()), user).await.expect(200);
            let gone = app.create_thread(user, json!({"messages": [text_message("e")]})).await;
            app.delete(&format!("/v1/threads/{}", gone["id"].as_str().unwrap()), user).await.expect(200);
        }
        let mut sql = Sql::open(&app).await;
        assert_eq!(sql.rows_of("alice").await, [5, 9, 3, 1]);
        let bob = sql.rows_of("bob").await;

        let ran = weft(&app, &["erase-user", "--user", "alice", "--batch-size", "2", "--pause-ms", "1"]).await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        assert!(ran.stdout.contains("erased user 'alice'"), "{ran:?}");
        assert!(ran.stdout.contains(": 5 threads, 9 messages, 3 idempotency records, and its thread sequence"), "{ran:?}");
        assert_eq!(sql.rows_of("alice").await, [0, 0, 0, 0], "no row of alice in any table");
        assert_eq!(sql.rows_of("bob").await, bob, "every row of bob");
        let listed = app.get("/v1/threads", "alice").await.expect(200);
        assert_eq!(listed["data"], json!([]));

        let again = weft(&app, &["erase-user", "--user", "alice"]).await;
        assert_eq!(again.code, Some(0), "{again:?}");
        assert!(again.stdout.contains(": 0 threads, 0 messages, 0 idempotency records"), "{again:?}");
    }
}

/// `weft backup --to PATH` of a live SQLite database, while the server
/// keeps writing, is one self-contained file (no `-wal` beside it, mode
/// 0600) that a fresh `weft serve` opens with every object intact; it never
/// overwrites a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_backup_copies_a_live_sqlite_database_that_a_fresh_server_opens_whole() {
    let mut app = spawn_app(Db::Sqlite).await;
    for i in 0..5 {
        let t = app
            .create_thread(
                "alice",
                json!({"title": format!("t{i}"), "messages": [text_message("hello")]}),
            )
            .await;
        app.create_message("alice", t["id"].as_str().unwrap(), "more")
            .await;
    }
    let snapshot = everything_of(&app, "alice").await;
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy.db");
    let copy_arg = copy.display().to_string();

    // Writers keep going during the backup: it copies one snapshot.
    let writer = {
        let (base, token) = (app.base.clone(), app.token("bob"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..50 {
                let r = client
                    .post(format!("{base}/v1/threads"))
                    .bearer_auth(&token)
                    .json(&json!({"messages": [{"role": "user", "content": "busy"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let ran = weft(&app, &["backup", "--to", &copy_arg]).await;
    writer.await.unwrap();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains(&format!("to {copy_arg}")), "{ran:?}");
    assert!(
        !out.path().join("copy.db-wal").exists(),
        "no -wal beside the copy"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy is owner-only like the database");
    }
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["copy.db".to_owned()],
        "nothing else left behind"
    );

    let twice = weft(&app, &["backup", "--to", &copy_arg]).await;
    assert_eq!(twice.code, Some(1), "{twice:?}");
    assert!(twice.stderr.contains("exists already"), "{twice:?}");

    app.stop().await;
    let url = format!("sqlite://{copy_arg}");
    let restored = spawn_app_with(Db::Sqlite, |s| {
        s.database = weft_server::config::DatabaseUrl::parse(&url).unwrap();
    })
    .await;
    assert_eq!(everything_of(&restored, "alice").await, snapshot);
}

/// Every thread of `user` (as `GET /v1/threads/{id}` returns it) with its messages.
async fn everything_of(app: &TestApp, user: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for t in app.list_all("/v1/threads", user, "asc", 100).await {
        let id = t["id"].as_str().unwrap();
        out.push(
            app.get(&format!("/v1/threads/{id}"), user)
                .await
                .expect(200),
        );
        out.extend(messages_of(app, user, id).await);
    }
    out
}

/// `weft backup` on PostgreSQL writes nothing: it says `pg_dump` is the
/// tool, with a command to paste, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_backup_on_postgres_points_to_pg_dump() {
    let app = spawn_app(Db::Postgres).await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x.dump");
    let ran = weft(&app, &["backup", "--to", &target.display().to_string()]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains("pg_dump --format=custom --file=weft.dump"),
        "{ran:?}"
    );
    assert!(ran.stdout.contains("pg_restore"), "{ran:?}");
    assert!(!target.exists());
}

/// With the expiry sweeping every 100 ms, a record older than the 24 h
/// retention is deleted by the server itself (counted in
/// `weft_idempotency_records_expired_total`) and its key creates afresh;
/// a younger record stays and still replays.
async fn the_server_deletes_expired_idempotency_records_in_the_background(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.lifecycle.sweep_every = Duration::from_millis(100);
    })
    .await;
    let body = json!({"title": "once"});
    let post = |key: &'static str| {
        app.send(
            app.request(Method::POST, "/v1/threads", Some("alice"))
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let old = post("old").await.id();
    let young = post("young").await.id();
    let mut sql = Sql::open(&app).await;
    sql.exec(
        "UPDATE idempotency SET created_at = created_at - 90000 WHERE owner = $1 AND key = $2",
        &["alice", "old"],
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("weft_idempotency_records_expired_total ").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the record was not expired within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sql.rows_of("alice").await[2],
        1,
        "only the young record is left"
    );
    assert_ne!(post("old").await.id(), old, "an expired key creates afresh");
    assert_eq!(post("young").await.id(), young, "a young key still replays");
}

mod the_server_deletes_expired_idempotency_records_in_the_background {
    crate::topology_tests!(super::the_server_deletes_expired_idempotency_records_in_the_background);
}

/// A retention below the 24 h replay window is refused at start with what
/// is wrong, before anything is created.
#[test]
fn a_retention_below_the_replay_window_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = weft_in(dir.path())
        .arg("serve")
        .env("WEFT_IDEMPOTENCY_RETENTION", "90m")
        .env("WEFT_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 24h"), "{stderr}");
    assert!(stderr.contains("90m"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

/// Writes `n` messages of `chars` characters into a new thread of `user`
/// with SQL (bulk data), ids in creation order, sequences and count kept.
async fn bulk_user(sql: &mut Sql, user: &str, thread: u32, n: u32, chars: usize) {
    let text = "x".repeat(chars);
    let content = json!([{"type": "text", "text": {"value": text, "annotations": []}}]).to_string();
    let tid = format!("thread_{:032x}", u128::from(thread) << 80);
    let prefix = format!("{:020x}", u128::from(thread) << 16);
    let newest = format!("msg_{prefix}{n:012x}");
    let count = n.to_string();
    sql.exec(
        "INSERT INTO owners (owner, newest_thread_id) VALUES ($1, $2) \
         ON CONFLICT (owner) DO UPDATE SET newest_thread_id = $2",
        &[user, &tid],
    )
    .await;
    sql.exec(
        "INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, \
                              message_count, newest_message_id) \
         VALUES ($1, $2, 1764300000, 1764300000, '{}', '{}', NULL, CAST($3 AS INTEGER), $4)",
        &[user, &tid, &count, &newest],
    )
    .await;
    let insert = match sql {
        Sql::Sqlite(_) => {
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < CAST($3 AS INTEGER)) \
             INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata) \
             SELECT $1, $2, 'msg_' || $4 || printf('%012x', i), 1764300000, 'user', $5, '[]', '{}' FROM seq"
        }
        Sql::Pg(_) => {
            "INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata) \
             SELECT $1, $2, 'msg_' || $4 || lpad(to_hex(i), 12, '0'), 1764300000, 'user', $5::jsonb, '[]', '{}' \
             FROM generate_series(1, CAST($3 AS INTEGER)) AS i"
        }
    };
    sql.exec(insert, &[user, &tid, &count, &prefix, &content])
        .await;
}

/// Runs `weft export --user USER` on `app`'s database, reading its output
/// as it comes (counting lines), and its peak resident memory (VmHWM,
/// polled every 5 ms) until it ends. Linux only (`/proc`).
fn export_peak(app: &TestApp, user: &str, bound: Duration) -> (u64, usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = weft_in(dir.path())
        .args(["export", "--user", user])
        .envs(database_env(app))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut lines, mut bytes) = (0usize, 0u64);
        for line in BufReader::new(stdout).lines() {
            bytes += line.unwrap().len() as u64 + 1;
            lines += 1;
        }
        (lines, bytes)
    });
    let status = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + bound;
    let mut peak_kb = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the export did not end within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    let (lines, bytes) = reader.join().unwrap();
    (peak_kb, lines, bytes)
}

/// The export streams: a user with 4,000 messages of 10,000 characters
/// (40 MB of output) is exported with about the same peak memory as one
/// with 100 — pages of at most 200 objects, written as they come.
async fn the_export_of_a_large_user_runs_in_constant_memory(db: Db) {
    let app = spawn_app(db).await;
    let mut sql = Sql::open(&app).await;
    bulk_user(&mut sql, "small", 1, 100, 10_000).await;
    bulk_user(&mut sql, "large", 2, 4_000, 10_000).await;
    let bound = Duration::from_secs(120);
    let (small_kb, small_lines, _) = export_peak(&app, "small", bound);
    let (large_kb, large_lines, large_bytes) = export_peak(&app, "large", bound);
    assert_eq!((small_lines, large_lines), (101, 4_001));
    eprintln!(
        "{db:?}: weft export peak RSS {small_kb} kB for 100 messages, {large_kb} kB for 4,000 \
         ({} MB written)",
        large_bytes / 1_000_000
    );
    assert!(
        large_kb < small_kb + 16 * 1024,
        "peak RSS grew from {small_kb} kB to {large_kb} kB with {large_bytes} bytes exported"
    );
}

mod the_export_of_a_large_user_runs_in_constant_memory {
    crate::topology_tests!(super::the_export_of_a_large_user_runs_in_constant_memory);
}

/// At scale (a measurement, run on demand: `cargo nextest run -p
/// weft-server -E 'test(/at_scale/)' --run-ignored only --no-capture`;
/// `WEFT_SCALE_MESSAGES` messages of 170 characters, 100,000 unless set):
/// `weft export` of the user stays within 16 MB of the peak memory of a
/// 100-message export, and `weft erase-user` then leaves no row of the
/// user. Prints the peak memory and the erase time.
async fn a_user_with_many_messages_is_exported_in_constant_memory_and_erased(db: Db) {
    let n: u32 = std::env::var("WEFT_SCALE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let app = spawn_app(db).await;
    let mut sql = Sql::open(&app).await;
    bulk_user(&mut sql, "small", 1, 100, 170).await;
    let started = Instant::now();
    bulk_user(&mut sql, "large", 2, n, 170).await;
    eprintln!(
        "{db:?}: {n} messages written with SQL in {:?}",
        started.elapsed()
    );
    let bound = Duration::from_secs(3_600);
    let (small_kb, _, _) = export_peak(&app, "small", bound);
    let started = Instant::now();
    let (large_kb, lines, bytes) = export_peak(&app, "large", bound);
    let export_took = started.elapsed();
    assert_eq!(lines, n as usize + 1);
    let started = Instant::now();
    let ran = weft_within(&app, &["erase-user", "--user", "large"], bound).await;
    let erase_took = started.elapsed();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        sql.rows_of("large").await,
        [0, 0, 0, 0],
        "no row of the user"
    );
    eprintln!(
        "{db:?}: weft export of {n} messages ({} MB) in {export_took:?}, peak RSS {large_kb} kB \
         (100 messages: {small_kb} kB); weft erase-user in {erase_took:?}: {}",
        bytes / 1_000_000,
        ran.stdout.trim()
    );
    assert!(
        large_kb < small_kb + 16 * 1024,
        "peak RSS grew from {small_kb} kB to {large_kb} kB exporting {n} messages"
    );
}

mod at_scale {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: minutes of work, run on demand"]
    async fn sqlite() {
        super::a_user_with_many_messages_is_exported_in_constant_memory_and_erased(
            super::Db::Sqlite,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: minutes of work, run on demand"]
    async fn postgres() {
        super::a_user_with_many_messages_is_exported_in_constant_memory_and_erased(
            super::Db::Postgres,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: minutes of work, run on demand"]
    async fn pgbouncer() {
        super::a_user_with_many_messages_is_exported_in_constant_memory_and_erased(
            super::Db::PgBouncer,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: minutes of work, run on demand"]
    async fn citus() {
        super::a_user_with_many_messages_is_exported_in_constant_memory_and_erased(
            super::Db::Citus,
        )
        .await;
    }
}
