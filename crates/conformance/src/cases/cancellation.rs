//! Cancellation (DESIGN.md unit-of-work rule 4): use cases cut at every
//! await point, one sweep helper for all of them, and a storm.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_app::{App, AppError};
use weft_domain::{MessageId, Thread, ThreadId};
use weft_ports::{PortError, UnitOfWorkFactory};

use super::*;
use crate::app;
use crate::assert_settled;
use crate::cancel::CancelAfterPolls;
use crate::fixtures::ctx;

/// The largest poll budget tried before a use case must have completed.
const MAX_POLLS: usize = 400;

/// Sweeps tried until one of them cut the use case at least once.
const SWEEPS: usize = 5;

/// What a use case run by [`sweep`] left, as seen after each attempt.
type Outcome = Option<Result<(), AppError>>;

/// One use case swept by [`sweep`]: how to start, run once, and check.
#[async_trait]
trait Swept: Send {
    /// Sets up a fresh sweep (a new thread, say).
    async fn prepare(&mut self, f: &dyn UnitOfWorkFactory);
    /// Runs the use case once, dropped after `polls` polls: `None` if it
    /// was cut before completing.
    async fn attempt(&mut self, app: &App, polls: usize) -> Outcome;
    /// Checks what storage holds after attempt `k` (nothing half-written),
    /// and answers whether the use case is done: it completed, or a cut
    /// that landed after its commit already did its work.
    async fn check(&mut self, f: &dyn UnitOfWorkFactory, k: usize, outcome: &Outcome) -> bool;
}

/// Runs `case` cut after its k-th poll for k = 1, 2, … until it is done:
/// after every attempt the target settles (no busy connection, nothing
/// idle in a transaction, every invariant holding) and the case's own
/// check holds. A sweep in which nothing was ever cut (every round trip
/// happened to be ready at once on a fast loopback) tested nothing, so it
/// is repeated, at most [`SWEEPS`] times.
async fn sweep(target: Target, what: &str, mut case: impl Swept) {
    let f = target.factory();
    let app = app::app(Arc::clone(&f), Arc::default());
    let mut cancelled = 0usize;
    'sweeps: for sweep in 1..=SWEEPS {
        case.prepare(&*f).await;
        for k in 1..=MAX_POLLS {
            let out = case.attempt(&app, k).await;
            assert_settled(&*target, &format!("{what} cancelled after poll {k}")).await;
            if out.is_none() {
                cancelled += 1;
            }
            if let Some(Err(e)) = &out {
                if !matches!(e, AppError::NotFound) {
                    panic!("{what} failed (not cancelled) at poll {k}: {e:?}");
                }
            }
            if case.check(&*f, k, &out).await {
                if cancelled == 0 && sweep < SWEEPS {
                    continue 'sweeps;
                }
                assert!(
                    cancelled > 0,
                    "{what}: the use case never awaited: the sweep tested nothing"
                );
                tracing::info!(polls = k, sweep, "{what} completed");
                return;
            }
        }
        panic!("{what} did not complete within {MAX_POLLS} polls");
    }
    panic!("{what}: no sweep cancelled anything");
}

/// Create message: after each attempt the message is there and counted, or
/// neither.
struct CreateMessage {
    thread: Option<Thread>,
    live: usize,
}

#[async_trait]
impl Swept for CreateMessage {
    async fn prepare(&mut self, f: &dyn UnitOfWorkFactory) {
        self.thread = Some(seed_thread(f, ALICE, 0).await.0);
        self.live = 0;
    }

    async fn attempt(&mut self, app: &App, polls: usize) -> Outcome {
        let t = self.thread.as_ref().map(|t| t.id.clone())?;
        let c = ctx(ALICE);
        CancelAfterPolls::new(
            app.create_message(
                &c,
                t,
                new_message(&format!("attempt {polls}")),
                app::render_message(),
            ),
            polls,
        )
        .await
        .map(|r| r.map(drop))
    }

