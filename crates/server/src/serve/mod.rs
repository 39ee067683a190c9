//! The HTTP server: the accept loop, and each connection served with hyper
//! under the bounds of API.md "Operations" (the connection paragraph).
//!
//! Why not poem's `Server` (poem 3.1.12), which does the same inside: it
//! sets no hyper timer, so there is no header-read timeout at all; its idle
//! timeout cannot tell an idle connection from a half-sent request; it
//! advertises no HTTP/2 stream limit unless asked; it retries a failing
//! `accept` at once, forever (at the open-file limit: half a core and no
//! log line); and its shutdown waits the full bound for a connection that
//! only waits for its client. Serving connections with hyper-util here —
//! what poem does internally — gives each of these one explicit knob; the
//! routes stay one poem endpoint, unchanged.
//!
//! Per connection ([`activity`]):
//! - request headers must be complete within `header_timeout` (10 s) of
//!   their first byte (the first request's: of the connection's opening,
//!   so a connection that sends nothing is closed at 10 s too), else the
//!   connection is closed;
//! - a connection with no request in flight is closed after `idle_timeout`
//!   (60 s) — for HTTP/1 keep-alive and HTTP/2 alike;
//! - a request whose response the client stops reading for `idle_timeout`
//!   is closed too (a reader that never reads cannot pin a buffer forever);
//! - HTTP/2 advertises at most `max_concurrent_streams` (128) concurrent
//!   streams, 20 pending resets before GOAWAY (rapid reset), 16 KiB of
//!   header list; HTTP/1 buffers at most 64 KiB of request head.
//!
//! The body read timeout and the in-flight body budget are the endpoint's
//! (they need the verified token first); this layer only knows whether a
//! request is waiting for body bytes, which is what shutdown needs: after
//! the signal, a connection whose every request only waits for its client
//! (or is not reading its response) and that moved no byte for
//! `stall_grace` (1 s) is closed, while requests doing work keep the whole
//! shutdown bound.
//!
//! At the open-file limit ([`accept`]) the loop backs off instead of
//! spinning, keeps serving the open connections, and logs the condition at
//! most once per 10 s.

mod accept;
mod activity;
mod protocol_errors;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use activity::{Activity, Verdict, Watched};

pub use accept::raise_open_file_limit;

/// The bounds on each connection (API.md "Operations"). The defaults are
/// the documented values; tests lower them to observe them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Request headers must be complete this long after their first byte
    /// (a new connection's first request: after the connection opened).
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long;
    /// so is one whose client stopped reading its response.
    pub idle_timeout: Duration,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised on HTTP/2.
    pub max_concurrent_streams: u32,
    /// After a shutdown signal, a connection that only waits for its client
    /// and moved no byte for this long is closed.
    pub stall_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 128,
            stall_grace: Duration::from_secs(1),
        }
    }
}

/// Largest HTTP/1 request head hyper buffers (its default is ~400 KiB):
/// a thousand stalled half-sent heads hold at most 64 MiB.
const MAX_HTTP1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header list (RFC 9113 §6.5.2), hyper's default.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Resets of streams not yet accepted before GOAWAY (HTTP/2 rapid reset).
const MAX_PENDING_RESETS: usize = 20;

/// Where the server is in its life; every connection task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Stop taking requests, finish the ones in flight.
    Draining,
    /// The shutdown bound passed: close now.
    Closing,
}

/// Request and response bodies as poem and hyper exchange them.
type Boxed = BoxBody<Bytes, io::Error>;

/// Serves `endpoint` on `listener` until `signal` resolves, then stops
/// accepting, lets in-flight requests finish within `shutdown_timeout`
/// (closing stalled connections after their grace), and closes the rest.
///
/// # Errors
/// When the listener's address cannot be read; accept errors are handled
/// in the loop (see [`accept`]).
pub async fn serve(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, Response>,
    limits: ConnectionLimits,
    signal: impl Future<Output = ()> + Send,
    shutdown_timeout: Duration,
) -> io::Result<()> {
    let endpoint: Arc<BoxEndpoint<'static, Response>> = Arc::new(endpoint);
    let local = listener.local_addr()?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut connections = JoinSet::new();
    let mut accept_errors = accept::AcceptErrors::default();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    accept_errors.recovered();
                    connections.spawn(connection(
                        stream,
                        local,
                        remote,
                        endpoint.clone(),
                        limits,
                        phase_rx.clone(),
                    ));
                }
                Err(e) => {
                    let pause = accept_errors.failed(&e);
                    tokio::select! {
                        () = &mut signal => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let _ = phase_tx.send(Phase::Draining);
    tracing::info!(
        connections = connections.len(),
        "stopped accepting; finishing in-flight requests"
    );
    let drained = tokio::time::timeout(shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown bound reached; closing the remaining connections"
        );
        let _ = phase_tx.send(Phase::Closing);
        // Each task closes as soon as it sees Closing; abort the stragglers.
        if tokio::time::timeout(Duration::from_secs(1), async {
            while connections.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            connections.abort_all();
        }
    }
    Ok(())
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<BoxEndpoint<'static, Response>>,
    limits: ConnectionLimits,
    mut phase: watch::Receiver<Phase>,
) {
    // Small responses should not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            let activity = activity.clone();
            async move { Ok::<_, Infallible>(handle(&endpoint, &activity, req, local, remote).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        // Enforced by `Activity` from the head's first byte: hyper's timer
        // would also run while a keep-alive connection is merely idle.
        .header_read_timeout(None)
        .max_buf_size(MAX_HTTP1_BUFFER);
    builder
        .http2()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_header_list_size(MAX_HEADER_LIST);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    let mut draining = false;
    loop {
        match *phase.borrow_and_update() {
            Phase::Serving => {}
            Phase::Draining if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            Phase::Draining => {}
            Phase::Closing => return,
        }
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = phase.changed() => {
                if changed.is_err() {
                    // The server is gone.
                    return;
                }
            }
            verdict = activity.watch(&limits, draining) => match verdict {
                Verdict::HeaderTimeout => {
                    tracing::debug!(%remote, "request headers not complete in time; closing");
                    return;
                }
                Verdict::Stalled => {
                    tracing::debug!(%remote, "connection stalled; closing");
                    return;
                }
                Verdict::Idle => {
                    // Closes an idle HTTP/1 connection at once; sends GOAWAY on HTTP/2.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            },
        }
    }
}

/// One request: tracked, handed to the poem endpoint, its response tracked
/// until its last byte was taken.
async fn handle(
    endpoint: &BoxEndpoint<'static, Response>,
    activity: &Arc<Activity>,
    req: hyper::Request<Incoming>,
    local: SocketAddr,
    remote: SocketAddr,
) -> hyper::Response<Boxed> {
    let mut in_flight = activity.request_started(req.version() == hyper::Version::HTTP_2);
    let mut req = poem::Request::from((
        req,
        LocalAddr(Addr::SocketAddr(local)),
        RemoteAddr(Addr::SocketAddr(remote)),
        poem::http::uri::Scheme::HTTP,
    ));
    let body: Boxed = req.take_body().into();
    req.set_body(poem::Body::from(BoxBody::new(activity::RequestBody::new(
        body,
        activity.clone(),
    ))));
    let resp = endpoint.get_response(req).await;
    in_flight.responding();
    let resp: hyper::Response<Boxed> = resp.into();
    resp.map(|body| BoxBody::new(activity::ResponseBody::new(body, in_flight)))
}
