//! A bounded load generator for a running `weft serve` (a benchmark tool,
//! not a test: it prints numbers and asserts nothing about time).
//!
//! ```sh
//! cargo run --release -p weft-http --example loadgen -- \
//!     --base-url http://127.0.0.1:8080 --token "$TOKEN" \
//!     --mode create --concurrency 8 --requests 3000
//! ```
//!
//! Setup (not timed): one thread per worker (or `--threads K` ≤ workers,
//! shared round-robin: `--threads 1` makes every request contend on one thread
//! row), then a warm-up that opens the HTTP and database connections.
//! Timed: exactly `--requests` requests spread over `--concurrency`
//! workers, each worker sending its next request when the previous
//! answered. Modes: `create` (POST a small text message), `list` (GET the
//! thread's newest 20 messages), `get` (GET the thread), `health` (GET
//! `/healthz`: the HTTP floor, no token check and no database).
//!
//! Everything is bounded: at most 256 workers, 100,000 requests, and a
//! wall-clock cap (`--max-secs`, at most 600) on the whole run (setup
//! included); a run cut by the cap prints `"timed_out":true` without
//! numbers and exits with status 1, as does a run with failed requests.
//!
//! Output: one JSON line on stdout with throughput and latency
//! percentiles (client-side, from sending the request to reading the
//! whole response body).

// An example's panic is its error report: a failed setup step stops the
// run loudly. Its one line of stdout is its interface.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

const MAX_CONCURRENCY: usize = 256;
const MAX_REQUESTS: usize = 100_000;
const MAX_SECS: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// POST /v1/threads/{id}/messages with a small text message.
    Create,
    /// GET /v1/threads/{id}/messages?limit=20 (a thread holding 20+ messages).
    List,
    /// GET /v1/threads/{id}.
    Get,
    /// GET /healthz: the HTTP floor (no token check, no database).
    Health,
}

/// Bounded load against a running Weft.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (loopback expected).
    #[arg(long)]
    base_url: String,
    /// Bearer token; repeat to spread workers over several users (worker i uses token i mod n).
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// What each request does.
    #[arg(long, value_enum, default_value = "create")]
    mode: Mode,
    /// Concurrent workers (1–256).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Timed requests in all (1–100,000).
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Threads to spread the requests over (default: one per worker).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed warm-up requests (default: 4 per worker, at least 50).
    #[arg(long)]
    warmup: Option<usize>,
    /// Hard cap on the whole run, in seconds (at most 600).
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// A free-form label copied into the output line.
    #[arg(long, default_value = "")]
    label: String,
}

/// One worker's view: which thread, with which token.
#[derive(Clone)]
struct Target {
    token: String,
    thread_id: String,
}

struct Shared {
    client: reqwest::Client,
    base: String,
    mode: Mode,
    targets: Vec<Target>,
    body: Value,
}

impl Shared {
    /// Sends one request of the run's mode for `target`; returns its status
    /// (0 for a transport error).
    async fn one(&self, target: &Target) -> u16 {
        let t = &target.thread_id;
        let req = match self.mode {
            Mode::Create => self
                .client
                .post(format!("{}/v1/threads/{t}/messages", self.base))
                .json(&self.body),
            Mode::List => self
                .client
                .get(format!("{}/v1/threads/{t}/messages?limit=20", self.base)),
            Mode::Get => self.client.get(format!("{}/v1/threads/{t}", self.base)),
            Mode::Health => self.client.get(format!("{}/healthz", self.base)),
        };
        match req.bearer_auth(&target.token).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the whole body: the response is not served until then.
                match resp.bytes().await {
                    Ok(_) => status,
                    Err(_) => 0,
                }
            }
            Err(_) => 0,
        }
    }
}

async fn create_thread(client: &reqwest::Client, base: &str, token: &str) -> String {
    let resp = client
        .post(format!("{base}/v1/threads"))
        .bearer_auth(token)
        .json(&json!({"metadata": {"bench": "loadgen"}}))
        .send()
        .await
        .expect("POST /v1/threads reached the server");
    let status = resp.status();
    let body: Value = resp.json().await.expect("a JSON thread object");
    assert!(status.is_success(), "creating a thread: {status} {body}");
    body["id"]
        .as_str()
        .expect("the thread object has an id")
        .to_owned()
}

