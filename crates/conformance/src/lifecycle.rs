//! The data lifecycle's conformance cases (`weft_ports::lifecycle`, API.md
//! "Data lifecycle", `WEFT_IDEMPOTENCY_RETENTION`), run by every adapter
//! against a real database through the app's real drivers
//! (`weft_app::lifecycle::Lifecycle`).
//!
//! An adapter implements [`LifecycleTarget`] (its conformance target plus
//! the maintenance port, a second store on the same database, direct row
//! counts, and bulk rows written with SQL) and invokes
//! [`lifecycle_tests!`]. After every case the target must settle exactly as
//! after a conformance case (no leak, every invariant holding).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weft_app::idempotency::Idempotency;
use weft_app::lifecycle::{BatchPolicy, BatchReport, Lifecycle};
use weft_app::system::{DerivedTitles, V7Ids};
use weft_app::{App, AppConfig, Deps};
use weft_domain::{
    IdempotencyKey, MessageId, Order, RequestFingerprint, Retention, StoredResponse, ThreadId,
    Timestamp,
};
use weft_ports::{
    Clock, ExpiryObserver, Exported, IdempotencyRecord, Maintenance, Mode, PortError,
};

use crate::app::{render_message, render_thread, Outcomes};
use crate::cases::{
    all_message_ids, all_threads, begin, commit, create_thread_command, new_message, ok, params,
    seed_thread, ALICE, BOB,
};
use crate::fixtures::{ctx, NOW};
use crate::{scripts, ConformanceTarget};

/// Rows of one owner in each table, counted directly in storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// `threads` rows, live and archived.
    pub threads: u64,
    /// `messages` rows, live and archived.
    pub messages: u64,
    /// `idempotency` rows.
    pub idempotency: u64,
    /// `owners` rows (the thread sequence): 0 or 1.
    pub owners: u64,
}

/// An adapter under test for the lifecycle cases: its conformance target
/// plus what only the adapter can do.
#[async_trait]
pub trait LifecycleTarget: ConformanceTarget {
    /// The maintenance port of the store under test, sharing its pools (as
    /// the server's background expiry does).
    fn maintenance(&self) -> Arc<dyn Maintenance>;

    /// The maintenance port of a second store on the same database, with
    /// its own connections: what `weft purge` run beside `weft serve` has.
    async fn other_process(&self) -> Arc<dyn Maintenance>;

    /// The rows of `owner` in every table, counted directly.
    async fn rows_of(&self, owner: &str) -> RowCounts;

    /// Writes `n` messages of `text` into `owner`'s thread `thread` with
    /// one SQL statement, ids above the thread's newest (which then names
    /// the last). Archived at `deleted_at` when given (the thread's count
    /// unchanged), else live (the count raised by `n`). For bulk data.
    async fn bulk_messages(
        &self,
        owner: &str,
        thread: &ThreadId,
        n: u64,
        text: &str,
        deleted_at: Option<Timestamp>,
    );
}

/// The id prefix (all but the last 12 hex digits) of `n` bulk message ids
/// that all sort above `newest`: the top 80 bits of a fresh id above it,
/// plus one. Bulk ids are this prefix and a 12-digit counter from 1.
pub fn bulk_id_prefix(newest: Option<&MessageId>) -> String {
    let base = crate::fixtures::message_id_above(newest).value();
    format!("{:020x}", (base >> 48) + 1)
}

/// A clock the case sets by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `t`.
    pub fn at(t: Timestamp) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(t.unix_seconds())))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.unix_seconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(self.0.load(Ordering::SeqCst))
    }
}

/// Counts what the expiry reports, batch by batch.
#[derive(Debug, Default)]
struct Batches(Mutex<Vec<u64>>);

impl ExpiryObserver for Batches {
    fn expired(&self, records: u64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(records);
    }
}

