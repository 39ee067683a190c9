//! README.md's Quick start, run as a script exactly as a newcomer pastes
//! it, so it stays true: the server starts in the background, the block
//! waits for `/readyz`, mints a token and creates a thread.
//!
//! Two stand-ins, both outside the pasted text: `cargo` is a shell function
//! running the already-built binary (building again inside a test would
//! take minutes), and the port is a free one instead of 8080 (another
//! program may hold 8080 on a test machine).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The first fenced block of `lang` after the heading `heading`.
fn block_after(readme: &str, heading: &str, lang: &str) -> String {
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no '{heading}' heading"))
        .1;
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block under '{heading}'"))
        + fence.len();
    let len = section[start..].find("```").expect("a closed block");
    section[start..start + len].to_owned()
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root")
}

/// `cargo run [-q] [--release] --bin weft [--] ARGS` → the binary under test.
const CARGO_STAND_IN: &str = r#"
cargo() {
  [ "$1" = run ] || { echo "quick start test: unexpected 'cargo $*'" >&2; return 2; }
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -q|--quiet|--release) shift ;;
      --bin) shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  "$WEFT_BIN" "$@"
}
"#;

/// The Quick start block, pasted into a shell in an empty directory, prints
/// the created thread; the server it started in the background is stopped
/// afterwards.
#[test]
fn the_readme_quick_start_runs_as_pasted() {
    let block = block_after(&readme(), "## Quick start", "sh");
    assert!(
        block.contains("127.0.0.1:8080"),
        "the block talks to 8080:\n{block}"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = format!(
        "{CARGO_STAND_IN}\n{}",
        block.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("WEFT_BIN", WEFT)
        .env("WEFT_BIND", format!("127.0.0.1:{port}"))
        .env("WEFT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("WEFT_") && k != "WEFT_BIND" && k != "WEFT_LOG" && k != "WEFT_BIN" {
            cmd.env_remove(k);
        }
    }
    // Its own process group, so the background server is stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("bash runs");
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The shell has ended; the server it put in the background has not.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status =
        status.unwrap_or_else(|| panic!("the quick start did not finish in 120 s:\n{stderr}"));
    assert!(
        status.success(),
        "the quick start failed ({status}):\n{stdout}\n{stderr}"
    );
    let thread: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the last command printed no thread ({e}):\n{stdout}\n{stderr}")
    });
    assert_eq!(thread["object"], "thread", "{thread}");
    assert_eq!(thread["title"], "GPU costs", "{thread}");
    assert_eq!(thread["message_count"], 1, "{thread}");
}

/// The Python snippet reads the token the shell block exported, instead of
/// a `TOKEN` variable Python does not have.
#[test]
fn the_readme_python_snippet_reads_the_exported_token() {
    let readme = readme();
    let shell = block_after(&readme, "## Quick start", "sh");
    assert!(shell.contains("export TOKEN="), "{shell}");
    let python = block_after(&readme, "## Quick start", "python");
    assert!(python.contains(r#"os.environ["TOKEN"]"#), "{python}");
}
