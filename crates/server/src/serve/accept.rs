//! The accept loop's failure handling, and the open-file limit.
//!
//! `accept` fails for two kinds of reasons: the connection died before it
//! was taken (`ECONNABORTED` and kin: skip it), or the process is out of
//! something — file descriptors above all (`EMFILE`, `ENFILE`), or memory.
//! Retrying the second kind at once spins a core and changes nothing
//! (issue 10 measured 485,731 failures in 5 s): the loop pauses instead,
//! while open connections are served by their own tasks, and says so in
//! the log at most once per [`LOG_EVERY`], with the count.

use std::io;
use std::time::{Duration, Instant};

/// Pause after a resource error before accepting again.
const PAUSE: Duration = Duration::from_millis(100);
/// Least time between two log lines about the same condition.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limited reporting of accept failures.
#[derive(Debug, Default)]
pub(super) struct AcceptErrors {
    /// Failures since the last log line.
    unreported: u64,
    last_log: Option<Instant>,
    /// A failure was logged and its end not yet: the next accepted
    /// connection says so (once, so flapping at the limit stays quiet).
    announced: bool,
}

impl AcceptErrors {
    /// Records a failed `accept`; returns how long to pause before the next.
    pub(super) fn failed(&mut self, e: &io::Error) -> Duration {
        if is_connection_error(e) {
            tracing::debug!(error = %e, "a connection was lost before it was accepted");
            return Duration::ZERO;
        }
        self.unreported += 1;
        let due = self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due {
            let limit = open_file_limit();
            if is_fd_limit(e) {
                tracing::warn!(
                    error = %e,
                    failures = self.unreported,
                    open_file_limit = limit,
                    "at the open-file limit: new connections wait in the backlog until some close; \
                     open connections are still served (raise `ulimit -n`)"
                );
            } else {
                tracing::warn!(
                    error = %e,
                    failures = self.unreported,
                    "cannot accept connections; retrying"
                );
            }
            self.unreported = 0;
            self.last_log = Some(Instant::now());
            self.announced = true;
        }
        PAUSE
    }

    /// A connection was accepted again after failures.
    pub(super) fn recovered(&mut self) {
        if self.announced {
            self.announced = false;
            tracing::info!(
                failures_since_last_line = self.unreported,
                "accepting connections again"
            );
        }
    }
}

/// The peer went away between the handshake and `accept`: not ours to fix.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// `EMFILE` (process) or `ENFILE` (system): out of file descriptors.
fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The current soft limit on open files, if known (for the log line).
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft limit on open files to the hard limit (API.md
/// "Operations"), so each connection the operator allowed can be served.
/// Returns `(before, after)` when it changed anything; failure leaves the
/// limit as it was (logged at debug: nothing depends on it).
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let current = limit.current?;
        // An unlimited hard limit cannot be a soft limit on Linux (it is
        // capped by fs.nr_open): aim at 2^20, the usual cap.
        let target = limit.maximum.unwrap_or(1 << 20);
        if target <= current {
            return None;
        }
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => Some((current, target)),
            Err(e) => {
                tracing::debug!(error = %e, "could not raise the open-file limit");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_pause_the_loop_and_lost_connections_do_not() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(errors.failed(&emfile), PAUSE);
        assert!(errors.announced, "the first failure is logged");
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&aborted), Duration::ZERO);
        // Further failures within LOG_EVERY are counted, not logged.
        for _ in 0..100 {
            errors.failed(&emfile);
        }
        assert_eq!(errors.unreported, 100);
        errors.recovered();
        assert!(!errors.announced);
        // Flapping at the limit: failures within LOG_EVERY are not
        // announced, so their recovery is not either.
        errors.failed(&emfile);
        assert!(!errors.announced);
    }
}