impl Batches {
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn app_with_clock(target: &dyn LifecycleTarget, clock: Arc<dyn Clock>) -> App {
    App::new(
        Deps {
            uow: target.factory(),
            clock,
            ids: Arc::new(V7Ids::default()),
            titles: Arc::new(DerivedTitles),
            observer: Arc::new(Outcomes::default()),
        },
        AppConfig::default(),
    )
}

fn policy(batch_size: u32, pause_ms: u64) -> BatchPolicy {
    BatchPolicy {
        batch_size,
        pause: Duration::from_millis(pause_ms),
        ..BatchPolicy::default()
    }
}

fn key(k: &str) -> Idempotency {
    Idempotency {
        key: ok(
            IdempotencyKey::parse(k).map_err(PortError::unexpected),
            "key",
        ),
        fingerprint: RequestFingerprint::new("POST", "/v1/threads", None),
    }
}

fn plus(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(t.unix_seconds() + secs)
}

/// Creates a thread of `user` through the app under `k`; the response body
/// is the thread's id (a replay returns the first one's).
async fn create_with_key(app: &App, user: &str, k: &str) -> String {
    match app
        .create_thread_idempotent(
            &ctx(user),
            create_thread_command(0),
            key(k),
            render_thread(),
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) => panic!("idempotent create failed: {e:?}"),
    }
}

/// A record of `user` under `key`, created at `at`, written through the port.
async fn record(target: &dyn LifecycleTarget, user: &str, keys: &[String], at: Timestamp) {
    let mut uow = begin(&*target.factory(), user, Mode::ReadWrite).await;
    for k in keys {
        let rec = IdempotencyRecord {
            key: ok(
                IdempotencyKey::parse(k).map_err(PortError::unexpected),
                "key",
            ),
            fingerprint: RequestFingerprint::new("POST", "/v1/threads", None),
            response: StoredResponse { body: k.clone() },
            created_at: at,
        };
        ok(uow.insert_idempotency(&rec, at).await, "insert_idempotency");
    }
    commit(uow).await;
}

/// A record is replayed right up to the last second of its 24 h window and
/// deleted by the expiry the second after — never before; records of every
/// user expire, in batches of at most the batch size, each counted; a
/// longer retention keeps them longer.
pub async fn idempotency_records_are_replayed_to_the_end_of_their_window_and_expired_after(
    target: Arc<dyn LifecycleTarget>,
) {
    let clock = ManualClock::at(NOW);
    let app = app_with_clock(&*target, clock.clone());
    let lifecycle = Lifecycle::new(target.maintenance(), clock.clone(), policy(10, 1));
    let batches = Batches::default();

    let first = create_with_key(&app, ALICE, "k").await;
    let old_keys: Vec<String> = (0..25).map(|i| format!("old-{i}")).collect();
    record(&*target, BOB, &old_keys, plus(NOW, -10 * 86_400)).await;

    // The last second of alice's window: bob's old records go, hers stays.
    clock.set(plus(NOW, 86_400));
    let expired = ok(
        lifecycle
            .expire_idempotency(Retention::DEFAULT, &batches)
            .await
            .map_err(PortError::unexpected),
        "expiry",
    );
    assert_eq!(expired, 25, "every record past its retention goes");
    let sizes = batches.take();
    assert!(
        sizes.iter().all(|n| *n <= 10),
        "batches of at most 10: {sizes:?}"
    );
    assert_eq!(
        sizes.iter().sum::<u64>(),
        25,
        "every batch counted: {sizes:?}"
    );
    assert!(
        sizes.len() >= 3,
        "25 records take 3 batches of 10: {sizes:?}"
    );
    assert_eq!(target.rows_of(BOB).await.idempotency, 0);
    assert_eq!(target.rows_of(ALICE).await.idempotency, 1);
    assert_eq!(
        create_with_key(&app, ALICE, "k").await,
        first,
        "replayed at the last second of the window"
    );
    assert_eq!(all_threads(&*target.factory(), ALICE).await.len(), 1);

    // One second later it is past the window and past the retention.
    clock.set(plus(NOW, 86_401));
    let expired = ok(
        lifecycle
            .expire_idempotency(Retention::DEFAULT, &batches)
            .await
            .map_err(PortError::unexpected),
        "expiry",
    );
    assert_eq!(expired, 1);
    assert_eq!(batches.take(), vec![1]);
    assert_eq!(target.rows_of(ALICE).await.idempotency, 0);
    let again = create_with_key(&app, ALICE, "k").await;
    assert_ne!(again, first, "an expired key creates afresh");

    // A longer retention keeps a record past the window, until it ends.
    let thirty_days = ok(
        Retention::from_secs(30 * 86_400).map_err(PortError::unexpected),
        "retention",
    );
    let created = plus(NOW, 86_401);
    clock.set(plus(created, 86_401));
    let expired = ok(
        lifecycle
            .expire_idempotency(thirty_days, &batches)
            .await
            .map_err(PortError::unexpected),
        "expiry",
    );
    assert_eq!(expired, 0, "kept for 30 days");
    clock.set(plus(created, 30 * 86_400 + 1));
    let expired = ok(
        lifecycle
            .expire_idempotency(thirty_days, &batches)
            .await
            .map_err(PortError::unexpected),
        "expiry",
    );
    assert_eq!(expired, 1, "gone after 30 days");
}

