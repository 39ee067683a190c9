//! API.md `auto_rename` with a language model: the real model adapter,
//! selected by the settings, against a scripted OpenAI-compatible server on
//! loopback. The model's cleaned title is used; every failure falls back to
//! the derived title and is counted by outcome; the generator never runs
//! with a unit of work open; concurrent renames end with a written title.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use weft_adapters_titles::{ModelConfig, Url};

use crate::helpers::{spawn_app_with, Db, TestApp};
use crate::model_server::{ModelServer, Reply};

const MESSAGE: &str = "Why did our GPU bill go up so much last quarter?";

async fn spawn_with_model(db: Db, server: &ModelServer, timeout: Duration) -> TestApp {
    let mut config = ModelConfig::new(Url::parse(&server.base_url()).unwrap(), "test-model");
    config.timeout = timeout;
    spawn_app_with(db, move |s| s.titles = Some(config)).await
}

async fn thread_with_message(app: &TestApp) -> String {
    let t = app
        .create_thread(
            "alice",
            json!({"messages": [{"role": "user", "content": MESSAGE}]}),
        )
        .await;
    t["id"].as_str().unwrap().to_owned()
}

async fn auto_rename(app: &TestApp, id: &str) -> Value {
    app.post(&format!("/v1/threads/{id}/auto_rename"), "alice", json!({}))
        .await
        .expect(200)
}

