//! The title generator choice: a language model when `WEFT_TITLE_MODEL_URL`
//! is set, else the derived titles; and the bridge from the model adapter's
//! outcomes to the Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use weft_adapters_titles::{
    ModelConfig, ModelTitles, ModelTitlesError, TitleObserver, TitleOutcome,
};
use weft_app::system::DerivedTitles;
use weft_app::AppConfig;
use weft_http::metrics::Metrics;
use weft_ports::TitleGenerator;

use crate::config::mask_password;

/// How much longer than the model's own timeout the app waits before it
/// gives up on the generator itself. The adapter's timeout is the one that
/// fires (so it is counted as `timeout` and its warning names the cause);
/// the app's stays a backstop.
pub const BACKSTOP_MARGIN: Duration = Duration::from_secs(1);

/// Feeds the model adapter's outcomes into `weft_title_generations_total`
/// and `weft_title_generation_duration_seconds`.
struct TitleMetrics(Metrics);

impl TitleObserver for TitleMetrics {
    fn observe(&self, outcome: TitleOutcome, elapsed: Duration) {
        self.0
            .observe_title_generation(outcome.label(), elapsed.as_secs_f64());
    }
}

/// The title generator `config` selects, and how long the app waits for it.
///
/// # Errors
/// [`ModelTitlesError`] when the model adapter cannot be built.
pub fn generator(
    config: Option<&ModelConfig>,
    metrics: &Metrics,
) -> Result<(Arc<dyn TitleGenerator>, Duration), ModelTitlesError> {
    let Some(config) = config else {
        return Ok((Arc::new(DerivedTitles), AppConfig::default().title_timeout));
    };
    let titles = ModelTitles::new(config, Arc::new(TitleMetrics(metrics.clone())))?;
    tracing::info!(
        endpoint = %mask_password(config.endpoint().as_str()),
        model = %config.model,
        api_key = if config.api_key.is_some() { "set" } else { "none" },
        timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
        "auto_rename asks a language model for titles (the derived title on any failure)"
    );
    Ok((Arc::new(titles), config.timeout + BACKSTOP_MARGIN))
}
