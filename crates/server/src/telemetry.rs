//! Logging: a subscriber builder kept separate from its installation, so
//! tests can build a silent one (or none) and `main` installs the real one.

use tracing::Subscriber;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// `WEFT_LOG` is not a `tracing` filter.
#[derive(Debug, thiserror::Error)]
#[error("WEFT_LOG '{filter}' is not a log filter (e.g. 'info', 'debug' or 'weft_http=debug,info'): {reason}")]
pub struct BadLogFilter {
    filter: String,
    reason: String,
}

/// A subscriber writing to stderr with `filter` (an `EnvFilter` directive,
/// e.g. `info`), as text or JSON lines.
///
/// # Errors
/// [`BadLogFilter`] when `filter` does not parse (it is refused rather
/// than replaced, so a typo never silently changes what is logged).
pub fn subscriber(
    filter: &str,
    format: LogFormat,
) -> Result<Box<dyn Subscriber + Send + Sync>, BadLogFilter> {
    let parsed = EnvFilter::try_new(filter).map_err(|e| BadLogFilter {
        filter: filter.chars().take(200).collect(),
        reason: e.to_string(),
    })?;
    Ok(build(parsed, format))
}

/// A subscriber at `info`, for reporting why the configured one could
/// not be built, in the configured format.
pub fn fallback(format: LogFormat) -> Box<dyn Subscriber + Send + Sync> {
    build(EnvFilter::new("info"), format)
}

fn build(filter: EnvFilter, format: LogFormat) -> Box<dyn Subscriber + Send + Sync> {
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
