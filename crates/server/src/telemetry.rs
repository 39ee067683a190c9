//! Logging: a subscriber builder kept separate from its installation, so
//! tests can build a silent one (or none) and `main` installs the real one.

use tracing::Subscriber;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// A subscriber writing to stderr with `filter` (an `EnvFilter` directive,
/// e.g. `info`), as text or JSON lines. An invalid filter falls back to `info`.
pub fn subscriber(filter: &str, format: LogFormat) -> Box<dyn Subscriber + Send + Sync> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                // The current span already carries the request and user ids.
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Installs `subscriber` as the process-wide default. Only `main` calls this.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(
    subscriber: Box<dyn Subscriber + Send + Sync>,
) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    tracing::subscriber::set_global_default(subscriber)
}