/// Purge removes exactly the threads archived before the cut-off (with all
/// their messages) and the messages archived before it from live threads,
/// of every user, in bounded batches; newer archives, live data and every
/// id sequence stay. A purged object's id is no cursor any more (400), as
/// an unknown id; an archived one not yet purged still is.
pub async fn purge_removes_what_was_archived_before_the_cutoff_and_nothing_else(
    target: Arc<dyn LifecycleTarget>,
) {
    let f = target.factory();
    let (live, msgs) = seed_thread(&*f, ALICE, 4).await;
    ok(
        scripts::delete_message(&*f, &ctx(ALICE), &live.id, &msgs[1].id, plus(NOW, -100)).await,
        "delete old",
    );
    ok(
        scripts::delete_message(&*f, &ctx(ALICE), &live.id, &msgs[2].id, plus(NOW, -10)).await,
        "delete recent",
    );
    let (old, _) = seed_thread(&*f, ALICE, 3).await;
    let (recent, _) = seed_thread(&*f, ALICE, 2).await;
    let (bobs, _) = seed_thread(&*f, BOB, 2).await;
    for (user, id, at) in [
        (ALICE, &old.id, plus(NOW, -100)),
        (ALICE, &recent.id, plus(NOW, -10)),
        (BOB, &bobs.id, plus(NOW, -100)),
    ] {
        let mut uow = begin(&*f, user, Mode::ReadWrite).await;
        ok(uow.archive_thread(id, at).await, "archive thread");
        commit(uow).await;
    }

    let lifecycle = Lifecycle::new(target.maintenance(), ManualClock::at(NOW), policy(2, 1));
    let mut sizes = Vec::new();
    let report = ok(
        lifecycle
            .purge(Duration::from_secs(50), &mut |b: &BatchReport| {
                sizes.push(b.rows)
            })
            .await
            .map_err(PortError::unexpected),
        "purge",
    );
    assert_eq!(report.deleted_before, plus(NOW, -50));
    assert_eq!(report.threads, 2, "alice's and bob's old threads");
    assert_eq!(
        report.messages,
        3 + 2 + 1,
        "their messages and the old deleted one"
    );
    assert!(
        sizes.iter().all(|n| *n <= 4),
        "at most 2 threads + 2 messages a batch: {sizes:?}"
    );
    assert!(report.batches >= 3, "{report:?}");

    assert_eq!(
        target.rows_of(ALICE).await,
        RowCounts {
            threads: 2,
            messages: 3 + 2,
            idempotency: 0,
            owners: 1
        },
        "the live thread with 3 messages (one recently deleted) and the recent archive stay"
    );
    assert_eq!(
        target.rows_of(BOB).await,
        RowCounts {
            owners: 1,
            ..RowCounts::default()
        },
        "bob's thread sequence stays"
    );
    let left = all_message_ids(&*f, ALICE, &live.id).await;
    assert_eq!(left, vec![msgs[0].id.clone(), msgs[3].id.clone()]);
    let read = ok(
        crate::cases::read_thread(&*f, ALICE, &live.id).await,
        "read",
    );
    assert_eq!(read.message_count, 2, "the live count is untouched");

    // Cursors: purged → invalid, archived but not purged → valid.
    let mut uow = begin(&*f, ALICE, Mode::ReadOnly).await;
    let purged_msg = uow
        .list_messages(
            &live.id,
            &params(10, Order::Asc, Some(msgs[1].id.clone()), None),
        )
        .await;
    assert!(
        matches!(purged_msg, Err(PortError::InvalidCursor)),
        "{purged_msg:?}"
    );
    commit(uow).await;
    let mut uow = begin(&*f, ALICE, Mode::ReadOnly).await;
    let archived_msg = uow
        .list_messages(
            &live.id,
            &params(10, Order::Asc, Some(msgs[2].id.clone()), None),
        )
        .await;
    assert_eq!(
        ok(archived_msg, "an archived cursor").items.len(),
        1,
        "paging goes on after an archived, unpurged message"
    );
    commit(uow).await;
    let mut uow = begin(&*f, ALICE, Mode::ReadOnly).await;
    let purged_thread = uow
        .list_threads(&params(10, Order::Asc, Some(old.id.clone()), None))
        .await;
    assert!(
        matches!(purged_thread, Err(PortError::InvalidCursor)),
        "{purged_thread:?}"
    );
    commit(uow).await;

    let again = ok(
        lifecycle
            .purge(Duration::from_secs(50), &mut |_| {})
            .await
            .map_err(PortError::unexpected),
        "second purge",
    );
    assert_eq!((again.threads, again.messages, again.batches), (0, 0, 0));
}

