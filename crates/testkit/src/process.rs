//! What every harness needs from the machine: the PostgreSQL binaries,
//! running them as the `postgres` user when we are root, a free loopback
//! port, a cross-process lock, and telling a live server process from a
//! stale pid file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{io, HarnessError};

/// `path` as a command-line argument.
pub(crate) fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The effective user id (via `id -u`: this crate forbids `unsafe`).
pub(crate) fn current_uid() -> Result<u32, HarnessError> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(io("running `id -u`"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| HarnessError::Command {
            command: "id -u".into(),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
}

/// A free TCP port on 127.0.0.1 (free now; the caller binds it soon after).
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

/// Whether nothing listens on `port` of 127.0.0.1 right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The directory of the PostgreSQL server binaries: `initdb`/`pg_ctl` on
/// `PATH`, else the newest `/usr/lib/postgresql/*/bin`. With
/// `needs_lib` (e.g. `citus.so`), only a version whose library directory
/// holds that file qualifies.
pub(crate) fn find_bin_dir(needs_lib: Option<&str>) -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let has_lib = |bin: &Path| match needs_lib {
        None => true,
        Some(lib) => pkglibdir(bin).is_some_and(|l| l.join(lib).is_file()),
    };
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&paths).find(|d| has_tools(d)) {
            // `initdb` on PATH is often a symlink into the versioned
            // directory that holds the other tools (pg_isready, psql).
            let real = std::fs::canonicalize(d.join("initdb")).ok();
            let bin = real
                .and_then(|r| r.parent().map(Path::to_path_buf))
                .unwrap_or(d);
            if has_lib(&bin) {
                return Some(bin);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (has_tools(&bin) && has_lib(&bin)).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The server's library directory for the binaries in `bin`: what
/// `pg_config --pkglibdir` says, else the Debian layout's `../lib`.
pub(crate) fn pkglibdir(bin: &Path) -> Option<PathBuf> {
    let from_pg_config = Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    from_pg_config
        .filter(|p| p.is_dir())
        .or_else(|| bin.parent().map(|v| v.join("lib")))
}

/// Takes an exclusive lock on `dir/lock` (creating both), held until the
/// returned file drops: one process starts a shared server, the others
/// wait and then reuse it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, HarnessError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let lock_path = dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    fs4::FileExt::lock(&lock).map_err(io(format!("locking {}", lock_path.display())))?;
    Ok(lock)
}

/// Whether process `pid` is alive and its command line contains `name`
/// (after a reboot a recorded pid may belong to an unrelated process).
pub(crate) fn process_is(pid: u32, name: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(name))
        .unwrap_or(false)
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to `pid`; errors are ignored (the
/// process may already be gone).
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits (up to `bound`) until `pid` is gone; whether it is.
pub(crate) fn wait_gone(pid: u32, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        // A zombie still has a /proc entry but an empty command line.
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a log file, for an error message.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs server tools, as the `postgres` user when the caller is root
/// (PostgreSQL and PgBouncer refuse to run as root).
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    /// Where the PostgreSQL binaries are (`initdb`, `pg_ctl`, `psql`, …).
    pub(crate) bin: PathBuf,
    /// Whether tools run via `runuser -u postgres`.
    pub(crate) as_postgres: bool,
    /// The working directory of every tool (the server user must be able
    /// to enter it).
    pub(crate) cwd: PathBuf,
}

impl Runner {
    /// A runner for the binaries in `bin`, working in `cwd`; as the
    /// `postgres` user when we are root.
    pub(crate) fn new(bin: PathBuf, cwd: PathBuf) -> Result<Self, HarnessError> {
        Ok(Self {
            bin,
            as_postgres: current_uid()? == 0,
            cwd,
        })
    }

    /// Runs `exe` (a path, or a tool name in the binaries directory) with
    /// `args`; its combined output on success.
    pub(crate) fn run(&self, exe: &str, args: &[&str]) -> Result<String, HarnessError> {
        let exe_path = if exe.contains('/') {
            PathBuf::from(exe)
        } else {
            self.bin.join(exe)
        };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe_path);
            c
        } else {
            Command::new(&exe_path)
        };
        cmd.args(args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .env("PGCONNECT_TIMEOUT", "5");
        let out = cmd
            .output()
            .map_err(io(format!("running {}", exe_path.display())))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            let name = exe_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(HarnessError::Command {
                command: format!("{name} {}", args.join(" ")),
                status: out.status.to_string(),
                output: text,
            })
        }
    }

    /// Hands `dir` to the server user when tools run as `postgres`.
    pub(crate) fn own(&self, dir: &Path) -> Result<(), HarnessError> {
        if !self.as_postgres {
            return Ok(());
        }
        let id = |flag: &str| -> Result<u32, HarnessError> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .map_err(io("looking up the postgres user"))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| HarnessError::Command {
                    command: format!("id {flag} postgres"),
                    status: out.status.to_string(),
                    output: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
        };
        let (uid, gid) = (id("-u")?, id("-g")?);
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(io(format!("chown {}", dir.display())))
    }

    /// Whether a PostgreSQL server (or anything speaking its protocol)
    /// accepts connections on 127.0.0.1:`port`.
    pub(crate) fn answers(&self, port: u16) -> bool {
        let p = port.to_string();
        self.run("pg_isready", &["-h", "127.0.0.1", "-p", &p, "-t", "5"])
            .is_ok()
    }

    /// Runs one SQL command with `psql` on 127.0.0.1:`port`, database
    /// `db`, as user `postgres`; its unaligned, tuples-only output.
    pub(crate) fn psql(&self, port: u16, db: &str, sql: &str) -> Result<String, HarnessError> {
        let p = port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        )
    }
}

