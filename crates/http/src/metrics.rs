//! Prometheus metrics, owned by the server state (no global registry), so
//! two servers in one process (as in the tests) never share counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use weft_ports::{ExpiryObserver, Mode, TxObserver, TxOutcome};

/// A snapshot of the connection pool, read on every scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Open connections.
    pub size: u64,
    /// Open connections not in use.
    pub idle: u64,
}

/// Every metric Weft exports, registered in one private registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    cancelled: IntCounter,
    transactions: IntCounterVec,
    pool_size: IntGauge,
    pool_idle: IntGauge,
    pool_waiting: IntGauge,
    titles: IntCounterVec,
    title_latency: HistogramVec,
    idempotency_expired: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A metric could not be registered (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Errors
    /// [`MetricsError`] if registration fails.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("weft".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template and method",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "method"],
        )?;
        let cancelled = IntCounter::new(
            "http_requests_cancelled_total",
            "Requests dropped before their response was ready (shutdown bound reached, HTTP/2 reset) \
             or whose body broke off mid-way; their use cases still ran to commit or rollback",
        )?;
        let transactions = IntCounterVec::new(
            Opts::new(
                "transactions_total",
                "Unit-of-work attempts by mode and outcome (committed, rolled_back, retried)",
            ),
            &["mode", "outcome"],
        )?;
        let pool_size = IntGauge::new("db_pool_connections", "Open database connections")?;
        let pool_idle = IntGauge::new(
            "db_pool_idle_connections",
            "Open database connections not in use",
        )?;
        let pool_waiting = IntGauge::new(
            "db_pool_waiting",
            "Requests waiting for a database connection",
        )?;
        let titles = IntCounterVec::new(
            Opts::new(
                "title_generations_total",
                "Title generations by a language model, by outcome (ok, timeout, error, invalid); \
                 every outcome but ok fell back to the derived title",
            ),
            &["outcome"],
        )?;
        let title_latency = HistogramVec::new(
            HistogramOpts::new(
                "title_generation_duration_seconds",
                "Time a title generation by a language model took, by outcome",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0]),
            &["outcome"],
        )?;
        let idempotency_expired = IntCounter::new(
            "idempotency_records_expired_total",
            "Idempotency records deleted by the background expiry (older than \
             WEFT_IDEMPOTENCY_RETENTION, never inside the 24 h replay window)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(cancelled.clone()))?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(pool_size.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(pool_waiting.clone()))?;
        registry.register(Box::new(titles.clone()))?;
        registry.register(Box::new(title_latency.clone()))?;
        registry.register(Box::new(idempotency_expired.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            cancelled,
            transactions,
            pool_size,
            pool_idle,
            pool_waiting,
            titles,
            title_latency,
            idempotency_expired,
        })
    }

    /// Records one finished request. `route` and `method` must come from
    /// [`route_template`] and [`method_label`] (bounded label sets).
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Records one title generation by a language model that ended with
    /// `outcome` (`ok`, `timeout`, `error` or `invalid`; anything else is
    /// counted as `other`, so the label stays bounded) after `seconds`.
    pub fn observe_title_generation(&self, outcome: &str, seconds: f64) {
        let outcome = match outcome {
            "ok" | "timeout" | "error" | "invalid" => outcome,
            _ => "other",
        };
        self.titles.with_label_values(&[outcome]).inc();
        self.title_latency
            .with_label_values(&[outcome])
            .observe(seconds);
    }

    /// Records one request dropped before its response was ready.
    pub fn request_cancelled(&self) {
        self.cancelled.inc();
    }

    /// The live gauge of units of work waiting in `begin` for a connection
    /// (maintained by the composition root's factory decorator).
    pub fn pool_waiting_gauge(&self) -> IntGauge {
        self.pool_waiting.clone()
    }

    /// How many idempotency records the background expiry deleted so far.
    pub fn idempotency_expired_count(&self) -> u64 {
        self.idempotency_expired.get()
    }

    /// How many requests were cancelled so far.
    pub fn cancelled_count(&self) -> u64 {
        self.cancelled.get()
    }

    /// The Prometheus text exposition, with the pool gauges set from `pool` first.
    pub fn render(&self, pool: PoolSnapshot) -> String {
        self.pool_size.set(clamp(pool.size));
        self.pool_idle.set(clamp(pool.idle));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl TxObserver for Metrics {
    fn observe(&self, mode: Mode, outcome: TxOutcome) {
        let mode = match mode {
            Mode::ReadOnly | Mode::SingleRead => "read_only",
            Mode::ReadWrite => "read_write",
        };
        let outcome = match outcome {
            TxOutcome::Committed => "committed",
            TxOutcome::RolledBack => "rolled_back",
            TxOutcome::Retried => "retried",
            TxOutcome::CommitUnknown => "commit_unknown",
        };
        self.transactions.with_label_values(&[mode, outcome]).inc();
    }
}

impl ExpiryObserver for Metrics {
    fn expired(&self, records: u64) {
        self.idempotency_expired.inc_by(records);
    }
}

/// The method as a label (API.md "Operations": labels are bounded): one of
/// the methods of RFC 9110 §9 and RFC 5789 (`PATCH`), or `other` for any
/// extension method, so a client inventing methods cannot grow /metrics
/// (or the log) with what it invents.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// The route template of a request path, for metric labels: ids become
/// `{thread_id}`/`{message_id}` and anything unknown is one label, so a
/// scanner cannot blow up the label cardinality.
pub fn route_template(path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        [] => "/",
        ["v1", "threads"] => "/v1/threads",
        ["v1", "threads", _] => "/v1/threads/{thread_id}",
        ["v1", "threads", _, "auto_rename"] => "/v1/threads/{thread_id}/auto_rename",
        ["v1", "threads", _, "messages"] => "/v1/threads/{thread_id}/messages",
        ["v1", "threads", _, "messages", _] => "/v1/threads/{thread_id}/messages/{message_id}",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["docs", ..] => "/docs",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_bounded_templates() {
        assert_eq!(
            route_template("/v1/threads/thread_x/messages/msg_y"),
            "/v1/threads/{thread_id}/messages/{message_id}"
        );
        assert_eq!(route_template("/v1/threads"), "/v1/threads");
        assert_eq!(route_template("/v1/threads/"), "/v1/threads");
        assert_eq!(route_template("/wp-admin/x.php"), "unmatched");
        assert_eq!(route_template("/"), "/");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label(&"M".repeat(60_000)), "other");
    }

    #[test]
    fn the_exposition_names_every_family() {
        let m = Metrics::new().unwrap();
        m.observe_request("/v1/threads", "GET", 200, 0.01);
        m.request_cancelled();
        m.observe(Mode::ReadWrite, TxOutcome::Committed);
        m.observe_title_generation("timeout", 3.0);
        m.observe_title_generation("made-up", 0.1);
        m.expired(3);
        let text = m.render(PoolSnapshot { size: 3, idle: 2 });
        for name in [
            "weft_http_requests_total",
            "weft_http_request_duration_seconds_bucket",
            "weft_http_requests_cancelled_total 1",
            "weft_transactions_total",
            "weft_db_pool_connections 3",
            "weft_db_pool_idle_connections 2",
            "weft_db_pool_waiting 0",
            "weft_title_generations_total{outcome=\"timeout\"} 1",
            "weft_title_generations_total{outcome=\"other\"} 1",
            "weft_title_generation_duration_seconds_bucket{outcome=\"timeout\",le=\"3\"} 1",
            "weft_idempotency_records_expired_total 3",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