/// Runs `count` requests over `concurrency` workers; returns the latencies
/// of the successful ones, the failed statuses, and the wall time.
async fn run(
    shared: Arc<Shared>,
    concurrency: usize,
    count: usize,
) -> (Vec<Duration>, Vec<u16>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (shared, next, failures) = (shared.clone(), next.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let target = shared.targets[w % shared.targets.len()].clone();
            let mut lat = Vec::with_capacity(count / concurrency + 1);
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let t0 = Instant::now();
                let status = shared.one(&target).await;
                let took = t0.elapsed();
                if (200..300).contains(&status) {
                    lat.push(took);
                } else {
                    failures.lock().expect("failures lock").push(status);
                }
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(count);
    for w in workers {
        all.extend(w.await.expect("worker task"));
    }
    let took = started.elapsed();
    let failed = std::mem::take(&mut *failures.lock().expect("failures lock"));
    (all, failed, took)
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        (1..=MAX_CONCURRENCY).contains(&args.concurrency),
        "--concurrency must be 1..={MAX_CONCURRENCY}"
    );
    assert!(
        (1..=MAX_REQUESTS).contains(&args.requests),
        "--requests must be 1..={MAX_REQUESTS}"
    );
    assert!(
        (1..=MAX_SECS).contains(&args.max_secs),
        "--max-secs must be 1..={MAX_SECS}"
    );
    // More threads than workers would leave some idle.
    let threads = args
        .threads
        .unwrap_or(args.concurrency)
        .clamp(1, args.concurrency);
    let warmup = args
        .warmup
        .unwrap_or((4 * args.concurrency).max(50))
        .min(MAX_REQUESTS);
    let base = args.base_url.trim_end_matches('/').to_owned();
    let cap = Duration::from_secs(args.max_secs);
    let deadline = Instant::now() + cap;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client");

    let body = json!({"role": "user", "content": "How much did the GPUs cost last month?"});
    let mut targets = Vec::with_capacity(threads);
    for i in 0..threads {
        let token = args.tokens[i % args.tokens.len()].clone();
        let thread_id =
            tokio::time::timeout_at(deadline.into(), create_thread(&client, &base, &token))
                .await
                .expect("setup finished within --max-secs");
        targets.push(Target { token, thread_id });
    }
    // Worker w uses target w mod threads (its token is the one that owns it).
    let shared = Arc::new(Shared {
        client,
        base,
        mode: args.mode,
        targets: targets.clone(),
        body: body.clone(),
    });

    let whole = async {
        if args.mode == Mode::List {
            // Fill every thread past one page, untimed.
            let filler = Shared {
                mode: Mode::Create,
                ..clone_shared(&shared)
            };
            for target in &filler.targets {
                for _ in 0..21 {
                    let status = filler.one(target).await;
                    assert!((200..300).contains(&status), "filling a thread: {status}");
                }
            }
        }
        let (_, warm_failed, _) = run(shared.clone(), args.concurrency, warmup).await;
        assert!(
            warm_failed.is_empty(),
            "warm-up requests failed with statuses {:?}",
            &warm_failed[..warm_failed.len().min(10)]
        );
        run(shared.clone(), args.concurrency, args.requests).await
    };
    let (mut lat, failed, took, timed_out) =
        match tokio::time::timeout_at(deadline.into(), whole).await {
            Ok((lat, failed, took)) => (lat, failed, took, false),
            Err(_) => (Vec::new(), Vec::new(), cap, true),
        };
    lat.sort_unstable();
    let ok = lat.len();
    let mut statuses: Vec<u16> = failed.clone();
    statuses.sort_unstable();
    statuses.dedup();
    let secs = took.as_secs_f64();
    let line = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
        "threads": threads,
        "users": args.tokens.len().min(threads),
        "requests": args.requests,
        "warmup": warmup,
        "ok": ok,
        "errors": failed.len(),
        "error_statuses": statuses,
        "secs": round3(secs),
        "rps": round3(ok as f64 / secs),
        "mean_ms": round3(if ok == 0 { f64::NAN } else { lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / ok as f64 }),
        "p50_ms": round3(percentile(&lat, 50.0)),
        "p95_ms": round3(percentile(&lat, 95.0)),
        "p99_ms": round3(percentile(&lat, 99.0)),
        "max_ms": round3(lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)),
        "timed_out": timed_out,
    });
    println!("{line}");
    if timed_out || !failed.is_empty() {
        std::process::exit(1);
    }
}

fn clone_shared(s: &Shared) -> Shared {
    Shared {
        client: s.client.clone(),
        base: s.base.clone(),
        mode: s.mode,
        targets: s.targets.clone(),
        body: s.body.clone(),
    }
}
