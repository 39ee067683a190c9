//! Transactions: drop and rollback discard everything, read-only cannot
//! write, concurrent writers keep counts exact, serializable conflicts
//! complete through the app's retry.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use weft_domain::{
    IdempotencyKey, MetadataPatch, RequestFingerprint, Role, StoredResponse, ThreadPatch, Title,
};
use weft_ports::{IdempotencyRecord, Mode, PortError};

use super::*;
use crate::app;
use crate::assert_settled;
use crate::fixtures::{ctx, message, metadata, thread, NOW};

async fn write_everything(uow: &mut Box<dyn UnitOfWork>, existing: &Thread, fresh: &Thread) {
    ok(uow.lock_thread_sequence().await, "lock_thread_sequence");
    ok(uow.insert_thread(fresh).await, "insert_thread");
    let m = message(&existing.id, Role::User, "never committed", at(3));
    ok(uow.append_message(&m).await, "append_message");
    ok(
        uow.adjust_message_count(&existing.id, 1, at(3)).await,
        "adjust_message_count",
    );
    let mut changed = existing.clone();
    changed.title = Some(ok(
        Title::parse("uncommitted").map_err(PortError::unexpected),
        "title",
    ));
    ok(uow.update_thread(&changed).await, "update_thread");
}

async fn assert_nothing_written(
    f: &dyn UnitOfWorkFactory,
    existing: &Thread,
    fresh: &Thread,
    what: &str,
) {
    assert_not_found(read_thread(f, ALICE, &fresh.id).await, what);
    assert_eq!(
        ok(read_thread(f, ALICE, &existing.id).await, "read"),
        *existing,
        "{what}"
    );
    assert_eq!(
        all_message_ids(f, ALICE, &existing.id).await.len(),
        existing.message_count as usize,
        "{what}"
    );
}

/// Dropping an open unit of work discards all its writes.
pub async fn a_dropped_unit_of_work_leaves_no_writes(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (existing, _) = seed_thread(f, ALICE, 1).await;
    let fresh = thread(NOW);
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    write_everything(&mut uow, &existing, &fresh).await;
    drop(uow);
    assert_nothing_written(f, &existing, &fresh, "after dropping the unit of work").await;
    // The connection it held is usable again (or replaced).
    assert_settled(&*target, "after a drop").await;
    let (again, _) = seed_thread(f, ALICE, 1).await;
    assert_eq!(
        ok(read_thread(f, ALICE, &again.id).await, "read").message_count,
        1
    );
}

/// An explicit rollback discards all writes.
pub async fn an_explicit_rollback_leaves_no_writes(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (existing, _) = seed_thread(f, ALICE, 1).await;
    let fresh = thread(NOW);
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    write_everything(&mut uow, &existing, &fresh).await;
    ok(uow.rollback().await, "rollback");
    assert_nothing_written(f, &existing, &fresh, "after rollback").await;
}

/// A read-only unit of work cannot write: every write fails, and nothing changes.
pub async fn a_read_only_unit_of_work_cannot_write(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (existing, msgs) = seed_thread(f, ALICE, 1).await;
    let fresh = thread(NOW);
    let m = &msgs[0];
    let key = ok(
        IdempotencyKey::parse("ro").map_err(PortError::unexpected),
        "key",
    );
    let record = IdempotencyRecord {
        key,
        fingerprint: RequestFingerprint::new("POST", "/", None),
        response: StoredResponse {
            body: "{}".to_owned(),
        },
        created_at: NOW,
    };
    let mut changed_thread = existing.clone();
    changed_thread.title = Some(ok(
        Title::parse("ro").map_err(PortError::unexpected),
        "title",
    ));
    let mut changed_msg = m.clone();
    changed_msg.metadata = metadata(&[("ro", "yes")]);
    let new_msg = message(&existing.id, Role::User, "ro", NOW);

    for attempt in 0..10 {
        let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
        let r = match attempt {
            0 => uow.insert_thread(&fresh).await,
            1 => uow.update_thread(&changed_thread).await,
            2 => uow.adjust_message_count(&existing.id, 1, at(1)).await,
            3 => uow.archive_thread(&existing.id, at(1)).await,
            4 => uow.insert_messages(std::slice::from_ref(&new_msg)).await,
            5 => uow.update_message(&changed_msg).await,
            6 => uow.archive_message(&existing.id, &m.id, at(1)).await,
            7 => uow.append_message(&new_msg).await.map(drop),
            8 => uow.lock_thread_sequence().await.map(drop),
            _ => uow.insert_idempotency(&record, NOW.minus_seconds(10)).await,
        };
        assert!(
            r.is_err(),
            "write #{attempt} succeeded in a read-only unit of work"
        );
        // Even a commit must not make anything stick.
        let _ = uow.commit().await;
    }
    assert_nothing_written(f, &existing, &fresh, "after read-only writes").await;
    assert_eq!(
        ok(read_thread(f, ALICE, &existing.id).await, "read"),
        existing
    );
    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    assert_eq!(
        ok(uow.get_message(&existing.id, &m.id).await, "get_message"),
        *m
    );
    assert_eq!(
        ok(
            uow.find_idempotency(&record.key, NOW.minus_seconds(10))
                .await,
            "find"
        ),
        None
    );
    commit(uow).await;
}