    async fn check(&mut self, f: &dyn UnitOfWorkFactory, k: usize, outcome: &Outcome) -> bool {
        let Some(t) = self.thread.as_ref() else {
            return true;
        };
        let now_live = all_message_ids(f, ALICE, &t.id).await.len();
        assert!(
            now_live == self.live || now_live == self.live + 1,
            "poll {k}: {} messages became {now_live}",
            self.live
        );
        let landed = now_live == self.live + 1;
        self.live = now_live;
        let count = ok(read_thread(f, ALICE, &t.id).await, "read").message_count;
        assert_eq!(
            count as usize, self.live,
            "message_count after cancelling at poll {k}"
        );
        if matches!(outcome, Some(Ok(()))) {
            assert!(landed, "a completed create is visible");
            return true;
        }
        false
    }
}

/// Delete message: the message is gone and uncounted, or neither. (A cut
/// that lands after the COMMIT reached the server leaves the delete done;
/// the next attempt then answers NotFound.)
struct DeleteMessage {
    target: Option<(ThreadId, MessageId)>,
    live: usize,
}

#[async_trait]
impl Swept for DeleteMessage {
    async fn prepare(&mut self, f: &dyn UnitOfWorkFactory) {
        let (t, msgs) = seed_thread(f, ALICE, 1).await;
        self.target = msgs.first().map(|m| (t.id.clone(), m.id.clone()));
        self.live = 1;
    }

    async fn attempt(&mut self, app: &App, polls: usize) -> Outcome {
        let (t, m) = self.target.clone()?;
        let c = ctx(ALICE);
        CancelAfterPolls::new(app.delete_message(&c, t, m), polls).await
    }

    async fn check(&mut self, f: &dyn UnitOfWorkFactory, k: usize, outcome: &Outcome) -> bool {
        let Some((t, _)) = self.target.as_ref() else {
            return true;
        };
        let was_live = self.live;
        self.live = all_message_ids(f, ALICE, t).await.len();
        let count = ok(read_thread(f, ALICE, t).await, "read").message_count;
        assert_eq!(
            count as usize, self.live,
            "message_count after cancelling at poll {k}"
        );
        match outcome {
            Some(Ok(())) => {
                assert_eq!(
                    (was_live, self.live),
                    (1, 0),
                    "a completed delete removed the message"
                );
                true
            }
            Some(Err(AppError::NotFound)) => {
                assert_eq!(was_live, 0, "NotFound only once the delete is done");
                true
            }
            _ => false,
        }
    }
}

/// Create thread (with three messages): each attempt left a whole thread
/// with all its messages, or nothing.
struct CreateThread {
    threads: usize,
}

const SWEEPER: &str = "sweeper";

#[async_trait]
impl Swept for CreateThread {
    async fn prepare(&mut self, f: &dyn UnitOfWorkFactory) {
        self.threads = all_threads(f, SWEEPER).await.len();
    }

    async fn attempt(&mut self, app: &App, polls: usize) -> Outcome {
        let c = ctx(SWEEPER);
        CancelAfterPolls::new(
            app.create_thread(&c, create_thread_command(3), app::render_thread()),
            polls,
        )
        .await
        .map(|r| r.map(drop))
    }

    async fn check(&mut self, f: &dyn UnitOfWorkFactory, k: usize, outcome: &Outcome) -> bool {
        let all = all_threads(f, SWEEPER).await;
        assert!(
            all.len() == self.threads || all.len() == self.threads + 1,
            "poll {k}: {} threads became {}",
            self.threads,
            all.len()
        );
        let landed = all.len() == self.threads + 1;
        self.threads = all.len();
        for t in &all {
            assert_eq!(t.message_count, 3, "thread {} is whole (poll {k})", t.id);
            assert_eq!(
                all_message_ids(f, SWEEPER, &t.id).await.len(),
                3,
                "thread {} has all its messages",
                t.id
            );
        }
        if matches!(outcome, Some(Ok(()))) {
            assert!(landed, "a completed create is visible");
            return true;
        }
        false
    }
}

