//! A bounded load generator for a running `weft serve` (a benchmark tool,
//! not a test: it prints numbers and asserts nothing about time).
//!
//! ```sh
//! cargo run --release -p weft-server --example loadgen -- \
//!     --base-url http://127.0.0.1:8080 --targets targets.tsv \
//!     --mode mixed --concurrency 64 --duration-secs 20
//! ```
//!
//! Where the requests go:
//! - `--targets FILE`: data loaded beforehand (by SQL or by `--mode
//!   populate`). Each line is `TOKEN<TAB>THREAD_ID`, a thread and a token of
//!   its owner. Every request picks a line at random (a random user's own
//!   thread), except `delete`, which takes the lines in order, each once.
//! - `--token T` (repeatable) without `--targets`: one thread per worker
//!   is created first (untimed), worker i using token i mod n; `--threads K`
//!   shares K threads round-robin (`--threads 1`: one hot row). A `list`
//!   run then fills each thread past one page, untimed.
//!
//! Modes: `create` (POST a small text message), `list` (GET a page of the
//! thread's messages, `--limit`, `--order`), `get` (GET the thread),
//! `threads` (GET a page of the owner's threads), `rename` (POST
//! `auto_rename`), `delete` (DELETE the thread), `mixed` (each request
//! create, list or get at random, weighted by `--mix`, 70/20/10 by
//! default), `health` (GET `/healthz`: the HTTP floor, no token check and
//! no database), and `populate` (create `--users` × `--threads-per-user`
//! threads of `--messages-per-thread` messages through the API, one token
//! per user from `--token`, and write the targets file `--targets-out`).
//!
//! A run: an untimed warm-up (`--warmup` requests, default 4 per worker and
//! at least 50; `delete` warms up with `get`, so it deletes nothing
//! twice), then the timed part: `--duration-secs` of load, or exactly
//! `--requests` requests, whichever ends first, each of `--concurrency`
//! workers sending its next request when the previous one answered.
//!
//! Everything is bounded: at most 256 workers, 10,000,000 requests, and a
//! wall-clock cap (`--max-secs`, at most 900) on the whole run (setup
//! included); a run cut by the cap prints `"timed_out":true` without
//! numbers and exits with status 1, as does a run with failed requests.
//!
//! Output: one JSON line on stdout with throughput, latency percentiles
//! (client-side, from sending the request to reading the whole response
//! body), per-kind counts and latencies for `mixed`, and the CPU time this
//! process used during the timed part (`client_cpu_ms`, from
//! `/proc/self/stat`), so a harness can split CPU per request between the
//! client, the server and the database.

// An example's panic is its error report: a failed setup step stops the
// run loudly. Its one line of stdout is its interface.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::http::{self, Method};
use serde_json::{json, Value};

const MAX_CONCURRENCY: usize = 256;
const MAX_REQUESTS: usize = 10_000_000;
const MAX_SECS: u64 = 900;
const MAX_POPULATE: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// POST /v1/threads/{id}/messages with a small text message.
    Create,
    /// GET /v1/threads/{id}/messages?limit=L&order=O.
    List,
    /// GET /v1/threads/{id}.
    Get,
    /// GET /v1/threads?limit=L&order=O (the owner's threads).
    Threads,
    /// POST /v1/threads/{id}/auto_rename.
    Rename,
    /// DELETE /v1/threads/{id} (each target once, in file order).
    Delete,
    /// create / list / get at random, weighted by --mix.
    Mixed,
    /// GET /healthz: the HTTP floor (no token check, no database).
    Health,
    /// Create users × threads × messages through the API; write --targets-out.
    Populate,
}

/// A single request kind (what `mixed` draws from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Create,
    List,
    Get,
    Threads,
    Rename,
    Delete,
    Health,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::List => "list",
            Kind::Get => "get",
            Kind::Threads => "threads",
            Kind::Rename => "rename",
            Kind::Delete => "delete",
            Kind::Health => "health",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListOrder {
    Asc,
    Desc,
}

