//! `spawn_app`: the real server on 127.0.0.1:0 over a fresh database, and a
//! small client for it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_domain::UserId;
use weft_http::auth::{JwtSecret, TokenKeys};
use weft_http::metrics::Metrics;
use weft_server::config::{DatabaseUrl, Settings};
use weft_server::Application;

/// Which adapter a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// SQLite in a temp dir.
    Sqlite,
    /// A fresh database on the test harness's PostgreSQL.
    Postgres,
}

/// A running server and what the test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    #[allow(dead_code)]
    pub db: Db,
    /// The PostgreSQL URL of the test database (to inspect `pg_stat_activity`).
    pub pg_url: Option<String>,
    keys: TokenKeys,
    secret_bytes: Vec<u8>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// The running server's metrics (still readable after it stopped).
    pub metrics: Metrics,
    settings: Settings,
    _dir: tempfile::TempDir,
    /// Dropped with the app when the test passed (kept when it failed).
    _database: Option<weft_testkit::TestDatabase>,
}

fn init_logs() {
    // Logs only when asked for: `TEST_LOG=debug cargo test …`.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let subscriber =
            weft_server::telemetry::subscriber(&filter, weft_server::config::LogFormat::Text)
                .expect("TEST_LOG is a tracing filter");
        let _ = weft_server::telemetry::init(subscriber);
    }
}

/// Starts Weft on port 0 over a fresh database of kind `db`.
pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the settings first.
/// The title generator is the one the settings select (derived titles
/// unless `settings.titles` names a model).
pub async fn spawn_app_with(db: Db, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(db, adjust, None).await
}

/// Like [`spawn_app_with`], with a chosen title generator.
pub async fn spawn_app_full(
    db: Db,
    adjust: impl FnOnce(&mut Settings),
    titles: std::sync::Arc<dyn weft_ports::TitleGenerator>,
) -> TestApp {
    spawn(db, adjust, Some(titles)).await
}

async fn spawn(
    db: Db,
    adjust: impl FnOnce(&mut Settings),
    titles: Option<std::sync::Arc<dyn weft_ports::TitleGenerator>>,
) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, pg_url, database) = match db {
        Db::Sqlite => (
            format!("sqlite://{}", dir.path().join("weft.db").display()),
            None,
            None,
        ),
        Db::Postgres => {
            let database = weft_testkit::PgHarness::fresh_database()
                .await
                .expect("a fresh PostgreSQL database from the test harness");
            let url = database.url().to_owned();
            (url.clone(), Some(url), Some(database))
        }
    };
    let secret_bytes: Vec<u8> = (0..48).map(|_| fastrand::u8(..)).collect();
    let secret = JwtSecret::new(secret_bytes.clone()).expect("48-byte secret");
    let mut settings = Settings {
        database: DatabaseUrl::parse(&url).expect("test database url"),
        pool_max: 16,
        statement_timeout: Duration::from_secs(5),
        secret: secret.clone(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        body: weft_http::body::BodyConfig::default(),
        titles: None,
        lifecycle: weft_server::config::LifecycleSettings::default(),
    };
    adjust(&mut settings);
    let (base, metrics, tx, server) = start(settings.clone(), titles).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    TestApp {
        base,
        client,
        db,
        pg_url,
        keys: TokenKeys::new(&secret),
        secret_bytes,
        shutdown: Some(tx),
        server: Some(server),
        metrics,
        settings,
        _dir: dir,
        _database: database,
    }
}

type Running = (
    String,
    Metrics,
    oneshot::Sender<()>,
    JoinHandle<std::io::Result<()>>,
);

async fn start(
    settings: Settings,
    titles: Option<std::sync::Arc<dyn weft_ports::TitleGenerator>>,
) -> Running {
    let app = match titles {
        Some(titles) => Application::build_with_titles(settings, titles).await,
        None => Application::build(settings).await,
    }
    .expect("server builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics = app.metrics().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    (base, metrics, tx, server)
}

/// A response read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics with the body text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts the status, showing the body on failure; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }

    /// Asserts an OpenAI error envelope with `status`, and `x-request-id`.
    #[track_caller]
    pub fn expect_error(&self, status: u16) -> Value {
        let body = self.expect(status);
        assert_error_envelope(&body, status);
        assert!(
            self.headers.contains_key("x-request-id"),
            "x-request-id missing on {status}"
        );
        body
    }

    /// `id` of the JSON body.
    pub fn id(&self) -> String {
        self.json()["id"].as_str().expect("an id").to_owned()
    }
}

