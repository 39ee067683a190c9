//! The `weft` binary itself: `serve` with the documented start-up log, a
//! generated secret that `weft token` reuses and that is never logged,
//! `migrate`, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A `weft serve` child process and the JSON log lines it printed so far.
struct Served {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Served {
    fn start(dir: &std::path::Path, envs: &[(&str, String)]) -> (Served, String) {
        let mut cmd = Command::new(WEFT);
        cmd.current_dir(dir)
            .arg("serve")
            .env_remove("WEFT_JWT_SECRET")
            .env_remove("WEFT_DATABASE_URL")
            .env_remove("WEFT_TITLE_MODEL_URL")
            .env_remove("WEFT_TITLE_MODEL")
            .env_remove("WEFT_TITLE_API_KEY")
            .env_remove("WEFT_TITLE_API_KEY_FILE")
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
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Served {
            child,
            lines: rx,
            log: Vec::new(),
        };
        let line = served.wait_for("weft is serving");
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        let addr = v["address"].as_str().expect("address field").to_owned();
        (served, format!("http://{addr}"))
    }

    /// Waits (bounded) for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line with {needle:?}; log so far:\n{}",
            self.log.join("\n")
        );
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "weft exits 0 on SIGTERM, got {status}");
                break;
            }
            assert!(Instant::now() < deadline, "weft did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        std::mem::take(&mut self.log)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Only if a test failed half-way: never leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(dir: &std::path::Path, envs: &[(&str, String)], user: &str) -> String {
    let mut cmd = Command::new(WEFT);
    cmd.current_dir(dir)
        .args(["token", "--user", user, "--ttl", "1h"])
        .env_remove("WEFT_JWT_SECRET")
        .env_remove("WEFT_DATABASE_URL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("weft token runs");
    assert!(
        out.status.success(),
        "weft token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// With no configuration at all, `weft` serves SQLite from ./weft.db, keeps a
/// generated 0600 secret beside it, never logs it, and `weft token` mints a
/// token the server accepts; SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_zero_configuration_and_mints_accepted_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (served, base) = Served::start(dir.path(), &[]);
    let secret_file = dir.path().join("weft.db.jwt-secret");
    let secret = std::fs::read_to_string(&secret_file).expect("secret file beside the database");
    assert!(secret.trim().len() >= 64, "a strong secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let started = served.log.join("\n");
    assert!(started.contains("SQLite at weft.db"), "{started}");
    assert!(started.contains("weft token --user <USER_ID>"), "{started}");

    let tok = token(dir.path(), &[], "alice");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let log = served.terminate().join("\n");
    assert!(!log.contains(secret.trim()), "the secret is never logged");
    assert!(log.contains("weft stopped"), "{log}");
    // The data survives a restart with the same secret.
    let (again, base) = Served::start(dir.path(), &[]);
    let r = client
        .get(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    again.terminate();
}

/// On PostgreSQL the start-up log masks the password, and `weft migrate` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_masks_the_postgres_password_in_its_log() {
    let url = weft_testkit::PgHarness::fresh_database_url()
        .await
        .expect("a test database");
    // The harness server trusts local connections, so a password is accepted and ignored.
    let with_password = url.replacen("://postgres@", "://postgres:hunter2@", 1);
    assert!(
        with_password.contains("hunter2"),
        "harness URL shape changed: {url}"
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = [("WEFT_DATABASE_URL", with_password.clone())];
    let status = Command::new(WEFT)
        .current_dir(dir.path())
        .arg("migrate")
        .env("WEFT_DATABASE_URL", &with_password)
        .status()
        .expect("weft migrate runs");
    assert!(status.success());
    let (served, base) = Served::start(dir.path(), &envs);
    let tok = token(dir.path(), &envs, "alice");
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = served.terminate().join("\n");
    assert!(
        !log.contains("hunter2"),
        "password leaked into the log:\n{log}"
    );
    assert!(log.contains("postgres:***@"), "{log}");
    assert!(
        dir.path().join("weft.jwt-secret").exists(),
        "PostgreSQL keeps the secret in the working directory"
    );
}

/// `weft serve` configured only by the documented environment names threads
/// with the model: the cleaned answer is the title, the key from
/// `WEFT_TITLE_API_KEY_FILE` reaches the endpoint and never the log, a
/// failing model gives the derived title with a warning carrying the
/// request id, and `/metrics` counts both outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_names_threads_with_a_model_configured_by_environment() {
    use crate::model_server::{ModelServer, Reply};
    const KEY: &str = "sk-e2e-key-that-must-never-be-logged";
    let model = ModelServer::start().await;
    model.script([
        Reply::Answer("  \"GPU bill review\"  \n".to_owned()),
        Reply::Status(500, "model crashed".to_owned()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("title-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let (mut served, base) = Served::start(
        dir.path(),
        &[
            ("WEFT_TITLE_MODEL_URL", model.base_url()),
            ("WEFT_TITLE_MODEL", "test-model".to_owned()),
            ("WEFT_TITLE_API_KEY_FILE", key_file.display().to_string()),
            ("WEFT_TITLE_TIMEOUT_MS", "10000".to_owned()),
        ],
    );
    assert!(
        served
            .log
            .join("\n")
            .contains("auto_rename asks a language model"),
        "{}",
        served.log.join("\n")
    );
    let tok = token(dir.path(), &[], "alice");
    let client = reqwest::Client::new();
    let message = "Why did our GPU bill go up?";
    let thread: Value = client
        .post(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .json(&json!({"messages": [{"role": "user", "content": message}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rename = format!(
        "{base}/v1/threads/{}/auto_rename",
        thread["id"].as_str().unwrap()
    );

    let named: Value = client
        .post(&rename)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(named["title"], "GPU bill review");
    let seen = model.seen();
    assert_eq!(seen[0].body["model"], "test-model");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen[0].turn("user"), message);

    let failed = client
        .post(&rename)
        .bearer_auth(&tok)
        .header("x-request-id", "rename-with-a-broken-model")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status().as_u16(), 200);
    let failed: Value = failed.json().await.unwrap();
    assert_eq!(failed["title"], message, "the derived title");
    let warning = served.wait_for("using the derived title");
    let warning: Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["request_id"], "rename-with-a-broken-model");
    assert!(
        warning["error"].as_str().unwrap().contains("500"),
        "{warning}"
    );

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "weft_title_generations_total{outcome=\"ok\"} 1",
        "weft_title_generations_total{outcome=\"error\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let log = served.terminate().join("\n");
    assert!(
        !log.contains(KEY),
        "the API key leaked into the log:\n{log}"
    );
}