/// The app's create-message use case, cancelled after its k-th poll for
/// every k until it completes: after each cancellation nothing leaks and
/// nothing is half-written (the message is there and counted, or neither).
pub async fn create_message_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    let case = CreateMessage {
        thread: None,
        live: 0,
    };
    sweep(target, "create_message", case).await;
}

/// The app's delete-message use case, cancelled after its k-th poll for
/// every k until it completes: the message is gone and uncounted, or
/// neither.
pub async fn delete_message_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    let case = DeleteMessage {
        target: None,
        live: 0,
    };
    sweep(target, "delete_message", case).await;
}

/// The app's create-thread use case (with three messages), cancelled after
/// its k-th poll for every k until it completes: each attempt left a whole
/// thread with all its messages, or nothing.
pub async fn create_thread_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    sweep(target, "create_thread", CreateThread { threads: 0 }).await;
}

/// 1,000 app use cases at once (message creates and deletes on shared
/// threads, new threads with messages), a random third cancelled after a
/// random number of polls or at a random moment: afterwards nothing leaks
/// and every count is exact.
pub async fn a_cancel_storm_leaves_no_leak_and_exact_counts(target: Target) {
    let f = target.factory();
    let load = target.load();
    let app = app::app(Arc::clone(&f), Arc::default());
    let mut seeded = Vec::new();
    for _ in 0..8 {
        seeded.push(seed_thread(&*f, ALICE, 6).await);
    }
    let seeded = Arc::new(seeded);
    let mut tasks = Vec::with_capacity(load.storm_use_cases);
    for i in 0..load.storm_use_cases {
        let (app, seeded) = (app.clone(), Arc::clone(&seeded));
        // A third are cancelled: after a random number of polls (up to 40)
        // or at a random moment of the storm (up to 1 s in), whichever
        // comes first, so cancellations land on driver round trips, on pool
        // waits and between statements alike.
        let cancel_after = (fastrand::u8(0..3) == 0).then(|| {
            (
                fastrand::usize(1..=40),
                Duration::from_micros(fastrand::u64(0..=1_000_000)),
            )
        });
        let kind = fastrand::u8(0..4);
        let (t, msgs) = &seeded[fastrand::usize(0..seeded.len())];
        let (tid, victim) = (
            t.id.clone(),
            msgs[fastrand::usize(0..msgs.len())].id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = ctx(ALICE);
            let run = async {
                match kind {
                    0 | 1 => app
                        .create_message(
                            &c,
                            tid,
                            new_message(&format!("storm {i}")),
                            app::render_message(),
                        )
                        .await
                        .map(|_| ()),
                    2 => app.delete_message(&c, tid, victim).await,
                    _ => app
                        .create_thread(
                            &c,
                            create_thread_command(fastrand::usize(0..4)),
                            app::render_thread(),
                        )
                        .await
                        .map(|_| ()),
                }
            };
            match cancel_after {
                Some((polls, at)) => tokio::time::timeout(at, CancelAfterPolls::new(run, polls))
                    .await
                    .ok()
                    .flatten(),
                None => Some(run.await),
            }
        }));
    }
    let all = tokio::time::timeout(load.time_bound, futures::future::join_all(tasks)).await;
    let all = ok(
        all.map_err(PortError::unexpected),
        "the storm within its time bound",
    );
    let (mut done, mut cancelled) = (0usize, 0usize);
    for r in all {
        match ok(r.map_err(PortError::unexpected), "join") {
            None => cancelled += 1,
            Some(Ok(())) | Some(Err(AppError::NotFound)) => done += 1,
            Some(Err(e)) => panic!("a storm use case failed: {e:?}"),
        }
    }
    tracing::info!(done, cancelled, "cancel storm finished");
    assert!(
        cancelled > 0 && done > 0,
        "the storm both completed and cancelled use cases"
    );
    assert_settled(&*target, "after the cancel storm").await;
    for (t, _) in seeded.iter() {
        let got = ok(read_thread(&*f, ALICE, &t.id).await, "read");
        let live = all_message_ids(&*f, ALICE, &t.id).await.len();
        assert_eq!(
            got.message_count as usize, live,
            "message_count of {} after the storm",
            t.id
        );
    }
}
