//! What one connection is doing, seen from its socket and its requests:
//! the facts its bounds are decided on.
//!
//! [`Watched`] wraps the socket and notes every byte moved, whether the
//! connection speaks HTTP/2 (its preface), and when the first byte of a new
//! HTTP/1 request head arrived on a connection with nothing in flight.
//! [`InFlight`] spans a request from the moment hyper hands it over until
//! its response's last byte was taken (or it was dropped); [`RequestBody`]
//! notes when the endpoint waits for body bytes that have not come.
//! [`Activity::watch`] turns these facts into a [`Verdict`] when a bound
//! passes. Only atomics and one `Notify`: nothing is locked on the I/O path.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::protocol_errors::Rewriter;
use super::{Boxed, ConnectionLimits};

/// "No time": `head_started` when no head is arriving.
const NONE: u64 = u64::MAX;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// An HTTP/1 request head did not complete within the header timeout.
    HeaderTimeout,
    /// Nothing in flight for the idle timeout: close gracefully.
    Idle,
    /// Every request only waits for the client (its body, or its reading of
    /// the response) and no byte moved: during shutdown for the stall
    /// grace, otherwise (response not read) for the idle timeout.
    Stalled,
}

/// The shared record of one connection. Times are milliseconds since the
/// connection was accepted.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Requests handed over and whose response is not fully taken.
    requests: AtomicUsize,
    /// Of those, the ones whose response exists (being written).
    responding: AtomicUsize,
    /// Request bodies the endpoint is waiting on.
    waiting_bodies: AtomicUsize,
    last_progress: AtomicU64,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    http2: AtomicBool,
    wake: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            requests: AtomicUsize::new(0),
            responding: AtomicUsize::new(0),
            waiting_bodies: AtomicUsize::new(0),
            last_progress: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's head is due from the moment the
            // connection is open (API.md: headers within 10 s), so a
            // connection that never sends a byte is closed by the header
            // bound, not kept for the idle one.
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    pub(super) fn progressed(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    /// Bytes arrived. On an HTTP/1 connection with nothing in flight they
    /// start a request head, and the header clock with it.
    fn received(&self, http2: bool) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
            return;
        }
        if self.requests.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The watcher may be sleeping until the (later) idle deadline.
            self.wake.notify_one();
        }
    }

    /// hyper handed a request over: its head is complete.
    pub(super) fn request_started(self: &Arc<Self>, http2: bool) -> InFlight {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        InFlight {
            activity: self.clone(),
            responding: false,
        }
    }

    /// Waits until a bound passes, and says which. `draining`: the server
    /// (or the idle rule) asked the connection to finish.
    pub(super) async fn watch(&self, limits: &ConnectionLimits, draining: bool) -> Verdict {
        loop {
            let next = match self.verdict(self.now(), limits, draining) {
                Ok(next) => next,
                Err(verdict) => return verdict,
            };
            let at = self.start + Duration::from_millis(next);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// `Err(verdict)` when a bound has passed at `now`, else `Ok(when)` to
    /// look again.
    fn verdict(&self, now: u64, limits: &ConnectionLimits, draining: bool) -> Result<u64, Verdict> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE / 4);
        let requests = self.requests.load(Ordering::Acquire);
        let responding = self.responding.load(Ordering::Acquire);
        let waiting = self.waiting_bodies.load(Ordering::Acquire);
        let quiet_for = now.saturating_sub(self.last_progress.load(Ordering::Relaxed));
        // Every request (if any) waits only for the client.
        let only_client = requests <= responding.saturating_add(waiting);
        if draining {
            let grace = ms(limits.stall_grace);
            if only_client && quiet_for >= grace {
                return Err(Verdict::Stalled);
            }
            return Ok(now + (grace / 4).clamp(10, 250));
        }
        let idle = ms(limits.idle_timeout);
        if requests == 0 {
            let head = self.head_started.load(Ordering::Acquire);
            if head != NONE && !self.http2.load(Ordering::Relaxed) {
                let deadline = head.saturating_add(ms(limits.header_timeout));
                return if now >= deadline {
                    Err(Verdict::HeaderTimeout)
                } else {
                    Ok(deadline)
                };
            }
            let deadline = self.idle_since.load(Ordering::Acquire).saturating_add(idle);
            return if now >= deadline {
                Err(Verdict::Idle)
            } else {
                Ok(deadline)
            };
        }
        if requests <= responding {
            // Every response is ready and the client is not taking it.
            let deadline = now.saturating_sub(quiet_for).saturating_add(idle);
            return if now >= deadline {
                Err(Verdict::Stalled)
            } else {
                Ok(deadline)
            };
        }
        // Work in progress: its bounds (body timeout, request deadline) are
        // the endpoint's. Look again later.
        Ok(now + idle)
    }
}

/// A request from hand-over to its response's last byte.
#[derive(Debug)]
pub(super) struct InFlight {
    activity: Arc<Activity>,
    responding: bool,
}

impl InFlight {
    /// The endpoint produced the response; it is being written now.
    pub(super) fn responding(&mut self) {
        if !self.responding {
            self.responding = true;
            // The clock of an unread response starts now, not at the last byte read.
            self.activity.progressed();
            self.activity.responding.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if self.responding {
            a.responding.fetch_sub(1, Ordering::AcqRel);
        }
        if a.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now(), Ordering::Release);
        }
    }
}

/// A request body that tells its connection when the endpoint waits for
/// bytes the client has not sent.
pub(super) struct RequestBody {
    inner: Boxed,
    activity: Arc<Activity>,
    waiting: bool,
}