/// Erasing a user removes every row of theirs from every table — live and
/// archived threads and messages, idempotency records, and last the
/// thread sequence — in batches, and nothing of anyone else; a second
/// erase finds nothing; the user can start again, with ids after the old
/// ones, and an old id is no cursor.
pub async fn erasing_a_user_leaves_no_row_of_theirs_and_every_row_of_others(
    target: Arc<dyn LifecycleTarget>,
) {
    let f = target.factory();
    let app = app_with_clock(&*target, ManualClock::at(NOW));
    for user in [ALICE, BOB] {
        let (t, msgs) = seed_thread(&*f, user, 5).await;
        ok(
            scripts::delete_message(&*f, &ctx(user), &t.id, &msgs[0].id, NOW).await,
            "delete",
        );
        let (archived, _) = seed_thread(&*f, user, 3).await;
        let mut uow = begin(&*f, user, Mode::ReadWrite).await;
        ok(uow.archive_thread(&archived.id, NOW).await, "archive");
        commit(uow).await;
        for i in 0..3 {
            create_with_key(&app, user, &format!("key-{i}")).await;
        }
        let (empty, _) = seed_thread(&*f, user, 0).await;
        target
            .bulk_messages(user, &empty.id, 120, "bulk", None)
            .await;
    }
    let before = target.rows_of(ALICE).await;
    assert_eq!(
        before,
        RowCounts {
            threads: 1 + 1 + 3 + 1,
            messages: 5 + 3 + 120,
            idempotency: 3,
            owners: 1
        }
    );
    let bobs = target.rows_of(BOB).await;
    let bobs_threads = all_threads(&*f, BOB).await;
    let old_ids: Vec<ThreadId> = all_threads(&*f, ALICE)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();

    let lifecycle = Lifecycle::new(target.maintenance(), ManualClock::at(NOW), policy(50, 1));
    let alice = ok(
        weft_domain::UserId::parse(ALICE).map_err(PortError::unexpected),
        "user",
    );
    let mut sizes = Vec::new();
    let report = ok(
        lifecycle
            .erase_user(&alice, &mut |b: &BatchReport| sizes.push(b.rows))
            .await
            .map_err(PortError::unexpected),
        "erase",
    );
    assert_eq!(
        (
            report.threads,
            report.messages,
            report.idempotency_records,
            report.owner_rows
        ),
        (before.threads, before.messages, before.idempotency, 1),
        "{report:?}"
    );
    assert!(
        sizes.iter().all(|n| *n <= 50),
        "batches of at most 50: {sizes:?}"
    );
    assert!(report.batches >= 5, "{report:?}");
    assert_eq!(
        target.rows_of(ALICE).await,
        RowCounts::default(),
        "nothing of alice is left"
    );
    assert_eq!(target.rows_of(BOB).await, bobs, "bob keeps every row");
    assert_eq!(
        all_threads(&*f, BOB).await,
        bobs_threads,
        "and sees them unchanged"
    );

    let again = ok(
        lifecycle
            .erase_user(&alice, &mut |_| {})
            .await
            .map_err(PortError::unexpected),
        "second erase",
    );
    assert_eq!(
        again,
        weft_app::lifecycle::EraseReport::default(),
        "idempotent"
    );

    // Alice starts again: ids after the erased ones, old ids name nothing.
    let (fresh, _) = seed_thread(&*f, ALICE, 1).await;
    assert!(
        old_ids.iter().all(|old| fresh.id > *old),
        "new ids sort after the erased ones"
    );
    let mut uow = begin(&*f, ALICE, Mode::ReadOnly).await;
    let stale = uow
        .list_threads(&params(10, Order::Asc, Some(old_ids[0].clone()), None))
        .await;
    assert!(matches!(stale, Err(PortError::InvalidCursor)), "{stale:?}");
    commit(uow).await;
}