/// Checks the exact envelope shape for `status`.
#[track_caller]
pub fn assert_error_envelope(body: &Value, status: u16) {
    let err = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {body}"));
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "message", "param", "type"],
        "envelope keys: {body}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only 'error' at the top: {body}"
    );
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    assert_eq!(err["type"], kind, "{body}");
    assert!(err["param"].is_null());
    match status {
        401 => assert_eq!(err["code"], "invalid_api_key"),
        409 => assert_eq!(err["code"], "idempotency_key_reused"),
        _ => assert!(err["code"].is_null(), "{body}"),
    }
}

impl TestApp {
    /// A valid token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.keys
            .mint(
                &UserId::parse(user).expect("user id"),
                Duration::from_secs(3600),
            )
            .expect("mint")
    }

    /// The raw secret (for tests forging tokens).
    pub fn secret(&self) -> &[u8] {
        &self.secret_bytes
    }

    /// A request builder to `path` as `user` (no auth when `None`).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}{}", self.base, path));
        match user {
            Some(u) => rb.bearer_auth(self.token(u)),
            None => rb,
        }
    }

    /// Sends `rb` and reads the whole reply.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// GET as `user`.
    pub async fn get(&self, path: &str, user: &str) -> Reply {
        self.send(self.request(Method::GET, path, Some(user))).await
    }

    /// POST a JSON body as `user`.
    pub async fn post(&self, path: &str, user: &str, body: Value) -> Reply {
        self.send(self.request(Method::POST, path, Some(user)).json(&body))
            .await
    }

    /// DELETE as `user`.
    pub async fn delete(&self, path: &str, user: &str) -> Reply {
        self.send(self.request(Method::DELETE, path, Some(user)))
            .await
    }

    /// Creates a thread for `user` with `body`; returns its JSON.
    pub async fn create_thread(&self, user: &str, body: Value) -> Value {
        self.post("/v1/threads", user, body).await.expect(200)
    }

    /// Creates a text message in `thread` for `user`; returns its JSON.
    pub async fn create_message(&self, user: &str, thread: &str, text: &str) -> Value {
        self.post(
            &format!("/v1/threads/{thread}/messages"),
            user,
            serde_json::json!({"role": "user", "content": text}),
        )
        .await
        .expect(200)
    }

    /// Every object of a list, paging with `after=last_id` by `limit`.
    pub async fn list_all(&self, path: &str, user: &str, order: &str, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let mut url = format!("{path}?limit={limit}&order={order}");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let page = self.get(&url, user).await.expect(200);
            let data = page["data"].as_array().expect("data").clone();
            assert!(data.len() <= limit as usize);
            out.extend(data);
            if !page["has_more"].as_bool().expect("has_more") {
                return out;
            }
            after = Some(page["last_id"].as_str().expect("last_id").to_owned());
        }
        panic!("paging did not end");
    }

    /// The value of a metric line `name` (exact series text) from /metrics.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .send(self.client.get(format!("{}/metrics", self.base)))
            .await
            .text;
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
    }

    /// Waits (bounded) until every pool connection is idle; panics otherwise.
    pub async fn wait_for_idle_pool(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let size = self
                .metric("weft_db_pool_connections ")
                .await
                .unwrap_or(-1.0);
            let idle = self
                .metric("weft_db_pool_idle_connections ")
                .await
                .unwrap_or(-2.0);
            let waiting = self.metric("weft_db_pool_waiting ").await.unwrap_or(-3.0);
            if size == idle && waiting == 0.0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pool never became idle: size {size}, idle {idle}, waiting {waiting}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// For PostgreSQL: backends of the test database that are `idle in
    /// transaction` (must be none once requests are over).
    pub async fn idle_in_transaction(&self) -> i64 {
        use sqlx::Connection;
        let Some(url) = &self.pg_url else { return 0 };
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("inspect connection");
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        let _ = conn.close().await;
        n
    }

    /// Triggers graceful shutdown and waits (bounded) for the server to stop.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("server stops within the bound")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// The database URL the server runs on (for the `weft` maintenance
    /// commands and direct table checks).
    pub fn database_url(&self) -> &str {
        self.settings.database.as_str()
    }

    /// Stops the server and starts a new one on the same database and secret.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (base, metrics, tx, server) = start(self.settings.clone(), None).await;
        self.base = base;
        self.metrics = metrics;
        self.shutdown = Some(tx);
        self.server = Some(server);
    }
}

/// Generates one `sqlite` and one `postgres` test from one body: the test
/// is written once and runs against both adapters.
#[macro_export]
macro_rules! both_databases {
    ($($(#[doc = $doc:literal])* async fn $name:ident($app:ident) $body:block)*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn scenario($app: $crate::helpers::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    scenario($crate::helpers::spawn_app($crate::helpers::Db::Sqlite).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    scenario($crate::helpers::spawn_app($crate::helpers::Db::Postgres).await).await
                }
            }
        )*
    };
}
