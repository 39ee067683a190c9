//! The real `weft` binary as a child process, for the tests that must see
//! what a user or an operator sees: answers, resident memory and CPU time
//! (from `/proc/<pid>`), the log, the exit after SIGTERM. And the canary:
//! a well-behaved client that keeps asking while an attack runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_domain::UserId;
use weft_http::auth::{JwtSecret, TokenKeys};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The secret every spawned server signs with (tests mint with it).
pub const SECRET: &str = "edge-tests-secret-0123456789abcdef0123456789";

/// A running `weft serve`.
pub struct Weft {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every log line read so far.
    pub log: Vec<String>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The listen address.
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// How to start it.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra `serve` flags.
    pub args: Vec<&'a str>,
    /// Extra environment.
    pub envs: Vec<(&'a str, String)>,
    /// Open-file limits (soft, hard) to start under.
    pub nofile: Option<(u64, u64)>,
    /// Log format (`json` unless set).
    pub log_format: Option<&'a str>,
    /// `WEFT_LOG` (`info` unless set).
    pub log: Option<&'a str>,
}

impl Weft {
    /// Starts `weft serve` on 127.0.0.1:0 over a fresh SQLite database and
    /// waits (bounded) for "weft is serving".
    pub fn start(opts: Options<'_>) -> Weft {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = match opts.nofile {
            Some((soft, hard)) => {
                // The limits are set in a shell that then becomes weft: the
                // hard one is what weft itself cannot raise past.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" serve \"$@\""
                    ))
                    .arg(WEFT)
                    .args(&opts.args);
                c
            }
            None => {
                let mut c = Command::new(WEFT);
                c.arg("serve").args(&opts.args);
                c
            }
        };
        cmd.current_dir(dir.path())
            .env_remove("WEFT_DATABASE_URL")
            .env("WEFT_JWT_SECRET", SECRET)
            .env("WEFT_BIND", "127.0.0.1:0")
            .env("WEFT_LOG_FORMAT", opts.log_format.unwrap_or("json"))
            .env("WEFT_LOG", opts.log.unwrap_or("info"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &opts.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("weft starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut weft = Weft {
            child,
            lines: rx,
            log: Vec::new(),
            base: String::new(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            _dir: dir,
        };
        let line = weft.wait_for_log("weft is serving");
        let addr = match serde_json::from_str::<Value>(&line) {
            Ok(v) => v["address"].as_str().expect("address field").to_owned(),
            Err(_) => line
                .split("http://")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .expect("address in the text log")
                .to_owned(),
        };
        weft.addr = addr.parse().expect("socket address");
        weft.base = format!("http://{addr}");
        weft
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token for `user`, signed with [`SECRET`].
    pub fn token(&self, user: &str) -> String {
        TokenKeys::new(&JwtSecret::new(SECRET.as_bytes().to_vec()).expect("secret"))
            .mint(
                &UserId::parse(user).expect("user"),
                Duration::from_secs(3600),
            )
            .expect("mint")
    }

    /// Resident memory now, in MiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") / 1024.0
    }

    fn status_kib(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a kB figure")
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("/proc/<pid>/stat");
        // Fields after the ")" that closes the command name; utime and
        // stime are the 14th and 15th fields, in USER_HZ (100 on Linux).
        let rest = stat.rsplit_once(')').expect("stat format").1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// The soft and hard open-file limits of the child (/proc/<pid>/limits).
    pub fn open_file_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .expect("/proc/<pid>/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("open files line");
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (nums[0], nums[1])
    }

    /// Open file descriptors of the child.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Takes the log lines printed so far.
    pub fn read_log(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }

    /// Waits (bounded: 60 s) for a log line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_log();
                panic!(
                    "weft exited ({status}) before logging {needle:?}:\n{}",
                    self.log.join("\n")
                );
            }
        }
        panic!("no log line with {needle:?}:\n{}", self.log.join("\n"));
    }

    /// SIGTERM; waits (bounded: 60 s) for the exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let sent = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM")
            .success();
        assert!(ok, "SIGTERM delivered");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "weft exits 0 on SIGTERM, got {status}");
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(60),
                "weft did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = sent.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        self.read_log();
        took
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the canary saw.
#[derive(Debug, Default, Clone)]
pub struct CanaryReport {
    pub answered: u32,
    pub failed: Vec<String>,
}

/// A client sending `GET /v1/threads` every 100 ms over one keep-alive
/// connection, each request with a generous 10 s timeout.
pub struct Canary {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<CanaryReport>,
}

impl Canary {
    /// Starts asking `base` with `token`; the first answer is awaited so the
    /// connection exists before any attack starts.
    pub async fn start(base: &str, token: &str) -> Canary {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("{base}/v1/threads");
        let first = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("canary's first request");
        assert_eq!(first.status().as_u16(), 200);
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            let token = token.to_owned();
            async move {
                let mut report = CanaryReport::default();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            report.answered += 1;
                        }
                        Ok(r) => report.failed.push(format!("status {}", r.status())),
                        Err(e) => report.failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                report
            }
        });
        Canary { stop, task }
    }

    /// Stops it and asserts it got every answer (each within its 10 s timeout).
    pub async fn assert_served(self, during: &str) -> CanaryReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.task.await.expect("canary task");
        assert!(
            report.failed.is_empty() && report.answered > 0,
            "during {during} the canary was not served: {report:?}"
        );
        report
    }
}