/// An export hands out every live thread of the user, oldest first, each
/// followed by its live messages oldest first, across several pages — as
/// one snapshot: what other clients change once it has begun is not in it.
pub async fn an_export_is_every_live_thread_and_its_live_messages_from_one_snapshot(
    target: Arc<dyn LifecycleTarget>,
) {
    let f = target.factory();
    let (a, a_msgs) = seed_thread(&*f, ALICE, 3).await;
    ok(
        scripts::delete_message(&*f, &ctx(ALICE), &a.id, &a_msgs[1].id, NOW).await,
        "delete",
    );
    let (archived, _) = seed_thread(&*f, ALICE, 2).await;
    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    ok(uow.archive_thread(&archived.id, NOW).await, "archive");
    commit(uow).await;
    let (big, _) = seed_thread(&*f, ALICE, 0).await;
    // More than two pages of any adapter's export page size (200).
    target
        .bulk_messages(ALICE, &big.id, 450, "bulk", None)
        .await;
    let (empty, _) = seed_thread(&*f, ALICE, 0).await;
    seed_thread(&*f, BOB, 2).await;

    // What the API shows before anything changes: the expected export.
    let mut expected = Vec::new();
    for t in all_threads(&*f, ALICE).await {
        let ids = all_message_ids(&*f, ALICE, &t.id).await;
        expected.push((t.id.clone(), t.message_count, ids));
    }
    assert_eq!(expected.len(), 3);

    let alice = ok(
        weft_domain::UserId::parse(ALICE).map_err(PortError::unexpected),
        "user",
    );
    let mut reader = ok(
        target.maintenance().export_user(&alice).await,
        "open export",
    );
    let mut items = ok(reader.next_batch().await, "first batch");
    assert!(!items.is_empty());

    // Meanwhile: a new thread, a new message, a deleted message, an archive.
    let app = app_with_clock(&*target, ManualClock::at(NOW));
    seed_thread(&*f, ALICE, 1).await;
    let added = app
        .create_message(
            &ctx(ALICE),
            a.id.clone(),
            new_message("late"),
            render_message(),
        )
        .await;
    assert!(added.is_ok(), "{added:?}");
    let gone = &expected[1].2[7];
    ok(
        scripts::delete_message(&*f, &ctx(ALICE), &big.id, gone, NOW).await,
        "delete during export",
    );
    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    ok(
        uow.archive_thread(&empty.id, NOW).await,
        "archive during export",
    );
    commit(uow).await;

    let mut batches = 1;
    loop {
        let batch = ok(reader.next_batch().await, "batch");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 200, "a page at most: {}", batch.len());
        batches += 1;
        items.extend(batch);
    }
    ok(reader.finish().await, "finish");
    assert!(
        batches >= 5,
        "450 messages come in several pages ({batches} batches)"
    );

    let mut got: Vec<(ThreadId, u64, Vec<MessageId>)> = Vec::new();
    for item in items {
        match item {
            Exported::Thread(t) => got.push((t.id, t.message_count, Vec::new())),
            Exported::Message(m) => match got.last_mut() {
                Some((thread, _, ids)) if *thread == m.thread_id => ids.push(m.id),
                other => panic!("message {} of {} after {other:?}", m.id, m.thread_id),
            },
        }
    }
    assert_eq!(got, expected, "the export is the snapshot it began with");

    // A second export sees the changes.
    let lifecycle = Lifecycle::new(target.maintenance(), ManualClock::at(NOW), policy(10, 1));
    let threads = AtomicU64::new(0);
    let report = ok(
        lifecycle
            .export_user(&alice, &mut |item| {
                if let Exported::Thread(_) = item {
                    threads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
            .await
            .map_err(PortError::unexpected),
        "second export",
    );
    assert_eq!(report.threads, 3, "a new thread in, an archived one out");
    assert_eq!(report.messages, 2 + 1 + 449 + 1);
    assert_eq!(threads.load(Ordering::Relaxed), 3);
}

/// A purge of many archived messages (100,000 by default: half in a live
/// thread, half in an archived thread), run from a second store as `weft
/// purge` runs beside `weft serve`, while writers keep appending to other
/// threads: every writer gets through, and none waits through more than
/// one whole batch. Prints the batch time and the worst writer wait.
pub async fn a_purge_never_holds_a_writer_through_more_than_one_batch(
    target: Arc<dyn LifecycleTarget>,
) {
    const ROWS: u64 = 100_000;
    const BATCH: u32 = 5_000;
    const WRITERS: usize = 4;
    const PAUSE_MS: u64 = 200;
    let f = target.factory();
    let (live, _) = seed_thread(&*f, ALICE, 1).await;
    target
        .bulk_messages(
            ALICE,
            &live.id,
            ROWS / 2,
            "archived",
            Some(plus(NOW, -3600)),
        )
        .await;
    let (gone, _) = seed_thread(&*f, ALICE, 0).await;
    target
        .bulk_messages(ALICE, &gone.id, ROWS / 2, "doomed", None)
        .await;
    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    ok(
        uow.archive_thread(&gone.id, plus(NOW, -3600)).await,
        "archive",
    );
    commit(uow).await;
    let mut threads = Vec::new();
    for _ in 0..WRITERS {
        threads.push(seed_thread(&*f, BOB, 0).await.0.id);
    }

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = crate::app::app(target.factory(), Arc::new(Outcomes::default()));
    let mut writers = Vec::new();
    for thread in threads {
        let (app, done) = (app.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut waits: Vec<(Instant, Instant)> = Vec::new();
            while !done.load(Ordering::SeqCst) && waits.len() < 100_000 {
                let start = Instant::now();
                let r = app
                    .create_message(
                        &ctx(BOB),
                        thread.clone(),
                        new_message("w"),
                        render_message(),
                    )
                    .await;
                assert!(r.is_ok(), "a writer failed during the purge: {r:?}");
                waits.push((start, Instant::now()));
            }
            waits
        }));
    }

    let other = target.other_process().await;
    let lifecycle = Lifecycle::new(other, ManualClock::at(NOW), policy(BATCH, PAUSE_MS));
    let mut batches: Vec<BatchReport> = Vec::new();
    let started = Instant::now();
    let purge = tokio::time::timeout(
        Duration::from_secs(300),
        lifecycle.purge(Duration::from_secs(60), &mut |b: &BatchReport| {
            batches.push(*b)
        }),
    )
    .await;
    let purge_took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let report = match purge {
        Ok(Ok(r)) => r,
        other => panic!("purge failed or took over 300 s: {other:?}"),
    };
    let mut waits = Vec::new();
    for w in writers {
        waits.extend(ok(w.await.map_err(PortError::unexpected), "writer"));
    }

    assert_eq!(report.messages, ROWS, "{report:?}");
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(
        batches.iter().all(|b| b.rows <= u64::from(BATCH) + 1),
        "every batch bounded"
    );
    assert!(batches.len() >= 20, "{} batches", batches.len());
    let during = waits
        .iter()
        .filter(|(s, e)| *s >= started && *e <= started + purge_took)
        .count();
    assert!(
        during >= batches.len(),
        "writers got through during the purge: {during} writes"
    );
    // A writer that waited through a whole batch, start to end, and more
    // (a second batch begun after it started and ended before it got in)
    // was overtaken: the lock was not handed over between batches.
    let mut worst_overlap = 0;
    let mut worst_wait = Duration::ZERO;
    for (s, e) in &waits {
        worst_wait = worst_wait.max(*e - *s);
        let whole = batches
            .iter()
            .filter(|b| b.started >= *s && b.started + b.took <= *e)
            .count();
        worst_overlap = worst_overlap.max(whole);
    }
    let longest = batches.iter().map(|b| b.took).max().unwrap_or_default();
    let mean = batches.iter().map(|b| b.took).sum::<Duration>() / batches.len().max(1) as u32;
    eprintln!(
        "purge of {ROWS} archived messages in {} batches of <= {BATCH} rows (pause {PAUSE_MS} ms): \
         {purge_took:?} in all; batch mean {mean:?}, longest {longest:?}; {} writes during it, \
         worst writer wait {worst_wait:?}, most whole batches inside one write {worst_overlap}",
        batches.len(),
        during,
    );
    assert!(
        worst_overlap <= 1,
        "a writer waited through {worst_overlap} whole batches (worst wait {worst_wait:?}, longest batch {longest:?})"
    );
}

/// Expands to one `#[tokio::test]` per lifecycle case, each on its own
/// target from `$make` (an `async fn() -> T` where `T: LifecycleTarget`),
/// settled afterwards like the conformance cases.
#[macro_export]
macro_rules! lifecycle_tests {
    ($make:path) => {
        $crate::lifecycle_tests!(@cases $make;
            idempotency_records_are_replayed_to_the_end_of_their_window_and_expired_after,
            purge_removes_what_was_archived_before_the_cutoff_and_nothing_else,
            erasing_a_user_leaves_no_row_of_theirs_and_every_row_of_others,
            an_export_is_every_live_thread_and_its_live_messages_from_one_snapshot,
            a_purge_never_holds_a_writer_through_more_than_one_batch,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        mod lifecycle {
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let target = ::std::sync::Arc::new($make().await);
                    let port: ::std::sync::Arc<dyn $crate::lifecycle::LifecycleTarget> =
                        ::std::sync::Arc::clone(&target) as _;
                    $crate::lifecycle::$case(port).await;
                    $crate::assert_settled(&*target, ::core::stringify!($case)).await;
                }
            )*
        }
    };
}