async fn outcome_count(app: &TestApp, outcome: &str) -> f64 {
    app.metric(&format!(
        "weft_title_generations_total{{outcome=\"{outcome}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

/// The model's answer, cleaned, becomes the title; a 500, malformed JSON,
/// an over-long answer and an answer of control characters each give the
/// derived title instead (here: the message itself), and each is counted
/// under its outcome with its latency.
async fn the_models_title_is_used_and_every_failure_falls_back_to_the_derived_title(db: Db) {
    let server = ModelServer::start().await;
    let app = spawn_with_model(db, &server, Duration::from_secs(30)).await;
    let id = thread_with_message(&app).await;
    server.script([
        Reply::Answer("  \"GPU bill review\"\n".to_owned()),
        Reply::Status(500, "boom".to_owned()),
        Reply::Raw("{not json".to_owned()),
        Reply::Answer("A".repeat(10_000)),
        Reply::Answer("\u{7}\u{1b}[0m".to_owned()),
    ]);
    assert_eq!(auto_rename(&app, &id).await["title"], "GPU bill review");
    for failure in ["500", "malformed", "over-long", "control characters"] {
        assert_eq!(
            auto_rename(&app, &id).await["title"],
            MESSAGE,
            "after a {failure} answer"
        );
    }
    assert_eq!(server.requests(), 5, "one request per rename, none retried");
    assert_eq!(outcome_count(&app, "ok").await, 1.0);
    assert_eq!(outcome_count(&app, "error").await, 2.0);
    assert_eq!(outcome_count(&app, "invalid").await, 2.0);
    assert_eq!(outcome_count(&app, "timeout").await, 0.0);
    assert_eq!(
        app.metric("weft_title_generation_duration_seconds_count{outcome=\"ok\"}")
            .await,
        Some(1.0)
    );
}

/// A model that does not answer within `WEFT_TITLE_TIMEOUT_MS`: the rename
/// answers with the derived title, counted as a `timeout`.
async fn a_model_slower_than_the_timeout_gives_the_derived_title(db: Db) {
    let server = ModelServer::start().await;
    let app = spawn_with_model(db, &server, Duration::from_millis(300)).await;
    let id = thread_with_message(&app).await;
    let never = std::sync::Arc::new(tokio::sync::Notify::new());
    server.script([Reply::Gated {
        arrived: std::sync::Arc::new(tokio::sync::Notify::new()),
        release: never.clone(),
        answer: "Never sent".to_owned(),
    }]);
    assert_eq!(auto_rename(&app, &id).await["title"], MESSAGE);
    assert_eq!(outcome_count(&app, "timeout").await, 1.0);
    assert_eq!(outcome_count(&app, "ok").await, 0.0);
}

/// While the model is answering, no unit of work is open: the pool is
/// entirely idle (both databases) and, on PostgreSQL, no backend of the
/// database is inside a transaction. The model then answers and its title
/// is written.
async fn the_model_is_never_asked_with_a_unit_of_work_open(db: Db) {
    let server = ModelServer::start().await;
    let app = spawn_with_model(db, &server, Duration::from_secs(30)).await;
    let id = thread_with_message(&app).await;
    let (arrived, release) = (
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    server.script([Reply::Gated {
        arrived: arrived.clone(),
        release: release.clone(),
        answer: "GPU bill review".to_owned(),
    }]);
    let rename = {
        let rb = app.request(
            reqwest::Method::POST,
            &format!("/v1/threads/{id}/auto_rename"),
            Some("alice"),
        );
        tokio::spawn(rb.json(&json!({})).send())
    };
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the use case asked the model");
    // Bounded wait: panics if a connection stays in use while the model works.
    app.wait_for_idle_pool().await;
    if let Some(url) = &app.pg_url {
        assert_eq!(
            open_transactions(url).await,
            0,
            "a transaction is open while the model is asked"
        );
    }
    release.notify_one();
    let reply = rename.await.unwrap().unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["title"], "GPU bill review");
}

/// Client backends of the database at `url` inside a transaction, other
/// than the asking one (autovacuum workers on a fresh database are not
/// clients and would make the count flaky).
async fn open_transactions(url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND backend_type = 'client backend' \
         AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    n
}

/// The check above can see a transaction: one held open on another
/// connection is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_transaction_check_sees_a_transaction_held_open() {
    use sqlx::{Connection, Executor};
    let database = weft_testkit::PgHarness::fresh_database().await.unwrap();
    let url = database.url();
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder.execute("SELECT 1").await.unwrap();
    assert_eq!(open_transactions(url).await, 1);
    holder.execute("ROLLBACK").await.unwrap();
    assert_eq!(open_transactions(url).await, 0);
}

/// Six auto-renames asking the model at once and a manual rename in the
/// middle: every request succeeds and the thread ends with a title one of
/// them wrote (the newest state wins; nothing half-written or lost).
async fn concurrent_auto_renames_and_a_manual_rename_end_with_a_written_title(db: Db) {
    let server = ModelServer::start().await;
    let app = spawn_with_model(db, &server, Duration::from_secs(30)).await;
    let id = thread_with_message(&app).await;
    server.script((0..6u64).map(|i| {
        Reply::Slow(
            Duration::from_millis(10 + (i * 37) % 60),
            format!("Model title {i}"),
        )
    }));
    let path = format!("/v1/threads/{id}");
    let renames = (0..6).map(|_| {
        let rb = app
            .request(
                reqwest::Method::POST,
                &format!("{path}/auto_rename"),
                Some("alice"),
            )
            .json(&json!({}));
        app.send(rb)
    });
    let manual = app.send(
        app.request(reqwest::Method::POST, &path, Some("alice"))
            .json(&json!({"title": "Manual title"})),
    );
    let (renamed, manual) = tokio::join!(futures::future::join_all(renames), manual);
    let mut written: BTreeSet<String> = (0..6).map(|i| format!("Model title {i}")).collect();
    written.insert("Manual title".to_owned());
    let mut answered = BTreeSet::new();
    for reply in renamed.iter().chain(std::iter::once(&manual)) {
        let title = reply.expect(200)["title"].as_str().unwrap().to_owned();
        assert!(
            written.contains(&title),
            "answered a title nobody wrote: {title}"
        );
        answered.insert(title);
    }
    let now = app.get(&path, "alice").await.expect(200);
    let title = now["title"].as_str().unwrap().to_owned();
    assert!(
        answered.contains(&title),
        "final title {title} was not answered to anyone: {answered:?}"
    );
    assert_eq!(now["message_count"], 1);
}

/// One test per topology (`crate::topology_tests!`) for each scenario.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                crate::topology_tests!(super::$name);
            }
        )*
    };
}

on_both_databases!(
    the_models_title_is_used_and_every_failure_falls_back_to_the_derived_title,
    a_model_slower_than_the_timeout_gives_the_derived_title,
    the_model_is_never_asked_with_a_unit_of_work_open,
    concurrent_auto_renames_and_a_manual_rename_end_with_a_written_title,
);