/// Bounded load against a running Weft.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (loopback expected).
    #[arg(long)]
    base_url: String,
    /// Targets file: `TOKEN<TAB>THREAD_ID` per line (loaded data).
    #[arg(long)]
    targets: Option<std::path::PathBuf>,
    /// Bearer token (repeatable): without --targets, threads are created
    /// for these users; with --mode populate, one user per token.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// A file of bearer tokens, one per line (added to --token).
    #[arg(long)]
    tokens_file: Option<std::path::PathBuf>,
    /// What each request does.
    #[arg(long, value_enum, default_value = "create")]
    mode: Mode,
    /// Weights of create/list/get in `mixed`, e.g. 70/20/10.
    #[arg(long, default_value = "70/20/10")]
    mix: String,
    /// Page size of `list` and `threads` (1–100).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Order of `list` and `threads`.
    #[arg(long, value_enum, default_value = "desc")]
    order: ListOrder,
    /// Concurrent workers (1–256).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Timed requests at most (1–10,000,000); the run ends earlier when
    /// --duration-secs is reached.
    #[arg(long)]
    requests: Option<usize>,
    /// Length of the timed part, in seconds (default: until --requests).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Without --targets: threads to spread the requests over (default: one per worker).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed warm-up requests (default: 4 per worker, at least 50).
    #[arg(long)]
    warmup: Option<usize>,
    /// Hard cap on the whole run, in seconds (at most 900).
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// A free-form label copied into the output line.
    #[arg(long, default_value = "")]
    label: String,
    /// populate: users (one per token, the first N tokens).
    #[arg(long, default_value_t = 1)]
    users: usize,
    /// populate: threads per user.
    #[arg(long, default_value_t = 10)]
    threads_per_user: usize,
    /// populate: messages per thread.
    #[arg(long, default_value_t = 20)]
    messages_per_thread: usize,
    /// populate: where to write the targets file.
    #[arg(long)]
    targets_out: Option<std::path::PathBuf>,
}

/// A thread and a token of its owner.
#[derive(Clone)]
struct Target {
    token: String,
    thread_id: String,
}

struct Shared {
    /// Setup only (creating threads, populating); the measured requests
    /// go over [`Conn`]s.
    client: reqwest::Client,
    base: String,
    /// `host:port` of `base` (plain http only).
    authority: String,
    /// The path of `base` (empty, or `/something` without a trailing `/`),
    /// put before every measured request's path.
    prefix: String,
    /// One connection per worker index, reused across runs.
    conns: Vec<tokio::sync::Mutex<Conn>>,
    body_bytes: Bytes,
    targets: Vec<Target>,
    body: Value,
    limit: u32,
    order: &'static str,
}

