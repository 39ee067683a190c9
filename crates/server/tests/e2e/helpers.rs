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
use weft_server::config::{DatabaseUrl, Settings, TokenSettings};
use weft_server::serve::ConnectionLimits;
use weft_server::Application;

/// Which deployment a test runs against: the adapter, and what sits
/// between Weft and its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One Weft on SQLite in a temp dir.
    Sqlite,
    /// One Weft on a fresh database of the test harness's PostgreSQL.
    Postgres,
    /// Two Weft instances on one fresh PostgreSQL database, both through
    /// the harness's PgBouncer in transaction mode
    /// (`WEFT_PG_STATEMENT_CACHE=off`); requests alternate between them.
    PgBouncer,
    /// One Weft on a fresh database of the harness's Citus cluster
    /// (coordinator + 2 workers).
    Citus,
}

/// The former name, kept for tests written before the topologies.
pub type Db = Topology;

impl Topology {
    /// Whether the database is PostgreSQL (plain, pooled or distributed).
    pub fn is_postgres(self) -> bool {
        self != Self::Sqlite
    }

    /// How many Weft instances serve the test.
    pub fn instances(self) -> usize {
        match self {
            Self::PgBouncer => 2,
            _ => 1,
        }
    }
}

/// One running Weft instance.
struct Instance {
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// The running Weft instance(s) of one test and what the test needs to
/// talk to them.
pub struct TestApp {
    /// The first instance's base URL.
    pub base: String,
    /// Every instance's base URL (two on [`Topology::PgBouncer`]).
    pub bases: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
    pub client: reqwest::Client,
    #[allow(dead_code)]
    pub db: Topology,
    /// A direct PostgreSQL URL of the test database (never through the
    /// pooler; the coordinator on Citus), to inspect it.
    pub pg_url: Option<String>,
    /// Every direct URL of the test database (Citus: coordinator, then
    /// each worker).
    pub inspect_urls: Vec<String>,
    keys: TokenKeys,
    secret_bytes: Vec<u8>,
    instances: Vec<Instance>,
    /// The first instance's metrics (still readable after it stopped).
    pub metrics: Metrics,
    /// Every instance's metrics, in the order of [`TestApp::bases`].
    all_metrics: Vec<Metrics>,
    settings: Settings,
    _dir: tempfile::TempDir,
    /// Dropped with the app when the test passed (kept when it failed;
    /// on Citus always dropped).
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

/// A fresh database of `topology` from the test harness: the URL Weft
/// uses, and the database (None for SQLite, whose file lives in `dir`).
pub async fn fresh_database(
    topology: Topology,
    dir: &std::path::Path,
) -> (String, Option<weft_testkit::TestDatabase>) {
    let db = match topology {
        Topology::Sqlite => return (format!("sqlite://{}", dir.join("weft.db").display()), None),
        Topology::Postgres => weft_testkit::PgHarness::fresh_database().await,
        Topology::PgBouncer => weft_testkit::BouncerHarness::fresh_database().await,
        Topology::Citus => weft_testkit::CitusHarness::fresh_database().await,
    }
    .unwrap_or_else(|e| panic!("a fresh {topology:?} database from the test harness: {e}"));
    let url = match topology {
        // Every query an API request runs must be a single-shard router
        // query: the coordinator refuses any other on Weft's connections.
        Topology::Citus => weft_testkit::router_queries_only(db.url()),
        _ => db.url().to_owned(),
    };
    (url, Some(db))
}

/// Starts Weft on port 0 over a fresh database of `topology`.
pub async fn spawn_app(db: Topology) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the settings first.
/// The title generator is the one the settings select (derived titles
/// unless `settings.titles` names a model).
pub async fn spawn_app_with(db: Topology, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(db, adjust, None).await
}

/// Like [`spawn_app_with`], with a chosen title generator.
pub async fn spawn_app_full(
    db: Topology,
    adjust: impl FnOnce(&mut Settings),
    titles: std::sync::Arc<dyn weft_ports::TitleGenerator>,
) -> TestApp {
    spawn(db, adjust, Some(titles)).await
}

async fn spawn(
    db: Topology,
    adjust: impl FnOnce(&mut Settings),
    titles: Option<std::sync::Arc<dyn weft_ports::TitleGenerator>>,
) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, database) = fresh_database(db, dir.path()).await;
    let secret_bytes: Vec<u8> = (0..48).map(|_| fastrand::u8(..)).collect();
    let secret = JwtSecret::new(secret_bytes.clone()).expect("48-byte secret");
    let mut settings = Settings {
        database: DatabaseUrl::parse(&url).expect("test database url"),
        pool_max: 16,
        statement_timeout: Duration::from_secs(5),
        // Behind a pooler in transaction mode: API.md, Configuration.
        pg_statement_cache: db != Topology::PgBouncer,
        secret: secret.clone(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        body: weft_http::body::BodyConfig::default(),
        titles: None,
        lifecycle: weft_server::config::LifecycleSettings::default(),
        tokens: TokenSettings::default(),
        connections: ConnectionLimits::default(),
    };
    adjust(&mut settings);
    let mut bases = Vec::new();
    let mut instances = Vec::new();
    let mut all_metrics = Vec::new();
    for _ in 0..db.instances() {
        let (base, m, tx, server) = start(settings.clone(), titles.clone()).await;
        bases.push(base);
        all_metrics.push(m);
        instances.push(Instance {
            shutdown: Some(tx),
            server: Some(server),
        });
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let inspect_urls = database
        .as_ref()
        .map(|d| d.direct_urls().to_vec())
        .unwrap_or_default();
    TestApp {
        base: bases[0].clone(),
        bases,
        next: std::sync::atomic::AtomicUsize::new(0),
        client,
        db,
        pg_url: inspect_urls.first().cloned(),
        inspect_urls,
        keys: TokenKeys::new(&secret),
        secret_bytes,
        instances,
        metrics: all_metrics[0].clone(),
        all_metrics,
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
    let what = settings.database.describe();
    let app = match titles {
        Some(titles) => Application::build_with_titles(settings, titles).await,
        None => Application::build(settings).await,
    }
    .unwrap_or_else(|e| panic!("server builds on {what}: {}", weft_http::error::chain(&e)));
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

    /// The base URL of the next instance, round robin (always the same
    /// one when there is only one).
    pub fn next_base(&self) -> &str {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// A request builder to `path` as `user` (no auth when `None`), sent to
    /// the instances in turn.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}{}", self.next_base(), path));
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
    /// Requests counted as cancelled, summed over every instance (read from
    /// the servers' metrics handles: still readable after they stopped).
    pub fn cancelled_count(&self) -> u64 {
        self.all_metrics.iter().map(Metrics::cancelled_count).sum()
    }

    /// Summed over every instance.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
    }

    /// The Prometheus text of /metrics, one series per line with its value
    /// summed over every instance (so counts are the deployment's, whichever
    /// instance served each request).
    pub async fn metrics_text(&self) -> String {
        let mut order: Vec<String> = Vec::new();
        let mut sums: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        for base in &self.bases {
            let text = self
                .send(self.client.get(format!("{base}/metrics")))
                .await
                .text;
            for line in text.lines() {
                let parsed = line
                    .rsplit_once(' ')
                    .filter(|_| !line.starts_with('#'))
                    .and_then(|(series, v)| Some((series, v.parse::<f64>().ok()?)));
                let (key, value) = match parsed {
                    Some((series, v)) => (series.to_owned(), Some(v)),
                    None => (line.to_owned(), None),
                };
                if !sums.contains_key(&key) {
                    order.push(key.clone());
                }
                let sum = sums.entry(key).or_insert(0.0);
                *sum += value.unwrap_or(0.0);
            }
        }
        order
            .into_iter()
            .map(|key| match key.starts_with('#') {
                true => key,
                false => format!("{key} {}", sums[&key]),
            })
            .collect::<Vec<_>>()
            .join("\n")
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

    /// For PostgreSQL: sessions of the test database that are `idle in
    /// transaction` on any of its servers (on Citus: the coordinator and
    /// every worker), never counting this inspection's own. Must be none
    /// once requests are over.
    pub async fn idle_in_transaction(&self) -> i64 {
        use sqlx::Connection;
        let mut total = 0;
        for url in &self.inspect_urls {
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
            total += n;
        }
        total
    }

    /// Triggers graceful shutdown of every instance and waits (bounded) for
    /// them to stop.
    pub async fn stop(&mut self) {
        for instance in &mut self.instances {
            if let Some(tx) = instance.shutdown.take() {
                let _ = tx.send(());
            }
        }
        for instance in &mut self.instances {
            if let Some(server) = instance.server.take() {
                tokio::time::timeout(Duration::from_secs(30), server)
                    .await
                    .expect("server stops within the bound")
                    .expect("server task")
                    .expect("server ran cleanly");
            }
        }
    }

    /// The database URL the server runs on (for the `weft` maintenance
    /// commands and direct table checks).
    pub fn database_url(&self) -> &str {
        self.settings.database.as_str()
    }

    /// Stops every instance and starts as many new ones on the same
    /// database and secret.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut bases = Vec::new();
        let mut instances = Vec::new();
        let mut all_metrics = Vec::new();
        for _ in 0..self.db.instances() {
            let (base, metrics, tx, server) = start(self.settings.clone(), None).await;
            bases.push(base);
            all_metrics.push(metrics);
            instances.push(Instance {
                shutdown: Some(tx),
                server: Some(server),
            });
        }
        self.base = bases[0].clone();
        self.bases = bases;
        self.instances = instances;
        self.metrics = all_metrics[0].clone();
        self.all_metrics = all_metrics;
    }
}

/// Generates one test per [`Topology`] from one body, named after it
/// (`<test>::sqlite`, `::postgres`, `::pgbouncer`, `::citus`): the test is
/// written once and runs on every deployment.
#[macro_export]
macro_rules! every_topology {
    ($($(#[doc = $doc:literal])* async fn $name:ident($app:ident) $body:block)*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn scenario($app: $crate::helpers::TestApp) -> () $body

                async fn run(topology: $crate::helpers::Topology) {
                    scenario($crate::helpers::spawn_app(topology).await).await
                }

                $crate::topology_tests!(run);
            }
        )*
    };
}

/// The former name of [`every_topology!`], kept so that tests written
/// before the topologies run on all of them.
#[macro_export]
macro_rules! both_databases {
    ($($t:tt)*) => { $crate::every_topology!($($t)*); };
}

/// Expands to one `#[tokio::test]` per [`Topology`] (`sqlite`, `postgres`,
/// `pgbouncer`, `citus`), each calling `$run(topology).await`; used inside
/// a module named after the test.
#[macro_export]
macro_rules! topology_tests {
    ($run:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            $run($crate::helpers::Topology::Sqlite).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            $run($crate::helpers::Topology::Postgres).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pgbouncer() {
            $run($crate::helpers::Topology::PgBouncer).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn citus() {
            $run($crate::helpers::Topology::Citus).await
        }
    };
}
