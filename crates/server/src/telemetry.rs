//! Logging: a subscriber builder kept separate from its installation, so
//! tests can build a silent one (or none) and `main` installs the real one.
//!
//! No log field carries a raw control character (API.md "Operations"): a
//! request can put text in a field (a header, a token's claim, an error
//! naming its input), and a newline or terminal escape there would forge log
//! lines or rewrite the operator's terminal. The text format escapes every
//! Unicode Cc character in every field value (`\n`, `\u{1b}` …) in
//! [`SafeFields`]; the JSON format needs nothing extra: JSON strings escape
//! control characters by definition.

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing::Subscriber;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber_to(filter, format, std::io::stderr, ansi)
}

/// Like [`subscriber`], writing to `writer`; `ansi` colours the text
/// format (only ever for a person at a terminal, never into log files).
///
/// # Errors
/// As [`subscriber`].
pub fn subscriber_to<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Subscriber + Send + Sync>, BadLogFilter>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let parsed = EnvFilter::try_new(filter).map_err(|e| BadLogFilter {
        filter: filter.chars().take(200).collect(),
        reason: e.to_string(),
    })?;
    Ok(build(parsed, format, writer, ansi))
}

/// A subscriber at `info`, for reporting why the configured one could
/// not be built, in the configured format.
pub fn fallback(format: LogFormat) -> Box<dyn Subscriber + Send + Sync> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    build(EnvFilter::new("info"), format, std::io::stderr, ansi)
}

fn build<W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
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
        LogFormat::Text => Box::new(
            builder
                .fmt_fields(format::debug_fn(SafeFields::write).delimited(" "))
                .finish(),
        ),
    }
}

/// Field formatting of the text format: `name=value` like the default,
/// the `message` bare, every control character of a value escaped.
#[derive(Debug, Clone, Copy)]
pub struct SafeFields;

impl SafeFields {
    fn write(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
        let name = field.name();
        // Metadata of `log` records, already shown as the event's target.
        if name.starts_with("log.") {
            return Ok(());
        }
        let mut text = String::new();
        write!(text, "{value:?}")?;
        match name {
            "message" => write_escaped(w, &text),
            name => {
                write!(w, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
                write_escaped(w, &text)
            }
        }
    }
}

/// Writes `text` with each Unicode Cc character as a Rust-style escape.
fn write_escaped(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", u32::from(c))?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn log_hostile_fields(format: LogFormat) -> String {
        let buf = Buffer::default();
        let sub = subscriber_to("info", format, buf.clone(), false).unwrap();
        tracing::subscriber::with_default(sub, || {
            let hostile = "evil\nINFO forged line \u{1b}[31mred\u{7}\r";
            let span = tracing::error_span!("request", user_id = tracing::field::Empty);
            span.record("user_id", tracing::field::display(hostile));
            span.in_scope(|| {
                tracing::info!(method = %hostile, path = hostile, "finished {}", hostile);
            });
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_control_character_of_a_field_reaches_the_text_log() {
        let log = log_hostile_fields(LogFormat::Text);
        assert_eq!(log.lines().count(), 1, "one event is one line:\n{log}");
        assert!(log.ends_with('\n'));
        let body = log.trim_end_matches('\n');
        assert!(!body.chars().any(char::is_control), "{log:?}");
        assert!(
            body.contains(r"user_id=evil\nINFO forged line \u{1b}[31mred\u{7}\r"),
            "{log}"
        );
        assert!(body.contains("finished evil\\n"), "{log}");
    }

    #[test]
    fn no_control_character_of_a_field_reaches_the_json_log() {
        let log = log_hostile_fields(LogFormat::Json);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            !log.trim_end_matches('\n').chars().any(char::is_control),
            "{log:?}"
        );
        let v: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
        assert_eq!(
            v["span"]["user_id"],
            "evil\nINFO forged line \u{1b}[31mred\u{7}\r"
        );
    }
}