impl Shared {
    /// Sends one request of `kind` for `target` over `conn` (opened, or
    /// opened again, as needed); returns its status (0 for a transport
    /// error or no answer within 30 s).
    async fn one(&self, conn: &mut Conn, kind: Kind, target: &Target) -> u16 {
        let (p, t, l, o) = (&self.prefix, &target.thread_id, self.limit, self.order);
        let (method, path, body) = match kind {
            Kind::Create => (
                Method::POST,
                format!("{p}/v1/threads/{t}/messages"),
                Some(self.body_bytes.clone()),
            ),
            Kind::List => (
                Method::GET,
                format!("{p}/v1/threads/{t}/messages?limit={l}&order={o}"),
                None,
            ),
            Kind::Get => (Method::GET, format!("{p}/v1/threads/{t}"), None),
            Kind::Threads => (
                Method::GET,
                format!("{p}/v1/threads?limit={l}&order={o}"),
                None,
            ),
            Kind::Rename => (
                Method::POST,
                format!("{p}/v1/threads/{t}/auto_rename"),
                Some(Bytes::new()),
            ),
            Kind::Delete => (Method::DELETE, format!("{p}/v1/threads/{t}"), None),
            Kind::Health => (Method::GET, format!("{p}/healthz"), None),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        if kind != Kind::Health {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", target.token),
            );
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .expect("a well-formed request");
        match tokio::time::timeout(Duration::from_secs(30), conn.send(&self.authority, req)).await {
            Ok(Some(status)) => status,
            _ => {
                conn.tx = None;
                0
            }
        }
    }
}

/// One worker's HTTP/1.1 connection, kept across requests (and from the
/// warm-up to the timed part): hyper's client connection without a pool,
/// so the client spends as little CPU per request as it can (it shares
/// the machine with the server and the database, as pgbench's does).
#[derive(Default)]
struct Conn {
    tx: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// Sends `req`, reads the whole response body; the status, or None on
    /// a transport error (the connection is then dropped, and the next
    /// request opens a new one).
    async fn send(&mut self, authority: &str, req: http::Request<Full<Bytes>>) -> Option<u16> {
        if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
            let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (tx, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            self.tx = Some(tx);
        }
        let tx = self.tx.as_mut()?;
        if tx.ready().await.is_err() {
            self.tx = None;
            return None;
        }
        let resp = match tx.send_request(req).await {
            Ok(resp) => resp,
            Err(_) => {
                self.tx = None;
                return None;
            }
        };
        let status = resp.status().as_u16();
        // Read the whole body: the response is not served until then.
        match resp.into_body().collect().await {
            Ok(_) => Some(status),
            Err(_) => {
                self.tx = None;
                None
            }
        }
    }
}

/// How a run picks each request's kind and target.
#[derive(Clone, Copy)]
enum Plan {
    /// One kind, a random target each time.
    Random(Kind),
    /// Targets in order (request n → target n), each once.
    Sequential(Kind),
    /// create/list/get by cumulative weights (out of the last one).
    Mixed([u32; 3]),
    /// Worker w always uses target w mod n (threads created per worker).
    PerWorker(Kind),
}

impl Plan {
    fn pick(self, worker: usize, n: usize, targets: usize) -> (Kind, usize) {
        match self {
            Plan::Random(k) => (k, fastrand::usize(..targets)),
            Plan::Sequential(k) => (k, n % targets),
            Plan::PerWorker(k) => (k, worker % targets),
            Plan::Mixed([c, l, total]) => {
                let r = fastrand::u32(..total);
                let kind = if r < c {
                    Kind::Create
                } else if r < l {
                    Kind::List
                } else {
                    Kind::Get
                };
                (kind, fastrand::usize(..targets))
            }
        }
    }
}

/// The timed run's plan and the warm-up's: `mixed` weighs kinds by
/// `mix`; `delete` deletes each target once in order and warms up with
/// gets (so it deletes nothing twice); any other mode sends `kind`, each
/// request's target chosen by `pick` (random targets, or one per worker).
fn plans(mode: Mode, kind: Kind, mix: &str, pick: fn(Kind) -> Plan) -> (Plan, Plan) {
    match mode {
        Mode::Mixed => {
            let p = Plan::Mixed(parse_mix(mix));
            (p, p)
        }
        Mode::Delete => (Plan::Sequential(Kind::Delete), pick(Kind::Get)),
        _ => (pick(kind), pick(kind)),
    }
}

/// What one run measured.
struct Outcome {
    /// (kind, latency) of each successful request.
    lat: Vec<(Kind, Duration)>,
    /// Statuses of the failed ones (0: transport error).
    failed: Vec<u16>,
    took: Duration,
}

/// Runs requests over `concurrency` workers until `count` were sent or
/// `until` passed.
async fn run(
    shared: Arc<Shared>,
    plan: Plan,
    concurrency: usize,
    count: usize,
    until: Option<Instant>,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (shared, next, failures) = (shared.clone(), next.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let (kind, i) = plan.pick(w, n, shared.targets.len());
                let mut conn = shared.conns[w].lock().await;
                let t0 = Instant::now();
                let status = shared.one(&mut conn, kind, &shared.targets[i]).await;
                drop(conn);
                let took = t0.elapsed();
                if (200..300).contains(&status) {
                    lat.push((kind, took));
                } else {
                    failures.lock().expect("failures lock").push(status);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.expect("worker task"));
    }
    let took = started.elapsed();
    let failed = std::mem::take(&mut *failures.lock().expect("failures lock"));
    Outcome { lat, failed, took }
}

/// Ends a run that failed before its timed part: one JSON line naming the
/// step, its failed requests' statuses (0: transport error) or the cap,
/// and exit status 1, like a run with failed requests.
fn give_up(label: &str, step: &str, failed: &[u16], timed_out: bool) -> ! {
    let mut statuses = failed.to_vec();
    statuses.sort_unstable();
    statuses.dedup();
    let line = json!({
        "label": label,
        "failed_in": step,
        "errors": failed.len().max(1),
        "error_statuses": statuses,
        "timed_out": timed_out,
    });
    println!("{line}");
    std::process::exit(1);
}

/// Runs one setup `step` to its end within the run's cap; its value, or
/// [`give_up`] with the failed request's status or the cap.
async fn within_cap<T>(
    deadline: Instant,
    label: &str,
    step: &str,
    work: impl std::future::Future<Output = Result<T, u16>>,
) -> T {
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok(value)) => value,
        Ok(Err(status)) => give_up(label, step, &[status], false),
        Err(_) => give_up(label, step, &[], true),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latency summary of sorted durations (milliseconds).
fn summary(sorted: &[Duration], secs: f64) -> Value {
    let ok = sorted.len();
    let mean = if ok == 0 {
        f64::NAN
    } else {
        sorted.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / ok as f64
    };
    json!({
        "ok": ok,
        "rps": round3(ok as f64 / secs),
        "mean_ms": round3(mean),
        "p50_ms": round3(percentile(sorted, 50.0)),
        "p95_ms": round3(percentile(sorted, 95.0)),
        "p99_ms": round3(percentile(sorted, 99.0)),
        "max_ms": round3(sorted.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)),
    })
}

