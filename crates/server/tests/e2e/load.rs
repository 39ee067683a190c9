//! What the fault tests share, written once for every topology:
//!
//! - [`WeftProcess`]: a real `weft serve` child process (so it can be
//!   killed with SIGKILL).
//! - [`LoadDriver`]: bounded concurrent load from several users, spread
//!   over the instances, that writes down every acknowledged write (the
//!   [`Ledger`]) and every request's outcome.
//! - [`check_invariants`]: afterwards, through the API and in the database:
//!   every acknowledged write is present, nothing is half-written, every
//!   `message_count` is exact, no session is left `idle in transaction`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_domain::UserId;
use weft_http::auth::{JwtSecret, TokenKeys};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A `weft serve` child process on 127.0.0.1, port chosen by the OS.
pub struct WeftProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl WeftProcess {
    /// Starts `weft serve` with `envs` (on top of a loopback bind, JSON
    /// logs and no inherited WEFT_* database or secret), and waits
    /// (bounded) until it logs that it serves. Panics with its log if it
    /// exits or does not serve within 60 s.
    pub async fn start(envs: Vec<(&'static str, String)>) -> WeftProcess {
        tokio::task::spawn_blocking(move || Self::start_blocking(&envs))
            .await
            .expect("start task")
    }

    fn start_blocking(envs: &[(&'static str, String)]) -> WeftProcess {
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(WEFT);
        cmd.current_dir(dir)
            .arg("serve")
            .env_remove("WEFT_JWT_SECRET")
            .env_remove("WEFT_DATABASE_URL")
            .env("WEFT_BIND", "127.0.0.1:0")
            .env("WEFT_LOG_FORMAT", "json")
            .env("WEFT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("weft starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            // Drains the pipe for the child's whole life, so it never blocks
            // on a full pipe; keeps the log for failure messages.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("weft is serving") {
                        let _ = tx.send(line.clone());
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                let v: Value = serde_json::from_str(&line).expect("JSON log line");
                let addr = v["address"].as_str().expect("address field").to_owned();
                return WeftProcess {
                    child,
                    base: format!("http://{addr}"),
                    log,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "weft did not start serving ({exited:?}); its log:\n{}",
                    log.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
        }
    }

    /// SIGKILL: the process dies at once, mid-request, with its
    /// connections open.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `n` lines it logged at WARN or ERROR, except the expected
    /// "answering 503" ones, for a failure message (what the server saw
    /// behind a 500).
    pub fn problems(&self, n: usize) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let bad: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
            .filter(|l| !l.contains("answering 503"))
            .collect();
        bad[bad.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A random HS256 secret and the matching token minter: what every
/// instance of one deployment shares.
pub struct Secret {
    /// The secret as `WEFT_JWT_SECRET` takes it.
    pub text: String,
    keys: TokenKeys,
}

impl Secret {
    pub fn random() -> Self {
        let text: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
        let keys = TokenKeys::new(&JwtSecret::new(text.as_bytes().to_vec()).expect("secret"));
        Self { text, keys }
    }

    /// A one-hour token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.keys
            .mint(
                &UserId::parse(user).expect("user"),
                Duration::from_secs(3600),
            )
            .expect("mint")
    }
}

/// What the load does in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    CreateThread,
    CreateMessage,
    DeleteMessage,
    Read,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP status and the start of its body.
    Status(u16, String),
    /// No HTTP answer (connection refused or cut, client timeout).
    Transport(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Status(200, _))
    }

    /// A short label for grouping: `200`, `503`, `transport`.
    pub fn label(&self) -> String {
        match self {
            Self::Status(s, _) => s.to_string(),
            Self::Transport(_) => "transport".to_owned(),
        }
    }
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Op {
    pub user: String,
    pub kind: OpKind,
    /// Which instance (index into the load's bases) it was sent to.
    pub instance: usize,
    pub started: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

/// A thread whose creation was acknowledged (200).
#[derive(Debug, Clone)]
pub struct AckedThread {
    pub owner: String,
    pub id: String,
}

/// Every acknowledged write of a load run, and every request's outcome.
#[derive(Debug, Default)]
pub struct Ledger {
    pub threads: Vec<AckedThread>,
    /// Acknowledged message creates: (owner, thread id, message id).
    pub messages: Vec<(String, String, String)>,
    /// Messages whose delete was acknowledged.
    pub deleted: HashSet<String>,
    /// Messages whose delete got no clear answer: they may or may not be
    /// gone, so they are asserted neither way.
    pub maybe_deleted: HashSet<String>,
    pub ops: Vec<Op>,
}

impl Ledger {
    fn merge(&mut self, other: Ledger) {
        self.threads.extend(other.threads);
        self.messages.extend(other.messages);
        self.deleted.extend(other.deleted);
        self.maybe_deleted.extend(other.maybe_deleted);
        self.ops.extend(other.ops);
    }

    /// Outcomes grouped by label, with one example each, for a failure
    /// message: e.g. `CreateMessage 200: 812; CreateMessage 503: 40 (e.g. …)`.
    pub fn summary(&self) -> String {
        let mut groups: HashMap<String, (usize, String)> = HashMap::new();
        for op in &self.ops {
            let example = match &op.outcome {
                Outcome::Status(200, _) => String::new(),
                Outcome::Status(_, body) => body.clone(),
                Outcome::Transport(e) => e.clone(),
            };
            let key = format!("{:?} {}", op.kind, op.outcome.label());
            let g = groups.entry(key).or_insert((0, example));
            g.0 += 1;
        }
        let mut out: Vec<String> = groups
            .into_iter()
            .map(|(label, (n, example))| match example.is_empty() {
                true => format!("{label}: {n}"),
                false => format!("{label}: {n} (e.g. {example})"),
            })
            .collect();
        out.sort();
        out.join("; ")
    }

    /// Requests answered with something else than 200 or 503 (a 500
    /// says "it changed nothing" without knowing; any other status means
    /// the load's own objects were not found or refused).
    pub fn unexpected(&self) -> Vec<&Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Status(s, _) if s != 200 && s != 503))
            .collect()
    }
}

/// Bounds and targets of a load run.
pub struct LoadConfig {
    /// Instances' base URLs; each worker sends its requests to them in turn.
    pub bases: Vec<String>,
    /// Users and their tokens; one worker per user.
    pub users: Vec<(String, String)>,
    /// Upper bound on requests in all.
    pub max_ops: usize,
    /// Upper bound on the run's time.
    pub max_time: Duration,
}

/// Concurrent load running in the background until [`LoadDriver::finish`].
pub struct LoadDriver {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    /// When each user last got a 200 (request start time).
    last_ok: Arc<Mutex<HashMap<String, Instant>>>,
    workers: Vec<tokio::task::JoinHandle<Ledger>>,
}

impl LoadDriver {
    /// Starts one worker per user. Each creates threads (with 0–3 initial
    /// messages, numbered in the thread's metadata), creates and deletes
    /// messages in its own threads, and reads them, sending each request
    /// to the next instance.
    pub fn start(cfg: LoadConfig) -> LoadDriver {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let ops = Arc::new(AtomicUsize::new(0));
        let last_ok = Arc::new(Mutex::new(HashMap::new()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = Instant::now() + cfg.max_time;
        let bases = Arc::new(cfg.bases);
        let workers = cfg
            .users
            .into_iter()
            .enumerate()
            .map(|(i, (user, token))| {
                let w = Worker {
                    user,
                    token,
                    client: client.clone(),
                    bases: Arc::clone(&bases),
                    next_instance: i,
                    rng: fastrand::Rng::with_seed(i as u64 + 1),
                    threads: Vec::new(),
                    messages: Vec::new(),
                    ledger: Ledger::default(),
                    last_ok: Arc::clone(&last_ok),
                };
                let (stop, acks, ops) = (Arc::clone(&stop), Arc::clone(&acks), Arc::clone(&ops));
                let max_ops = cfg.max_ops;
                tokio::spawn(w.run(stop, acks, ops, max_ops, deadline))
            })
            .collect();
        LoadDriver {
            stop,
            acks,
            last_ok,
            workers,
        }
    }

    /// Waits until every one of `users` got a 200 for a request started
    /// at or after `since`, or `bound` passed; whether they all did.
    pub async fn wait_until_served_since(
        &self,
        users: &[String],
        since: Instant,
        bound: Duration,
    ) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            let all = self
                .last_ok
                .lock()
                .is_ok_and(|m| users.iter().all(|u| m.get(u).is_some_and(|t| *t >= since)));
            if all {
                return true;
            }
            if Instant::now() > deadline || self.workers.iter().all(|w| w.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Acknowledged writes so far.
    pub fn acks(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` writes were acknowledged in all, or
    /// `bound` passed; whether they were.
    pub async fn wait_for_acks(&self, n: usize, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while self.acks() < n {
            if Instant::now() > deadline || self.workers.iter().all(|w| w.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the workers after their current request; everything they did.
    pub async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        let mut ledger = Ledger::default();
        for w in self.workers {
            ledger.merge(w.await.expect("load worker"));
        }
        ledger
    }
}

struct Worker {
    user: String,
    token: String,
    client: reqwest::Client,
    bases: Arc<Vec<String>>,
    next_instance: usize,
    rng: fastrand::Rng,
    /// This worker's acknowledged threads.
    threads: Vec<String>,
    /// This worker's acknowledged, not deleted, created messages: (thread, id).
    messages: Vec<(String, String)>,
    ledger: Ledger,
    last_ok: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Worker {
    async fn run(
        mut self,
        stop: Arc<AtomicBool>,
        acks: Arc<AtomicUsize>,
        ops: Arc<AtomicUsize>,
        max_ops: usize,
        deadline: Instant,
    ) -> Ledger {
        while !stop.load(Ordering::Relaxed)
            && Instant::now() < deadline
            && ops.fetch_add(1, Ordering::Relaxed) < max_ops
        {
            if self.step().await {
                acks.fetch_add(1, Ordering::Relaxed);
            } else if self.ledger.ops.last().is_some_and(|op| !op.outcome.is_ok()) {
                // A client backs off a little after a failure instead of
                // spending the whole request budget on a fault.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.ledger
    }

    /// One request; whether it acknowledged a write.
    async fn step(&mut self) -> bool {
        let roll = self.rng.u8(..100);
        if self.threads.is_empty() || roll < 15 {
            let nonce = format!("{:016x}", self.rng.u64(..));
            let initial = self.rng.usize(0..=3);
            let messages: Vec<Value> = (0..initial)
                .map(|j| json!({"role": "user", "content": format!("init {nonce} {j}")}))
                .collect();
            let body = json!({
                "messages": messages,
                "metadata": {"nonce": nonce, "initial": initial.to_string()},
            });
            let (outcome, json) = self
                .send(
                    OpKind::CreateThread,
                    reqwest::Method::POST,
                    "/v1/threads",
                    Some(body),
                )
                .await;
            if outcome.is_ok() {
                let id = json["id"].as_str().expect("thread id").to_owned();
                self.ledger.threads.push(AckedThread {
                    owner: self.user.clone(),
                    id: id.clone(),
                });
                self.threads.push(id);
                return true;
            }
        } else if roll < 65 || self.messages.is_empty() {
            let thread = self.threads[self.rng.usize(..self.threads.len())].clone();
            let body = json!({"role": "user", "content": "load"});
            let path = format!("/v1/threads/{thread}/messages");
            let (outcome, json) = self
                .send(
                    OpKind::CreateMessage,
                    reqwest::Method::POST,
                    &path,
                    Some(body),
                )
                .await;
            if outcome.is_ok() {
                let id = json["id"].as_str().expect("message id").to_owned();
                self.ledger
                    .messages
                    .push((self.user.clone(), thread.clone(), id.clone()));
                self.messages.push((thread, id));
                return true;
            }
        } else if roll < 85 {
            let (thread, id) = self
                .messages
                .swap_remove(self.rng.usize(..self.messages.len()));
            let path = format!("/v1/threads/{thread}/messages/{id}");
            let (outcome, _) = self
                .send(OpKind::DeleteMessage, reqwest::Method::DELETE, &path, None)
                .await;
            if outcome.is_ok() {
                self.ledger.deleted.insert(id);
                return true;
            }
            self.ledger.maybe_deleted.insert(id);
        } else {
            let thread = &self.threads[self.rng.usize(..self.threads.len())];
            let path = format!("/v1/threads/{thread}/messages?limit=20");
            self.send(OpKind::Read, reqwest::Method::GET, &path, None)
                .await;
        }
        false
    }

    async fn send(
        &mut self,
        kind: OpKind,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (Outcome, Value) {
        let instance = self.next_instance % self.bases.len();
        self.next_instance += 1;
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.bases[instance]))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let started = Instant::now();
        let (outcome, json) = match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                let json = serde_json::from_str(&text).unwrap_or(Value::Null);
                let excerpt: String = text.chars().take(200).collect();
                (Outcome::Status(status, excerpt), json)
            }
            Err(e) => (Outcome::Transport(e.to_string()), Value::Null),
        };
        if outcome.is_ok() {
            if let Ok(mut m) = self.last_ok.lock() {
                m.insert(self.user.clone(), started);
            }
        }
        self.ledger.ops.push(Op {
            user: self.user.clone(),
            kind,
            instance,
            started,
            took: started.elapsed(),
            outcome: outcome.clone(),
        });
        (outcome, json)
    }
}

/// After a load run (and whatever fault it met), once the deployment is
/// whole again: every acknowledged thread and message is there (acknowledged
/// deletes are gone), every thread has all its initial messages or does not
/// exist, every `message_count` equals the thread's listed messages, and,
/// in the database (`direct_urls`: every node, never through a pooler), the
/// stored counts are exact and no session stays `idle in transaction`.
/// Panics with what is wrong.
pub async fn check_invariants(
    base: &str,
    secret: &Secret,
    ledger: &Ledger,
    direct_urls: &[String],
) {
    let violations = invariant_violations(base, secret, ledger, direct_urls).await;
    assert!(
        violations.is_empty(),
        "invariants violated after the load ({}):\n{}",
        ledger.summary(),
        violations.join("\n")
    );
}

/// What [`check_invariants`] asserts, as a list of violations (empty when
/// all hold).
pub async fn invariant_violations(
    base: &str,
    secret: &Secret,
    ledger: &Ledger,
    direct_urls: &[String],
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let get = |path: String, token: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            assert_eq!(status, 200, "GET {url} after recovery: {text}");
            serde_json::from_str::<Value>(&text).expect("JSON")
        }
    };
    let list_all = |path: String, token: String| {
        let get = &get;
        async move {
            let mut out: Vec<Value> = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..10_000 {
                let mut url = format!("{path}?limit=100&order=asc");
                if let Some(a) = &after {
                    url.push_str(&format!("&after={a}"));
                }
                let page = get(url, token.clone()).await;
                out.extend(page["data"].as_array().expect("data").iter().cloned());
                if !page["has_more"].as_bool().expect("has_more") {
                    return out;
                }
                after = Some(page["last_id"].as_str().expect("last_id").to_owned());
            }
            panic!("paging {path} did not end");
        }
    };

    let mut violations: Vec<String> = Vec::new();
    let users: HashSet<&String> = ledger
        .threads
        .iter()
        .map(|t| &t.owner)
        .chain(ledger.ops.iter().map(|o| &o.user))
        .collect();
    let mut live_messages: HashSet<String> = HashSet::new();
    let mut live_threads: HashSet<String> = HashSet::new();
    for user in users {
        let token = secret.token(user);
        for thread in list_all("/v1/threads".to_owned(), token.clone()).await {
            let tid = thread["id"].as_str().expect("id").to_owned();
            let fresh = get(format!("/v1/threads/{tid}"), token.clone()).await;
            let messages = list_all(format!("/v1/threads/{tid}/messages"), token.clone()).await;
            let count = fresh["message_count"].as_u64().unwrap_or(u64::MAX);
            if count != messages.len() as u64 {
                violations.push(format!(
                    "thread {tid}: message_count {count}, {} messages listed",
                    messages.len()
                ));
            }
            let nonce = thread["metadata"]["nonce"].as_str().unwrap_or("");
            let initial: usize = thread["metadata"]["initial"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let prefix = format!("init {nonce} ");
            let initial_found = messages
                .iter()
                .filter(|m| {
                    m["content"][0]["text"]["value"]
                        .as_str()
                        .is_some_and(|t| t.starts_with(&prefix))
                })
                .count();
            if initial_found != initial {
                violations.push(format!(
                    "thread {tid} half-written: {initial_found} of its {initial} initial messages"
                ));
            }
            live_messages.extend(
                messages
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned)),
            );
            live_threads.insert(tid);
        }
    }
    for t in &ledger.threads {
        if !live_threads.contains(&t.id) {
            violations.push(format!(
                "acknowledged thread {} of {} is missing",
                t.id, t.owner
            ));
        }
    }
    for (owner, thread, id) in &ledger.messages {
        let deleted = ledger.deleted.contains(id);
        let unknown = ledger.maybe_deleted.contains(id);
        let present = live_messages.contains(id);
        if deleted && present {
            violations.push(format!(
                "message {id} of {owner} is listed after its acknowledged delete"
            ));
        }
        if !deleted && !unknown && !present {
            violations.push(format!(
                "acknowledged message {id} of {owner} in {thread} is missing"
            ));
        }
    }
    violations.extend(database_violations(direct_urls).await);
    violations
}

/// In the database: stored counts that differ from the live messages, and
/// sessions still `idle in transaction` (waited for, bounded, since a
/// server notices a vanished client a moment later).
async fn database_violations(direct_urls: &[String]) -> Vec<String> {
    use sqlx::Connection;
    let mut out = Vec::new();
    let Some(first) = direct_urls.first() else {
        return out;
    };
    let mut conn = sqlx::PgConnection::connect(first).await.expect("inspect");
    let wrong: Vec<String> = sqlx::query_scalar(
        "SELECT t.id || ': stored count ' || t.message_count || ', live ' || coalesce(m.n, 0) \
         FROM threads t LEFT JOIN ( \
             SELECT owner, thread_id, count(*) AS n FROM messages \
             WHERE deleted_at IS NULL GROUP BY owner, thread_id \
         ) m ON m.owner = t.owner AND m.thread_id = t.id \
         WHERE t.deleted_at IS NULL AND t.message_count <> coalesce(m.n, 0)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("count check");
    let _ = conn.close().await;
    out.extend(wrong.into_iter().map(|w| format!("thread {w}")));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut idle = Vec::new();
        for url in direct_urls {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("inspect");
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_activity");
            let _ = conn.close().await;
            if n > 0 {
                idle.push(format!("{n} sessions idle in transaction on {url}"));
            }
        }
        if idle.is_empty() {
            return out;
        }
        if Instant::now() > deadline {
            out.extend(idle);
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