/// `message_count` stays exact under concurrent creates and deletes on one
/// thread, run through the app's use cases.
pub async fn message_count_is_exact_after_concurrent_creates_and_deletes(target: Target) {
    let f = target.factory();
    let load = target.load();
    let app = app::app(Arc::clone(&f), Arc::default());
    let half = load.count_writers / 2;
    let (t, seeded) = seed_thread(&*f, ALICE, half).await;
    let mut tasks = Vec::new();
    for i in 0..load.count_writers {
        let app = app.clone();
        let tid = t.id.clone();
        let victim = (i % 2 == 1)
            .then(|| seeded.get(i / 2).map(|m| m.id.clone()))
            .flatten();
        tasks.push(tokio::spawn(async move {
            let c = ctx(ALICE);
            match victim {
                Some(victim) => app.delete_message(&c, tid, victim).await.map(|_| true),
                None => {
                    let m = new_message(&format!("concurrent {i}"));
                    app.create_message(&c, tid, m, app::render_message())
                        .await
                        .map(|_| false)
                }
            }
        }));
    }
    let all = tokio::time::timeout(load.time_bound, futures::future::join_all(tasks)).await;
    let all = ok(
        all.map_err(PortError::unexpected),
        "concurrent writers within the time bound",
    );
    let (mut created, mut deleted) = (0usize, 0usize);
    for (i, r) in all.into_iter().enumerate() {
        match ok(r.map_err(PortError::unexpected), "join") {
            Ok(true) => deleted += 1,
            Ok(false) => created += 1,
            Err(e) => panic!("writer {i} failed: {e:?}"),
        }
    }
    let expected = half + created - deleted;
    let got = ok(read_thread(&*f, ALICE, &t.id).await, "read");
    let live = all_message_ids(&*f, ALICE, &t.id).await.len();
    assert_eq!(
        live, expected,
        "live messages after {created} creates and {deleted} deletes"
    );
    assert_eq!(
        got.message_count as usize, expected,
        "message_count after concurrent writers"
    );
}

/// Two SERIALIZABLE read-modify-write use cases (the app's modify-thread)
/// overlap on one thread: both read before either writes. The app's retry
/// helper completes both, and neither change is lost.
pub async fn conflicting_serializable_units_of_work_both_complete_through_retry(target: Target) {
    let f = target.serializable_factory();
    let (t, _) = seed_thread(&*f, ALICE, 0).await;
    let outcomes = Arc::new(app::Outcomes::default());
    // Where both units of work can be open at once, wait for both as long
    // as the load bound allows (a loaded host must not turn the overlap
    // into a sequence); where writers serialize, give up quickly.
    let patience = if target.serializable_conflicts() {
        target.load().time_bound
    } else {
        Duration::from_secs(2)
    };
    let barrier: Arc<dyn UnitOfWorkFactory> = Arc::new(app::SnapshotBarrier::new(
        Arc::clone(&f),
        t.id.clone(),
        2,
        patience,
    ));
    let app = app::app(barrier, Arc::clone(&outcomes));
    let mut tasks = Vec::new();
    for key in ["first", "second"] {
        let (app, tid) = (app.clone(), t.id.clone());
        tasks.push(tokio::spawn(async move {
            let patch =
                MetadataPatch::parse(BTreeMap::from([(key.to_owned(), Some("done".to_owned()))]))
                    .map_err(PortError::unexpected)?;
            let patch = ThreadPatch {
                metadata: Some(patch),
                ..ThreadPatch::default()
            };
            app.modify_thread(&ctx(ALICE), tid, patch)
                .await
                .map_err(PortError::unexpected)
        }));
    }
    for r in futures::future::join_all(tasks).await {
        ok(
            ok(r.map_err(PortError::unexpected), "join"),
            "a conflicting use case",
        );
    }
    let got = ok(read_thread(&*f, ALICE, &t.id).await, "read");
    assert_eq!(
        got.metadata,
        metadata(&[("first", "done"), ("second", "done")]),
        "neither change was lost"
    );
    let retried = outcomes.retried.load(Ordering::Relaxed);
    if target.serializable_conflicts() {
        assert!(
            retried >= 1,
            "the overlapping units of work conflicted and were retried"
        );
    }
    tracing::info!(retried, "serializable conflict resolved");
}

/// A single read (`Mode::SingleRead`: one repository call, which the
/// adapter may run without a transaction block) reads like any read-only
/// unit of work, cannot write (ports rules 7 and 9), and ends cleanly
/// however it ends: commit, rollback or drop.
pub async fn a_single_read_reads_once_and_cannot_write(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 2).await;
    let mut uow = begin(f, ALICE, Mode::SingleRead).await;
    assert_eq!(uow.mode(), Mode::SingleRead);
    assert_eq!(ok(uow.get_thread(&t.id).await, "get_thread"), t);
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::SingleRead).await;
    let page = ok(
        uow.list_messages(&t.id, &params(10, Order::Asc, None, None))
            .await,
        "list_messages",
    );
    assert_eq!(page.items, msgs);
    ok(uow.rollback().await, "rollback");

    let mut uow = begin(f, BOB, Mode::SingleRead).await;
    assert_not_found(
        uow.get_thread(&t.id).await,
        "bob's single read of alice's thread",
    );
    drop(uow);

    let late = message(&t.id, Role::User, "written by a read", at(5));
    let mut uow = begin(f, ALICE, Mode::SingleRead).await;
    let r = uow.append_message(&late).await;
    assert!(r.is_err(), "a single read appended a message: {r:?}");
    let _ = uow.commit().await;
    let mut uow = begin(f, ALICE, Mode::SingleRead).await;
    let r = uow.archive_thread(&t.id, at(5)).await;
    assert!(r.is_err(), "a single read archived a thread: {r:?}");
    drop(uow);

    assert_settled(&*target, "after single reads").await;
    assert_eq!(ok(read_thread(f, ALICE, &t.id).await, "read"), t);
    assert_eq!(all_message_ids(f, ALICE, &t.id).await.len(), 2);
}