/// CPU time (user + system) this process has used, in milliseconds, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of 1/100 s: Linux's
/// USER_HZ on every architecture Weft targets). None off Linux.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

/// Creates one thread; its id, or the failed request's status (0: no
/// answer, or an answer without an id).
async fn create_thread(client: &reqwest::Client, base: &str, token: &str) -> Result<String, u16> {
    let resp = client
        .post(format!("{base}/v1/threads"))
        .bearer_auth(token)
        .json(&json!({"metadata": {"bench": "loadgen"}}))
        .send()
        .await
        .map_err(|_| 0u16)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(status.as_u16());
    }
    let body: Value = resp.json().await.map_err(|_| 0u16)?;
    body["id"].as_str().map(str::to_owned).ok_or(0)
}

fn read_targets(path: &std::path::Path) -> Vec<Target> {
    let text = std::fs::read_to_string(path).expect("the targets file is readable");
    let targets: Vec<Target> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (token, thread_id) = l
                .split_once('\t')
                .expect("each targets line is TOKEN<TAB>THREAD_ID");
            Target {
                token: token.trim().to_owned(),
                thread_id: thread_id.trim().to_owned(),
            }
        })
        .collect();
    assert!(!targets.is_empty(), "the targets file has no line");
    targets
}

fn parse_mix(mix: &str) -> [u32; 3] {
    let w: Vec<u32> = mix
        .split('/')
        .map(|x| x.trim().parse().expect("--mix is three integers: C/L/G"))
        .collect();
    assert!(
        w.len() == 3 && w.iter().sum::<u32>() > 0,
        "--mix is three integers: C/L/G"
    );
    [w[0], w[0] + w[1], w[0] + w[1] + w[2]]
}

