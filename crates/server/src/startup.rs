//! The composition root: config → adapter → app → routes → server.
//!
//! [`Application::build`] is the one place where concrete types meet; it
//! binds the listener before returning, so callers (the tests) can read the
//! bound port when they asked for port 0. Connections are served by
//! [`crate::serve`] (hyper, with the connection bounds of API.md).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use poem::endpoint::BoxEndpoint;
use poem::Response;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use weft_adapters_titles::ModelTitlesError;
use weft_app::lifecycle::Lifecycle;
use weft_app::system::{SystemClock, V7Ids};
use weft_app::{App, AppConfig, Deps};
use weft_http::auth::TokenKeys;
use weft_http::jwks::{FetchError, Jwks, JwksError};
use weft_http::metrics::{Metrics, MetricsError, PoolSnapshot};
use weft_http::ops::Health;
use weft_http::routes::{routes, HttpConfig};
use weft_http::shield::Shield;
use weft_ports::{Mode, PortError, RequestContext, TitleGenerator, UnitOfWork, UnitOfWorkFactory};

use crate::config::{LifecycleSettings, Settings};
use crate::serve::{serve, ConnectionLimits};
use crate::store::{Store, StoreError};

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The title model's client could not be built.
    #[error(transparent)]
    Titles(#[from] ModelTitlesError),
    /// The identity provider's key set (`WEFT_JWKS_URL`/`WEFT_JWKS_FILE`)
    /// could not be loaded: a server that would refuse every provider
    /// token does not start.
    #[error("could not load the identity provider keys")]
    Jwks(#[from] JwksError),
    /// The HTTP client for `WEFT_JWKS_URL` could not be built.
    #[error("could not set up the client for WEFT_JWKS_URL")]
    JwksClient(#[source] FetchError),
    /// The listen address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A built server: database open and migrated, listener bound, routes
/// assembled. Nothing is served until [`Application::run_until_stopped`].
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    routes: BoxEndpoint<'static, Response>,
    store: Store,
    metrics: Metrics,
    shield: Shield,
    shutdown_timeout: Duration,
    lifecycle: Lifecycle,
    lifecycle_settings: LifecycleSettings,
    limits: ConnectionLimits,
    jwks: Option<(Arc<Jwks>, Duration)>,
}

impl Application {
    /// Opens and migrates the database, wires the app and binds the listener.
    ///
    /// # Errors
    /// [`StartupError`] when the identity provider's keys cannot be
    /// loaded, the database cannot be opened or migrated, or the address
    /// cannot be bound.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::assemble(settings, None).await
    }

    /// Like [`Application::build`] with another title generator (a model
    /// call in production, a slow fake in tests).
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_titles(
        settings: Settings,
        titles: Arc<dyn TitleGenerator>,
    ) -> Result<Self, StartupError> {
        Self::assemble(settings, Some(titles)).await
    }

    /// The title generator is `titles`, or the one `settings` select.
    async fn assemble(
        settings: Settings,
        titles: Option<Arc<dyn TitleGenerator>>,
    ) -> Result<Self, StartupError> {
        let jwks = match &settings.tokens.jwks {
            Some(location) => {
                let source = location.source().map_err(StartupError::JwksClient)?;
                Some(Arc::new(
                    Jwks::load(source, settings.tokens.jwks_min_refetch).await?,
                ))
            }
            None => None,
        };
        let store = Store::connect(&settings).await?;
        store.migrate().await?;
        let metrics = Metrics::new()?;
        let (titles, title_timeout) = match titles {
            Some(titles) => (titles, AppConfig::default().title_timeout),
            None => crate::titles::generator(settings.titles.as_ref(), &metrics)?,
        };

        let deps = Deps {
            uow: Arc::new(WaitCounting {
                inner: store.factory(),
                waiting: metrics.pool_waiting_gauge(),
            }),
            clock: Arc::new(SystemClock),
            ids: Arc::new(V7Ids::default()),
            titles,
            observer: Arc::new(metrics.clone()),
        };
        let app = App::new(
            deps,
            AppConfig {
                title_timeout,
                ..AppConfig::default()
            },
        );

        let lifecycle = Lifecycle::new(
            store.maintenance(),
            Arc::new(SystemClock),
            settings.lifecycle.batches,
        );

        let shield = Shield::default();
        let routes = routes(HttpConfig {
            app,
            shield: shield.clone(),
            keys: TokenKeys::configured(
                &settings.secret,
                settings.tokens.rules.clone(),
                jwks.clone(),
            ),
            health: Arc::new(store.clone()),
            metrics: metrics.clone(),
            request_timeout: settings.request_timeout,
            body: settings.body,
        });

        let bind_err = |source| StartupError::Bind {
            addr: settings.bind,
            source,
        };
        let listener = TcpListener::bind(settings.bind).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            addr,
            routes,
            store,
            metrics,
            shield,
            shutdown_timeout: settings.shutdown_timeout,
            lifecycle,
            lifecycle_settings: settings.lifecycle,
            limits: settings.connections,
            jwks: jwks.map(|j| (j, settings.tokens.jwks_refresh)),
        })
    }

    /// The bound port (the real one when port 0 was asked for).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's metrics (tests read counters through it).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully; a second
    /// signal during the graceful shutdown stops at once (in-flight
    /// requests are cut; each database transaction still rolls back whole).
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn run_until_stopped(self, mut signals: StopSignals) -> std::io::Result<()> {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<StopSignals>();
        let first = async move {
            signals.next().await;
            let _ = first_tx.send(signals);
        };
        let second = async move {
            match first_rx.await {
                Ok(mut signals) => signals.next().await,
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            served = self.run_until(first) => served,
            () = second => {
                tracing::warn!("second signal: stopping now, without waiting for in-flight requests");
                Ok(())
            }
        }
    }

    /// Serves until `signal` resolves; then stops accepting, lets in-flight
    /// requests finish within the shutdown timeout (connections that only
    /// wait for their client are closed sooner), stops the background
    /// idempotency expiry, and closes the pool (which waits for every
    /// connection to come back). While serving, the identity provider's
    /// keys are refreshed on their schedule, and idempotency records older
    /// than `WEFT_IDEMPOTENCY_RETENTION` are deleted in the background (a
    /// sweep at start, then every minute; bounded batches, counted in
    /// `weft_idempotency_records_expired_total`).
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let Self {
            listener,
            routes,
            store,
            shield,
            shutdown_timeout,
            limits,
            jwks,
            lifecycle,
            lifecycle_settings,
            metrics,
            ..
        } = self;
        let (stop_expiry, expiry_stopped) = tokio::sync::oneshot::channel::<()>();
        let expiry = tokio::spawn(async move {
            lifecycle
                .run_idempotency_expiry(
                    lifecycle_settings.idempotency_retention,
                    lifecycle_settings.sweep_every,
                    &metrics,
                    async move {
                        let _ = expiry_stopped.await;
                    },
                )
                .await;
        });
        let refresher =
            jwks.map(|(jwks, every)| tokio::spawn(crate::jwks::refresh_every(jwks, every)));
        let served = serve(listener, routes, limits, signal, shutdown_timeout).await;
        if let Some(r) = refresher {
            r.abort();
        }
        // Requests cut off at the bound may have left shielded use cases
        // running: let them reach their commit or rollback (bounded) before
        // the pool closes under them.
        if !shield.wait_idle(shutdown_timeout).await {
            tracing::warn!(
                running = shield.running(),
                "use cases still running at shutdown"
            );
        }
        // The expiry ends at once (a batch in flight rolls back whole).
        let _ = stop_expiry.send(());
        if tokio::time::timeout(shutdown_timeout, expiry)
            .await
            .is_err()
        {
            tracing::warn!("the idempotency expiry did not stop in time");
        }
        tracing::info!("server stopped; closing the database pool");
        // close() waits for every connection to come back, bounded so a stuck
        // statement cannot hang the exit.
        if tokio::time::timeout(shutdown_timeout, store.close())
            .await
            .is_err()
        {
            tracing::warn!("database pool did not close in time");
        }
        served
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened to from the moment this is
/// created: a signal that arrives before serving starts (just after the
/// start-up log, say) is delivered here, not to the default action that
/// would kill the process without a clean stop.
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => tracing::info!("Ctrl-C received; shutting down"),
            _ = self.term.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Health for Store {
    async fn ready(&self) -> bool {
        Store::ready(self).await
    }

    fn pool(&self) -> PoolSnapshot {
        Store::pool(self)
    }
}

/// Decorates the adapter's factory to count callers waiting in `begin`
/// (waiting for a pool connection), for the `db_pool_waiting` gauge: the
/// adapters do not expose their wait queues, and this works for any adapter.
struct WaitCounting {
    inner: Arc<dyn UnitOfWorkFactory>,
    waiting: IntGauge,
}

struct Waiting<'a>(&'a IntGauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl UnitOfWorkFactory for WaitCounting {
    async fn begin(
        &self,
        ctx: &RequestContext,
        mode: Mode,
    ) -> Result<Box<dyn UnitOfWork>, PortError> {
        self.waiting.inc();
        // Decremented on return and on cancellation alike.
        let _waiting = Waiting(&self.waiting);
        self.inner.begin(ctx, mode).await
    }
}