/// One PostgreSQL data directory managed with `initdb`/`pg_ctl`.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    /// The data directory.
    pub(crate) data: PathBuf,
    /// Where the server log goes.
    pub(crate) log: PathBuf,
}

impl DataDir {
    /// The port of a postmaster that is really running on this directory:
    /// its pid file names a live process that is a postgres server.
    pub(crate) fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        process_is(pid, "postgres").then_some(port)
    }

    /// `initdb` with trust auth, UTF-8, C locale, then `extra_conf`
    /// appended to `postgresql.conf`.
    pub(crate) fn init(&self, runner: &Runner, extra_conf: &str) -> Result<(), HarnessError> {
        tracing::info!(data = %self.data.display(), "initialising a throwaway PostgreSQL cluster");
        runner.run(
            "initdb",
            &[
                "-D",
                &arg(&self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("reading postgresql.conf"))?;
        text.push_str(extra_conf);
        std::fs::write(&conf, text).map_err(io("writing postgresql.conf"))
    }

    /// `pg_ctl start`, waiting until it accepts connections; with `port`
    /// when given (else the port of `postgresql.conf`). The error carries
    /// the tail of the server log.
    pub(crate) fn start(&self, runner: &Runner, port: Option<u16>) -> Result<(), HarnessError> {
        // A pid file left by a killed server (or a previous boot) would stop
        // the start: callers only start directories with no live postmaster.
        if self.running_port().is_none() {
            let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
        }
        let opts = port.map(|p| format!("-p {p}"));
        let (data, log) = (arg(&self.data), arg(&self.log));
        let mut args = vec!["start", "-w", "-t", "60", "-D", &data, "-l", &log];
        if let Some(o) = &opts {
            args.extend(["-o", o.as_str()]);
        }
        match runner.run("pg_ctl", &args) {
            Ok(_) => Ok(()),
            Err(HarnessError::Command {
                command,
                status,
                output,
            }) => Err(HarnessError::Command {
                command,
                status,
                output: format!("{output}\n--- server log ---\n{}", tail(&self.log, 20)),
            }),
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl stop` in `mode` (`fast`, `immediate`), waiting for it.
    pub(crate) fn stop(&self, runner: &Runner, mode: &str) -> Result<(), HarnessError> {
        runner
            .run(
                "pg_ctl",
                &["stop", "-m", mode, "-w", "-t", "60", "-D", &arg(&self.data)],
            )
            .map(|_| ())
    }
}

/// Marks `dir` as owned by this process (a dedicated server's directory),
/// so that a later run can tell it was orphaned if this process dies
/// without stopping the server (see [`orphaned_dirs`]).
pub(crate) fn write_owner(dir: &Path) -> Result<(), HarnessError> {
    let path = dir.join("owner.pid");
    std::fs::write(&path, std::process::id().to_string())
        .map_err(io(format!("writing {}", path.display())))
}

/// Directories in the temp dir named `<prefix>…` whose owning process
/// (`owner.pid`) is gone: dedicated servers of a test process that was
/// killed before it could stop them.
pub(crate) fn orphaned_dirs(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("owner.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}