/// `--mode populate`: users × threads × messages through the API, one
/// worker per user at most `concurrency`; returns the targets.
async fn populate(
    shared: &Shared,
    tokens: &[String],
    args: &Args,
    deadline: Instant,
) -> Vec<Target> {
    assert!(
        args.users >= 1 && args.users <= tokens.len(),
        "--users must be 1..=the number of tokens"
    );
    assert!(
        args.users * args.threads_per_user * (args.messages_per_thread + 1) <= MAX_POPULATE,
        "populate creates at most {MAX_POPULATE} objects"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<(usize, usize)> = (0..args.users)
        .flat_map(|u| (0..args.threads_per_user).map(move |t| (u, t)))
        .collect();
    let jobs = Arc::new(jobs);
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(jobs.len()).max(1) {
        let (next, jobs, out) = (next.clone(), jobs.clone(), out.clone());
        let client = shared.client.clone();
        let base = shared.base.clone();
        let body = shared.body.clone();
        let tokens = tokens.to_vec();
        let per_thread = args.messages_per_thread;
        workers.push(tokio::spawn(async move {
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(u, _)) = jobs.get(j) else { break };
                let token = tokens[u].clone();
                let thread_id = create_thread(&client, &base, &token)
                    .await
                    .unwrap_or_else(|status| panic!("creating a thread: status {status}"));
                for _ in 0..per_thread {
                    let resp = client
                        .post(format!("{base}/v1/threads/{thread_id}/messages"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .expect("POST a message reached the server");
                    let status = resp.status();
                    assert!(status.is_success(), "creating a message: {status}");
                }
                out.lock()
                    .expect("targets lock")
                    .push((j, Target { token, thread_id }));
            }
        }));
    }
    let all = async {
        for w in workers {
            w.await.expect("populate worker");
        }
    };
    tokio::time::timeout_at(deadline.into(), all)
        .await
        .expect("populate finished within --max-secs");
    let mut targets = std::mem::take(&mut *out.lock().expect("targets lock"));
    targets.sort_by_key(|(j, _)| *j);
    targets.into_iter().map(|(_, t)| t).collect()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        (1..=MAX_CONCURRENCY).contains(&args.concurrency),
        "--concurrency must be 1..={MAX_CONCURRENCY}"
    );
    let count = args.requests.unwrap_or(MAX_REQUESTS);
    assert!(
        (1..=MAX_REQUESTS).contains(&count),
        "--requests must be 1..={MAX_REQUESTS}"
    );
    assert!(
        (1..=MAX_SECS).contains(&args.max_secs),
        "--max-secs must be 1..={MAX_SECS}"
    );
    assert!(
        args.requests.is_some() || args.duration_secs.is_some() || args.mode == Mode::Populate,
        "give --requests, --duration-secs or both"
    );
    if let Some(d) = args.duration_secs {
        assert!(
            d > 0.0 && d < args.max_secs as f64,
            "--duration-secs must be above 0 and below --max-secs"
        );
    }
    assert!((1..=100).contains(&args.limit), "--limit must be 1..=100");
    let base = args.base_url.trim_end_matches('/').to_owned();
    let cap = Duration::from_secs(args.max_secs);
    let deadline = Instant::now() + cap;
    let mut tokens = args.tokens.clone();
    if let Some(path) = &args.tokens_file {
        let text = std::fs::read_to_string(path).expect("the tokens file is readable");
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client");
    let body = json!({"role": "user", "content": "How much did the GPUs cost last month?"});
    let order = match args.order {
        ListOrder::Asc => "asc",
        ListOrder::Desc => "desc",
    };
    // The measured requests' connection target and path prefix, from the
    // same --base-url reqwest uses for setup (plain http; port 80 if none).
    let rest = base
        .strip_prefix("http://")
        .expect("--base-url is a plain http:// URL");
    let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let prefix = prefix.to_owned();
    let body_bytes = Bytes::from(serde_json::to_vec(&body).expect("JSON"));
    let mut shared = Shared {
        client,
        base,
        authority,
        prefix,
        conns: (0..MAX_CONCURRENCY)
            .map(|_| tokio::sync::Mutex::default())
            .collect(),
        body_bytes,
        targets: Vec::new(),
        body,
        limit: args.limit,
        order,
    };

    if args.mode == Mode::Populate {
        let out = args
            .targets_out
            .clone()
            .expect("--mode populate needs --targets-out");
        let started = Instant::now();
        let targets = populate(&shared, &tokens, &args, deadline).await;
        let text: String = targets
            .iter()
            .map(|t| format!("{}\t{}\n", t.token, t.thread_id))
            .collect();
        std::fs::write(&out, text).expect("the targets file is writable");
        let line = json!({
            "label": args.label, "mode": "populate", "users": args.users,
            "threads": targets.len(), "messages": targets.len() * args.messages_per_thread,
            "secs": round3(started.elapsed().as_secs_f64()),
        });
        println!("{line}");
        return;
    }

    let kind = match args.mode {
        Mode::Create | Mode::Mixed => Kind::Create,
        Mode::List => Kind::List,
        Mode::Get => Kind::Get,
        Mode::Threads => Kind::Threads,
        Mode::Rename => Kind::Rename,
        Mode::Delete => Kind::Delete,
        Mode::Health => Kind::Health,
        Mode::Populate => unreachable!("handled above"),
    };
    let (plan, warm_plan) = if let Some(path) = &args.targets {
        shared.targets = read_targets(path);
        plans(args.mode, kind, &args.mix, Plan::Random)
    } else {
        assert!(
            !tokens.is_empty(),
            "give --targets, or --token to create threads"
        );
        // More threads than workers would leave some idle.
        let threads = args
            .threads
            .unwrap_or(args.concurrency)
            .clamp(1, args.concurrency);
        for i in 0..threads {
            let token = tokens[i % tokens.len()].clone();
            let thread_id = within_cap(
                deadline,
                &args.label,
                "creating the threads",
                create_thread(&shared.client, &shared.base, &token),
            )
            .await;
            shared.targets.push(Target { token, thread_id });
        }
        if matches!(args.mode, Mode::List | Mode::Mixed) {
            // Fill every thread past one page, untimed but within the cap.
            let fill = async {
                let mut conn = shared.conns[0].lock().await;
                for target in &shared.targets {
                    for _ in 0..=args.limit {
                        let status = shared.one(&mut conn, Kind::Create, target).await;
                        if !(200..300).contains(&status) {
                            return Err(status);
                        }
                    }
                }
                Ok(())
            };
            within_cap(deadline, &args.label, "filling the threads", fill).await;
        }
        plans(args.mode, kind, &args.mix, Plan::PerWorker)
    };
    if args.mode == Mode::Delete {
        assert!(
            count <= shared.targets.len(),
            "--mode delete deletes each target once: --requests ≤ targets"
        );
    }
    let warmup = args
        .warmup
        .unwrap_or((4 * args.concurrency).max(50))
        .min(MAX_REQUESTS);
    let shared = Arc::new(shared);

    let whole = async {
        if warmup > 0 {
            let warm = run(shared.clone(), warm_plan, args.concurrency, warmup, None).await;
            if !warm.failed.is_empty() {
                give_up(&args.label, "the warm-up", &warm.failed, false);
            }
        }
        let cpu0 = cpu_ms();
        let until = args
            .duration_secs
            .map(|d| Instant::now() + Duration::from_secs_f64(d));
        let out = run(shared.clone(), plan, args.concurrency, count, until).await;
        let cpu = cpu_ms().zip(cpu0).map(|(b, a)| b - a);
        (out, cpu)
    };
    let (out, cpu, timed_out) = match tokio::time::timeout_at(deadline.into(), whole).await {
        Ok((out, cpu)) => (out, cpu, false),
        Err(_) => (
            Outcome {
                lat: Vec::new(),
                failed: Vec::new(),
                took: cap,
            },
            None,
            true,
        ),
    };
    let secs = out.took.as_secs_f64();
    let mut all: Vec<Duration> = out.lat.iter().map(|(_, d)| *d).collect();
    all.sort_unstable();
    let mut per_kind: BTreeMap<Kind, Vec<Duration>> = BTreeMap::new();
    for (k, d) in &out.lat {
        per_kind.entry(*k).or_default().push(*d);
    }
    let kinds: serde_json::Map<String, Value> = per_kind
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            (k.name().to_owned(), summary(&v, secs))
        })
        .collect();
    let mut statuses: Vec<u16> = out.failed.clone();
    statuses.sort_unstable();
    statuses.dedup();
    let mut line = summary(&all, secs);
    let obj = line.as_object_mut().expect("summary is an object");
    let extra = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
        "targets": shared.targets.len(),
        "warmup": warmup,
        "errors": out.failed.len(),
        "error_statuses": statuses,
        "secs": round3(secs),
        "client_cpu_ms": cpu.map(round3),
        "kinds": kinds,
        "timed_out": timed_out,
    });
    for (k, v) in extra.as_object().expect("an object") {
        obj.insert(k.clone(), v.clone());
    }
    println!("{line}");
    if timed_out || !out.failed.is_empty() {
        std::process::exit(1);
    }
}
