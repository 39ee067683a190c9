//! The `weft` binary itself: `serve` with the documented start-up log, a
//! generated secret that `weft token` reuses and that is never logged,
//! `migrate`, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// `weft` in `dir` with none of the test runner's `WEFT_*` settings and
/// without the variables `cargo` sets for a program it runs (so the binary
/// sees itself started directly, as an installed `weft` is).
pub(crate) fn weft_in(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(WEFT);
    cmd.current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("WEFT_") || k.starts_with("CARGO") || k == "RUST_BACKTRACE" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A `weft serve` child process and the JSON log lines it printed so far.
struct Served {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Served {
    fn start(dir: &std::path::Path, envs: &[(&str, String)]) -> (Served, String) {
        let mut cmd = weft_in(dir);
        cmd.arg("serve")
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
    let mut cmd = weft_in(dir);
    cmd.args(["token", "--user", user, "--ttl", "1h"]);
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
    let db = dir.path().join("weft.db");
    assert!(
        started.contains(&format!("SQLite at {}", db.display())),
        "the absolute path is logged: {started}"
    );
    // Not on PATH and not run by cargo: the hint names the binary itself.
    let hint = format!("{WEFT} token --user <USER_ID>");
    assert!(started.contains(&hint), "{started}");

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
    let database = weft_testkit::PgHarness::fresh_database()
        .await
        .expect("a test database");
    let url = database.url().to_owned();
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

/// A finished `weft` run: exit code and stderr.
struct Ran {
    code: Option<i32>,
    stderr: String,
}

/// Runs `weft ARGS` in `dir` with `envs` (and `RUST_BACKTRACE=1`, so a
/// backtrace would show) to its end, bounded at 30 s.
fn run_to_end(dir: &std::path::Path, args: &[&str], envs: &[(&str, String)]) -> Ran {
    let mut cmd = weft_in(dir);
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("weft starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weft {args:?} {envs:?} did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Ran {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `weft token` where no server ever ran (SQLite by default, and with a
/// PostgreSQL URL) fails with one line naming the absolute path it looked
/// at and what to set — never creating a secret whose tokens the server
/// would reject; with `RUST_BACKTRACE=1` still one line, no backtrace.
#[test]
fn weft_token_never_creates_a_secret_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    for envs in [
        vec![],
        vec![(
            "WEFT_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/db".to_owned(),
        )],
    ] {
        let ran = run_to_end(dir.path(), &["token", "--user", "alice"], &envs);
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, no backtrace:\n{}", ran.stderr);
        let secret = if envs.is_empty() {
            "weft.db.jwt-secret"
        } else {
            "weft.jwt-secret"
        };
        let looked = dir.path().join(secret);
        assert!(
            lines[0].contains(&format!("no JWT secret at {}", looked.display())),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("WEFT_JWT_SECRET_FILE"), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("start the server first ({WEFT})")),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("hunter2"), "{}", lines[0]);
        assert!(
            files_in(dir.path()).is_empty(),
            "token created {:?}",
            files_in(dir.path())
        );
    }
}

/// `weft token` refuses a user id the server would refuse as a `sub` (a
/// control character), instead of printing a token that always gets 401.
#[test]
fn weft_token_refuses_a_user_id_with_a_control_character() {
    let dir = tempfile::tempdir().unwrap();
    let envs = vec![("WEFT_JWT_SECRET", "s".repeat(48))];
    let ran = run_to_end(dir.path(), &["token", "--user", "a\nb"], &envs);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("control character"), "{}", ran.stderr);
    let ok = run_to_end(dir.path(), &["token", "--user", "alice"], &envs);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
}

/// The start-up hint is a command that works where the user is: run
/// directly, the binary's own path (pasted into a shell it mints a token
/// the server accepts); run by `cargo run`, the `cargo run` form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_hint_prints_the_token_command_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let (served, base) = Served::start(dir.path(), &[]);
    let line = served
        .log
        .iter()
        .find(|l| l.contains("weft is serving"))
        .unwrap();
    let message = serde_json::from_str::<Value>(line).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let hint = message.split("get a token with: ").nth(1).expect("a hint");
    let out = Command::new("sh")
        .arg("-c")
        .arg(hint.replace("<USER_ID>", "alice"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the hint's token is accepted");
    served.terminate();

    // What `cargo run` sets for the program it runs.
    let (served, _) = Served::start(
        dir.path(),
        &[
            ("CARGO", "/usr/bin/cargo".to_owned()),
            ("CARGO_PKG_NAME", "weft-server".to_owned()),
        ],
    );
    let started = served.terminate().join("\n");
    assert!(
        started.contains("cargo run --bin weft -- token --user <USER_ID>"),
        "{started}"
    );
}

/// A start-up case: what it is, its environment, its arguments, the exit
/// code, and what the error line must say.
type RefusedStart = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<&'static str>,
    i32,
    Vec<String>,
);

/// Start-up mistakes are refused with one line that names the cause, under
/// `RUST_BACKTRACE=1` too, as a JSON line under `WEFT_LOG_FORMAT=json`, and
/// before any database or secret file is created.
#[test]
fn start_up_errors_name_their_cause_in_one_line_before_creating_files() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let refused = closed_port();
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let cases: Vec<RefusedStart> = vec![
        (
            "the port is in use",
            vec![("WEFT_BIND", busy_addr.clone())],
            vec![],
            1,
            vec![
                format!("could not listen on {busy_addr}"),
                "WEFT_BIND".into(),
            ],
        ),
        (
            "PostgreSQL refuses connections",
            vec![(
                "WEFT_DATABASE_URL",
                format!("postgres://postgres:hunter2@127.0.0.1:{refused}/weft"),
            )],
            vec![],
            1,
            vec![
                format!("cannot reach PostgreSQL at 127.0.0.1:{refused}"),
                "refused".into(),
            ],
        ),
        (
            "an SQLite URL without a file",
            vec![("WEFT_DATABASE_URL", "sqlite://".to_owned())],
            vec![],
            1,
            vec!["names no database file".into(), "sqlite://weft.db".into()],
        ),
        (
            "an SQLite file under a regular file",
            vec![(
                "WEFT_DATABASE_URL",
                format!("sqlite://{}/w.db", not_a_dir.path().display()),
            )],
            vec![],
            1,
            vec![not_a_dir.path().display().to_string()],
        ),
        (
            "an invalid log filter",
            vec![("WEFT_LOG", "info,weft=lol".to_owned())],
            vec![],
            1,
            vec!["WEFT_LOG 'info,weft=lol' is not a log filter".into()],
        ),
        (
            "a pool of no connections",
            vec![],
            vec!["--pool-max", "0"],
            2,
            vec!["--pool-max".into(), "0".into()],
        ),
        (
            "WEFT_POOL_MAX=0",
            vec![("WEFT_POOL_MAX", "0".to_owned())],
            vec![],
            2,
            vec!["--pool-max".into()],
        ),
    ];
    for (case, envs, args, code, needles) in cases {
        for json in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut envs = envs.clone();
            envs.push((
                "WEFT_LOG_FORMAT",
                if json { "json" } else { "text" }.to_owned(),
            ));
            if !envs.iter().any(|(k, _)| *k == "WEFT_BIND") {
                envs.push(("WEFT_BIND", "127.0.0.1:0".to_owned()));
            }
            let ran = run_to_end(dir.path(), &args, &envs);
            assert_eq!(
                ran.code,
                Some(code),
                "{case} (json {json}):\n{}",
                ran.stderr
            );
            let lines: Vec<&str> = ran
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let error = *lines
                .iter()
                .find(|l| l.to_lowercase().contains("error"))
                .unwrap_or_else(|| panic!("{case}: no error line:\n{}", ran.stderr));
            for needle in &needles {
                assert!(
                    error.contains(needle.as_str()),
                    "{case} (json {json}): {needle:?} not in\n{}",
                    ran.stderr
                );
            }
            assert!(
                !ran.stderr.to_lowercase().contains("backtrace"),
                "{case}:\n{}",
                ran.stderr
            );
            assert!(!ran.stderr.contains("hunter2"), "{case}:\n{}", ran.stderr);
            if json {
                for line in &lines {
                    let v: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{case}: not a JSON line ({e}): {line}"));
                    if line == &error {
                        assert_eq!(v["level"], "ERROR", "{case}: {line}");
                    }
                }
            } else if code == 1 {
                assert_eq!(
                    lines.iter().filter(|l| l.contains("ERROR")).count(),
                    1,
                    "{case}: one error line:\n{}",
                    ran.stderr
                );
            }
            assert!(
                files_in(dir.path()).is_empty(),
                "{case}: files created before the refusal: {:?}",
                files_in(dir.path())
            );
        }
    }
    drop(busy);
}

/// `sqlite://~/…` is under the home directory — not a directory named `~`
/// — and the log names the absolute path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tilde_in_the_sqlite_url_means_the_home_directory() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (served, _) = Served::start(
        dir.path(),
        &[
            ("WEFT_DATABASE_URL", "sqlite://~/w.db".to_owned()),
            ("HOME", home.path().display().to_string()),
        ],
    );
    let log = served.terminate().join("\n");
    let db = home.path().join("w.db");
    assert!(db.exists(), "no database at {}", db.display());
    assert!(
        log.contains(&format!("SQLite at {}", db.display())),
        "{log}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

/// Ctrl-C starts a graceful stop that waits for requests in flight (here an
/// auto_rename held by a model that does not answer); a second Ctrl-C stops
/// at once instead of waiting out `WEFT_SHUTDOWN_TIMEOUT_SECS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_at_once() {
    use crate::model_server::{ModelServer, Reply};
    let model = ModelServer::start().await;
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let never = std::sync::Arc::new(tokio::sync::Notify::new());
    model.script([Reply::Gated {
        arrived: arrived.clone(),
        release: never.clone(),
        answer: "never sent".to_owned(),
    }]);
    let dir = tempfile::tempdir().unwrap();
    let (mut served, base) = Served::start(
        dir.path(),
        &[
            ("WEFT_TITLE_MODEL_URL", model.base_url()),
            ("WEFT_TITLE_MODEL", "m".to_owned()),
            ("WEFT_TITLE_TIMEOUT_MS", "600000".to_owned()),
            ("WEFT_SHUTDOWN_TIMEOUT_SECS", "600".to_owned()),
        ],
    );
    let tok = token(dir.path(), &[], "alice");
    let client = reqwest::Client::new();
    let thread: Value = client
        .post(format!("{base}/v1/threads"))
        .bearer_auth(&tok)
        .json(&json!({"messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rename = client
        .post(format!(
            "{base}/v1/threads/{}/auto_rename",
            thread["id"].as_str().unwrap()
        ))
        .bearer_auth(&tok)
        .send();
    let _in_flight = tokio::spawn(rename);
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the rename reached the model");

    let pid = served.child.id().to_string();
    let interrupt = || {
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT")
    };
    interrupt();
    served.wait_for("shutting down");
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the request in flight"
    );
    interrupt();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if served.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 60 s after the second Ctrl-C (shutdown timeout 600 s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served.wait_for("second signal");
}
