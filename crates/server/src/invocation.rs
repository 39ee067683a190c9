//! How this `weft` was started, so hints print a command that works where
//! the user is: after `cargo run` there is no `weft` on `PATH`.

use std::path::{Path, PathBuf};

/// The command that runs this binary again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Started by `cargo run` (cargo sets `CARGO` and `CARGO_PKG_NAME` for
    /// the program it runs); `release` when the binary is a release build.
    Cargo {
        /// Built with `--release`.
        release: bool,
    },
    /// Started directly: `weft` when that is what `PATH` finds, else the
    /// binary's own path.
    Binary(String),
}

impl Invocation {
    /// How the running process was started, from its environment and
    /// executable path.
    pub fn current() -> Self {
        let exe = std::env::current_exe().ok();
        let through_cargo = std::env::var_os("CARGO").is_some()
            && std::env::var("CARGO_PKG_NAME").as_deref() == Ok(env!("CARGO_PKG_NAME"));
        Self::detect(through_cargo, exe.as_deref(), std::env::var_os("PATH"))
    }

    fn detect(
        through_cargo: bool,
        exe: Option<&Path>,
        path_var: Option<std::ffi::OsString>,
    ) -> Self {
        if through_cargo {
            let release = exe
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|d| d == "release");
            return Self::Cargo { release };
        }
        let Some(exe) = exe else {
            return Self::Binary("weft".to_owned());
        };
        let on_path = path_var
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("weft"))
            .find(|candidate| candidate.is_file());
        if let Some(found) = on_path {
            if same_file(&found, exe) {
                return Self::Binary("weft".to_owned());
            }
        }
        Self::Binary(shell_quote(&exe.display().to_string()))
    }

    /// The command line that runs `weft SUBCOMMAND`, e.g.
    /// `cargo run --bin weft -- token` or `/opt/weft/bin/weft token`.
    pub fn command(&self, subcommand: &str) -> String {
        match self {
            Self::Cargo { release } => format!(
                "cargo run{} --bin weft -- {subcommand}",
                if *release { " --release" } else { "" }
            ),
            Self::Binary(program) => format!("{program} {subcommand}"),
        }
    }

    /// The command line that starts the server.
    pub fn serve(&self) -> String {
        match self {
            Self::Cargo { release } => format!(
                "cargo run{} --bin weft",
                if *release { " --release" } else { "" }
            ),
            Self::Binary(program) => program.clone(),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    canonical(a) == canonical(b)
}

/// Single-quotes `s` for a POSIX shell when it holds anything but safe characters.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn through_cargo_the_hint_is_a_cargo_command() {
        let debug = Invocation::detect(true, Some(Path::new("/w/target/debug/weft")), None);
        assert_eq!(
            debug.command("token --user <USER_ID>"),
            "cargo run --bin weft -- token --user <USER_ID>"
        );
        assert_eq!(debug.serve(), "cargo run --bin weft");
        let release = Invocation::detect(true, Some(Path::new("/w/target/release/weft")), None);
        assert_eq!(
            release.command("token"),
            "cargo run --release --bin weft -- token"
        );
    }

    #[test]
    fn run_directly_the_hint_is_weft_when_path_finds_it_else_the_binarys_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("weft");
        std::fs::write(&exe, b"").unwrap();
        let on_path =
            Invocation::detect(false, Some(&exe), Some(dir.path().as_os_str().to_owned()));
        assert_eq!(on_path.command("token"), "weft token");
        let elsewhere = Invocation::detect(false, Some(&exe), Some("/nonexistent".into()));
        assert_eq!(
            elsewhere.command("token"),
            format!("{} token", exe.display())
        );
        let spaced = Invocation::detect(false, Some(Path::new("/my apps/weft")), None);
        assert_eq!(spaced.command("token"), "'/my apps/weft' token");
    }
}
