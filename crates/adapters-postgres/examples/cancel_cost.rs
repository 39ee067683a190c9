//! Measures what the unit of work's cancellation design costs, on the
//! harness's local PostgreSQL (a benchmark, not a test: it prints numbers
//! and asserts nothing about time).
//!
//! `cargo run --release -p weft-adapters-postgres --example cancel_cost [N]`
//!
//! Compares, per create-message unit of work (BEGIN, count update, insert,
//! COMMIT), run one after another on a pool of 4:
//! - `sqlx::Transaction` on a default pool (the baseline this design replaces);
//! - Weft's unit of work, uncancelled;
//! - Weft's unit of work dropped between statements (background ROLLBACK,
//!   connection kept), followed by the next unit of work;
//! - Weft's unit of work dropped mid-statement (connection closed, the next
//!   `begin` opens a new one);
//! - and a bare new connection, for scale.

// Test and benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use weft_adapters_postgres::{PgConfig, PgStore};
use weft_domain::{
    Attachments, Content, ContentInput, Message, MessageId, Metadata, RequestId, Role, Thread,
    ThreadId, Timestamp, ToolResources, UserId,
};
use weft_ports::{Mode, RequestContext, UnitOfWorkFactory};
use weft_testkit::PgHarness;

fn ctx() -> RequestContext {
    RequestContext::new(
        UserId::parse("bench").expect("valid user"),
        RequestId::parse("bench").expect("valid request id"),
        None,
    )
}

fn message(thread: &ThreadId) -> Message {
    Message {
        id: MessageId::from_uuid(uuid::Uuid::now_v7()),
        thread_id: thread.clone(),
        created_at: Timestamp::from_unix_seconds(1),
        role: Role::User,
        content: Content::parse(ContentInput::Text("hello".into())).expect("valid content"),
        attachments: Attachments::default(),
        metadata: Metadata::default(),
    }
}

fn report(name: &str, n: usize, took: Duration) {
    let per = took / u32::try_from(n).expect("small n");
    tracing::info!("{name}: {n} in {took:.2?} = {per:.2?} each");
    // The point of this example is to print; stdout is its interface.
    #[allow(clippy::print_stdout)]
    {
        println!("{name:<58} {per:>10.1?} per unit of work");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let url = PgHarness::fresh_database_url()
        .await
        .expect("a test database");
    let mut cfg = PgConfig::new(url.clone());
    cfg.pool_max = 4;
    let store = PgStore::connect(&cfg).await.expect("connect");
    store.migrate().await.expect("migrate");
    let f = store.factory();
    let c = ctx();

    let thread = Thread {
        id: ThreadId::from_uuid(uuid::Uuid::now_v7()),
        created_at: Timestamp::from_unix_seconds(1),
        updated_at: Timestamp::from_unix_seconds(1),
        metadata: Metadata::default(),
        tool_resources: ToolResources::default(),
        title: None,
        message_count: 0,
    };
    let mut uow = f.begin(&c, Mode::ReadWrite).await.expect("begin");
    uow.lock_thread_sequence().await.unwrap();
    uow.insert_thread(&thread).await.expect("insert thread");
    uow.commit().await.expect("commit");

    let create = |f: std::sync::Arc<dyn UnitOfWorkFactory>, tid: ThreadId| async move {
        let mut uow = f.begin(&ctx(), Mode::ReadWrite).await.expect("begin");
        let m = message(&tid);
        uow.append_message(&m).await.expect("append");
        uow.commit().await.expect("commit");
    };
    // Warm up both paths (prepared statements, pool filled).
    for _ in 0..200 {
        create(f.clone(), thread.id.clone()).await;
    }

    // Baseline: the same statements through sqlx::Transaction on a default pool.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("pool");
    let baseline = |tid: ThreadId| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(
                "UPDATE threads SET message_count = message_count + $3, updated_at = GREATEST(updated_at, $4) \
                 WHERE id = $1 AND owner = $2 AND deleted_at IS NULL RETURNING id",
            )
            .bind(tid.as_str())
            .bind("bench")
            .bind(1i64)
            .bind(2i64)
            .fetch_optional(&mut *tx)
            .await
            .expect("touch");
            let m = message(&tid);
            // The adapter's exact statement, so only the transaction
            // handling differs.
            sqlx::query(
                "INSERT INTO messages (id, thread_id, owner, created_at, role, content, attachments, metadata) \
                 SELECT u.id, $1, $2, u.created_at, u.role, u.content::jsonb, u.attachments::jsonb, u.metadata::jsonb \
                 FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[]) \
                    AS u(id, created_at, role, content, attachments, metadata) \
                 WHERE EXISTS (SELECT 1 FROM threads WHERE id = $1 AND owner = $2 AND deleted_at IS NULL)",
            )
            .bind(tid.as_str())
            .bind("bench")
            .bind(vec![m.id.as_str().to_owned()])
            .bind(vec![1i64])
            .bind(vec!["user".to_owned()])
            .bind(vec![m.content.to_stored_json()])
            .bind(vec!["[]".to_owned()])
            .bind(vec!["{}".to_owned()])
            .execute(&mut *tx)
            .await
            .expect("insert");
            tx.commit().await.expect("commit");
        }
    };
    for _ in 0..200 {
        baseline(thread.id.clone()).await;
    }

    // Interleaved rounds, median per unit of work: the host is shared, so a
    // single long run mostly measures whoever else was busy at the time.
    let rounds = 7;
    let per_round = (n / rounds).max(1);
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            baseline(thread.id.clone()).await;
        }
        samples[0].push(start.elapsed());

        let start = Instant::now();
        for _ in 0..per_round {
            create(f.clone(), thread.id.clone()).await;
        }
        samples[1].push(start.elapsed());

        let start = Instant::now();
        for _ in 0..per_round / 4 {
            let mut uow = f.begin(&c, Mode::ReadWrite).await.expect("begin");
            uow.adjust_message_count(&thread.id, 0, Timestamp::from_unix_seconds(2))
                .await
                .expect("touch");
            drop(uow);
            create(f.clone(), thread.id.clone()).await;
        }
        samples[2].push(start.elapsed() * 4);

        let start = Instant::now();
        for _ in 0..per_round / 4 {
            let mut uow = f.begin(&c, Mode::ReadWrite).await.expect("begin");
            // One poll sends the statement; the timer then drops it in flight.
            let cut = tokio::time::timeout(
                Duration::ZERO,
                uow.adjust_message_count(&thread.id, 0, Timestamp::from_unix_seconds(2)),
            )
            .await;
            drop(cut);
            drop(uow);
            create(f.clone(), thread.id.clone()).await;
        }
        samples[3].push(start.elapsed() * 4);
    }
    let names = [
        "baseline: sqlx::Transaction, default pool",
        "weft unit of work, uncancelled",
        "dropped between statements + next unit of work",
        "dropped mid-statement + next unit of work (reconnect)",
    ];
    for (name, mut s) in names.into_iter().zip(samples) {
        s.sort();
        report(name, per_round, s[s.len() / 2]);
    }

    let m = (n / 8).max(1);
    let start = Instant::now();
    for _ in 0..m {
        let conn = PgConnection::connect(&url).await.expect("connect");
        conn.close().await.expect("close");
    }
    report(
        "for scale: open and close one connection",
        m,
        start.elapsed(),
    );
    store.close().await;
}
