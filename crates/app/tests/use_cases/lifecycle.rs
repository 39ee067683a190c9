//! The data lifecycle's drivers (`weft_app::lifecycle`) on a mocked
//! `Maintenance` port: batches until the work is done, the cut-offs they
//! pass, conflicts run again, erase's final check, the export's sink and
//! transaction, and the background expiry stopping when told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mockall::Sequence;
use weft_app::lifecycle::{BatchPolicy, BatchReport, Lifecycle, LifecycleError};
use weft_domain::{Retention, UserId};
use weft_ports::mocks::{MockClock, MockExportReader, MockMaintenance};
use weft_ports::{Erased, ExpiryObserver, Exported, PortError, Purged};

use weft_domain::Role;

use crate::support::{at, message, now, thread, DAY_SECS};

fn clock() -> Arc<MockClock> {
    let mut c = MockClock::new();
    c.expect_now().returning(now);
    Arc::new(c)
}

fn lifecycle(port: MockMaintenance, batch_size: u32) -> Lifecycle {
    Lifecycle::new(
        Arc::new(port),
        clock(),
        BatchPolicy {
            batch_size,
            pause: Duration::from_millis(1),
            conflict_attempts: 3,
        },
    )
}

#[derive(Default)]
struct Counted(Mutex<Vec<u64>>);

impl ExpiryObserver for Counted {
    fn expired(&self, records: u64) {
        self.0.lock().unwrap().push(records);
    }
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

#[tokio::test]
async fn expiry_deletes_batch_after_batch_before_the_retention_cutoff_and_counts_each() {
    let mut port = MockMaintenance::new();
    let mut seq = Sequence::new();
    for n in [10, 10, 3] {
        port.expect_expire_idempotency()
            .withf(|before, limit| *before == at(-2 * DAY_SECS) && *limit == 10)
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _| Ok(n));
    }
    let observer = Counted::default();
    let two_days = Retention::from_secs(2 * 86_400).unwrap();
    let total = lifecycle(port, 10)
        .expire_idempotency(two_days, &observer)
        .await
        .unwrap();
    assert_eq!(total, 23);
    assert_eq!(*observer.0.lock().unwrap(), vec![10, 10, 3]);
}

#[tokio::test]
async fn a_batch_that_conflicts_runs_again_and_a_lasting_conflict_is_an_error() {
    let mut port = MockMaintenance::new();
    let mut seq = Sequence::new();
    port.expect_expire_idempotency()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PortError::Conflict));
    port.expect_expire_idempotency()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(4));
    let total = lifecycle(port, 10)
        .expire_idempotency(Retention::DEFAULT, &Counted::default())
        .await
        .unwrap();
    assert_eq!(total, 4);

    let mut port = MockMaintenance::new();
    port.expect_purge_archived()
        .times(3)
        .returning(|_, _| Err(PortError::Conflict));
    let r = lifecycle(port, 10)
        .purge(Duration::from_secs(60), &mut |_| {})
        .await;
    assert!(
        matches!(r, Err(LifecycleError::Storage(PortError::Conflict))),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_purge_runs_until_a_batch_removes_nothing_and_reports_what_it_removed() {
    let mut port = MockMaintenance::new();
    let mut seq = Sequence::new();
    for (threads, messages) in [(1, 10), (0, 3), (0, 0)] {
        port.expect_purge_archived()
            .withf(|before, limit| *before == at(-30 * DAY_SECS) && *limit == 10)
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _| Ok(Purged { threads, messages }));
    }
    let mut seen: Vec<BatchReport> = Vec::new();
    let report = lifecycle(port, 10)
        .purge(Duration::from_secs(30 * 86_400), &mut |b| seen.push(*b))
        .await
        .unwrap();
    assert_eq!(report.deleted_before, at(-30 * DAY_SECS));
    assert_eq!(
        (report.threads, report.messages, report.batches),
        (1, 13, 2)
    );
    assert_eq!(seen.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![11, 3]);
    assert!(report.longest_batch >= seen[0].took.max(seen[1].took));

    let mut port = MockMaintenance::new();
    port.expect_purge_archived()
        .times(1)
        .returning(|_, _| Err(PortError::unavailable("down")));
    let r = lifecycle(port, 10).purge(Duration::ZERO, &mut |_| {}).await;
    assert!(
        matches!(r, Err(LifecycleError::Storage(PortError::Unavailable(_)))),
        "{r:?}"
    );
}

#[tokio::test]
async fn an_erase_adds_up_every_step_until_nothing_of_the_user_is_left() {
    let mut port = MockMaintenance::new();
    let mut seq = Sequence::new();
    let steps = [
        Erased {
            threads_closed: 2,
            ..Erased::default()
        },
        Erased {
            idempotency_records: 3,
            ..Erased::default()
        },
        Erased {
            messages: 7,
            ..Erased::default()
        },
        Erased {
            threads: 2,
            ..Erased::default()
        },
        Erased {
            owner_rows: 1,
            done: true,
            ..Erased::default()
        },
    ];
    for step in steps {
        port.expect_erase_user_step()
            .withf(|user, limit, at| user.as_str() == "alice" && *limit == 5 && *at == now())
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Ok(step));
    }
    let mut batches = 0;
    let report = lifecycle(port, 5)
        .erase_user(&alice(), &mut |_| batches += 1)
        .await
        .unwrap();
    assert_eq!(
        (
            report.threads,
            report.messages,
            report.idempotency_records,
            report.owner_rows
        ),
        (2, 7, 3, 1)
    );
    assert_eq!((report.batches, batches), (5, 5));
}