impl RequestBody {
    pub(super) fn new(inner: Boxed, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            waiting: false,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            if waiting {
                self.activity.waiting_bodies.fetch_add(1, Ordering::AcqRel);
            } else {
                self.activity.waiting_bodies.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.set_waiting(polled.is_pending());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

/// A response body that keeps its request in flight until its last frame
/// was taken (or hyper dropped it).
pub(super) struct ResponseBody {
    inner: Boxed,
    in_flight: Option<InFlight>,
}

impl ResponseBody {
    pub(super) fn new(inner: Boxed, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if polled.is_none() {
            this.in_flight = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, watched: bytes moved, protocol, request heads; and hyper's
/// own error responses replaced by the envelope ([`Rewriter`]).
pub(super) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Bytes of [`PREFACE`] matched so far; `None` once decided.
    preface: Option<usize>,
    http2: bool,
    rewriter: Rewriter,
}

impl<T> Watched<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            preface: Some(0),
            http2: false,
            rewriter: Rewriter::default(),
        }
    }

    /// Follows the first bytes of the connection against the HTTP/2 preface.
    fn sniff(&mut self, bytes: &[u8]) {
        let Some(mut matched) = self.preface else {
            return;
        };
        for &b in bytes {
            if PREFACE.get(matched) == Some(&b) {
                matched += 1;
                if matched == PREFACE.len() {
                    self.http2 = true;
                    self.preface = None;
                    return;
                }
            } else {
                self.preface = None;
                return;
            }
        }
        self.preface = Some(matched);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            this.sniff(fresh);
            this.activity.received(this.http2);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this
            .rewriter
            .poll_drain(&mut this.inner, cx, || this.activity.progressed()))?;
        if !this.http2 {
            if let Some(consumed) = this.rewriter.intercept(buf) {
                // Written from the queue on this and the next polls (flush, shutdown).
                if let Poll::Ready(Err(e)) = this
                    .rewriter
                    .poll_drain(&mut this.inner, cx, || this.activity.progressed())
                {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(consumed));
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.activity.progressed();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this
            .rewriter
            .poll_drain(&mut this.inner, cx, || this.activity.progressed()))?;
        if !this.http2 {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if let Some(consumed) = this.rewriter.intercept(first) {
                    if let Poll::Ready(Err(e)) =
                        this.rewriter
                            .poll_drain(&mut this.inner, cx, || this.activity.progressed())
                    {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(consumed));
                }
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.activity.progressed();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this
            .rewriter
            .poll_drain(&mut this.inner, cx, || this.activity.progressed()))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this
            .rewriter
            .poll_drain(&mut this.inner, cx, || this.activity.progressed()))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(60_000),
            max_concurrent_streams: 128,
            stall_grace: Duration::from_millis(1_000),
        }
    }

    #[tokio::test]
    async fn an_idle_connection_gets_the_idle_bound_and_a_started_head_the_header_bound() {
        let a = Arc::new(Activity::new());
        let l = limits();
        // A new connection owes its first head from the start.
        assert_eq!(a.verdict(0, &l, false), Ok(10_000));
        assert_eq!(a.verdict(10_000, &l, false), Err(Verdict::HeaderTimeout));
        // Between requests it is idle.
        drop(a.request_started(false));
        a.idle_since.store(0, Ordering::Release);
        assert_eq!(a.verdict(0, &l, false), Ok(60_000));
        assert_eq!(a.verdict(60_000, &l, false), Err(Verdict::Idle));
        a.head_started.store(5_000, Ordering::Release);
        assert_eq!(a.verdict(6_000, &l, false), Ok(15_000));
        assert_eq!(a.verdict(15_000, &l, false), Err(Verdict::HeaderTimeout));
        // On HTTP/2 bytes between requests are frames, not a head.
        a.http2.store(true, Ordering::Relaxed);
        assert_eq!(a.verdict(15_000, &l, false), Ok(60_000));
    }

    #[tokio::test]
    async fn work_in_flight_is_never_cut_but_an_unread_response_is() {
        let a = Arc::new(Activity::new());
        let l = limits();
        let mut req = a.request_started(false);
        assert_eq!(
            a.verdict(100_000, &l, false),
            Ok(160_000),
            "a request doing work"
        );
        req.responding();
        a.last_progress.store(100_000, Ordering::Relaxed);
        assert_eq!(a.verdict(120_000, &l, false), Ok(160_000));
        assert_eq!(a.verdict(160_000, &l, false), Err(Verdict::Stalled));
        drop(req);
        assert_eq!(a.requests.load(Ordering::Acquire), 0);
        assert_eq!(a.responding.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn at_shutdown_only_connections_waiting_on_their_client_are_stalled() {
        let a = Arc::new(Activity::new());
        let l = limits();
        let req = a.request_started(false);
        a.last_progress.store(1_000, Ordering::Relaxed);
        // The endpoint is working (not waiting for the body): keep it.
        assert!(a.verdict(30_000, &l, true).is_ok());
        a.waiting_bodies.fetch_add(1, Ordering::AcqRel);
        assert!(a.verdict(1_500, &l, true).is_ok(), "within the grace");
        assert_eq!(a.verdict(2_000, &l, true), Err(Verdict::Stalled));
        drop(req);
    }

    #[test]
    fn the_http2_preface_is_recognised_across_reads() {
        let mut w = Watched::new((), Arc::new(Activity::new()));
        w.sniff(b"PRI * HTTP");
        assert!(!w.http2);
        w.sniff(b"/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
        assert!(w.http2);
        let mut w = Watched::new((), Arc::new(Activity::new()));
        w.sniff(b"POST / HTTP/1.1\r\n");
        assert!(!w.http2 && w.preface.is_none());
    }
}