#[tokio::test]
async fn an_erase_gives_up_when_the_user_keeps_writing_through_every_final_check() {
    let mut port = MockMaintenance::new();
    // The final check keeps finding new data: nothing changed, not done.
    port.expect_erase_user_step()
        .times(10)
        .returning(|_, _, _| Ok(Erased::default()));
    let r = lifecycle(port, 5).erase_user(&alice(), &mut |_| {}).await;
    match r {
        Err(e @ LifecycleError::StillWriting { .. }) => {
            assert!(e.to_string().contains("block their access"), "{e}");
        }
        other => panic!("expected StillWriting, got {other:?}"),
    }
}

/// A user whose clients keep creating threads: every live thread was
/// closed, messages were being deleted, and new threads keep appearing.
/// The erase stops (and says so) instead of chasing them for as long as
/// they write.
#[tokio::test]
async fn an_erase_gives_up_when_the_user_keeps_creating_threads() {
    let mut port = MockMaintenance::new();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    port.expect_erase_user_step().returning(move |_, _, _| {
        // Alternately: a batch of messages deleted, then a new thread closed.
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(if n % 2 == 0 {
            Erased {
                messages: 3,
                ..Erased::default()
            }
        } else {
            Erased {
                threads_closed: 1,
                ..Erased::default()
            }
        })
    });
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        lifecycle(port, 5).erase_user(&alice(), &mut |_| {}),
    )
    .await
    .expect("the erase gives up instead of chasing the writer forever");
    assert!(
        matches!(r, Err(LifecycleError::StillWriting { .. })),
        "{r:?}"
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::Relaxed) <= 21,
        "gave up after at most ten new threads"
    );
}

fn reader(batches: Vec<Vec<Exported>>, finishes: usize) -> MockExportReader {
    let mut r = MockExportReader::new();
    let mut seq = Sequence::new();
    for batch in batches {
        r.expect_next_batch()
            .times(1)
            .in_sequence(&mut seq)
            .return_once(move || Ok(batch));
    }
    r.expect_finish().times(finishes).returning(|| Ok(()));
    r
}

#[tokio::test]
async fn an_export_hands_every_object_to_the_sink_in_order_then_ends_its_transaction() {
    let (t1, t2) = (thread(1), thread(2));
    let m = message(1, 1, Role::User, "hi");
    let batches = vec![
        vec![Exported::Thread(t1.clone())],
        vec![Exported::Message(m.clone())],
        vec![Exported::Thread(t2.clone())],
        vec![],
    ];
    let mut port = MockMaintenance::new();
    let r = reader(batches, 1);
    port.expect_export_user()
        .withf(|user| user.as_str() == "alice")
        .times(1)
        .return_once(move |_| Ok(Box::new(r)));
    let mut seen = Vec::new();
    let report = lifecycle(port, 5)
        .export_user(&alice(), &mut |item| {
            seen.push(item.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![
            Exported::Thread(t1),
            Exported::Message(m),
            Exported::Thread(t2)
        ]
    );
    assert_eq!((report.threads, report.messages), (2, 1));
}

#[tokio::test]
async fn a_failing_sink_stops_the_export_without_committing_it() {
    let mut port = MockMaintenance::new();
    let r = reader(vec![vec![Exported::Thread(thread(1))]], 0);
    port.expect_export_user()
        .return_once(move |_| Ok(Box::new(r)));
    let e = lifecycle(port, 5)
        .export_user(&alice(), &mut |_| Err("broken pipe".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, LifecycleError::Output(_)), "{e:?}");
}

#[tokio::test]
async fn the_background_expiry_sweeps_at_once_and_stops_when_told_while_it_waits() {
    let (swept_tx, swept_rx) = tokio::sync::oneshot::channel::<()>();
    let swept_tx = Mutex::new(Some(swept_tx));
    let mut port = MockMaintenance::new();
    port.expect_expire_idempotency().returning(move |_, _| {
        if let Some(tx) = swept_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        Ok(0)
    });
    let lifecycle = lifecycle(port, 10);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let observer = Counted::default();
        lifecycle
            .run_idempotency_expiry(
                Retention::DEFAULT,
                Duration::from_secs(3600),
                &observer,
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await;
    });
    tokio::time::timeout(Duration::from_secs(10), swept_rx)
        .await
        .expect("the first sweep runs at once")
        .unwrap();
    // Now it waits an hour for the next sweep; the stop must end that wait.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops at once, not after the hour")
        .unwrap();
}
