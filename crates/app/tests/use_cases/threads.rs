//! Thread use cases: the calls they make, with which arguments, and what
//! they return.

use mockall::Sequence;
use weft_domain::{
    CreateThread, ListParams, Order, Page, PageLimit, Role, ThreadPatch, ToolResources,
};
use weft_ports::{Mode, TxOutcome};

use crate::support::{
    at, create_cmd, err_kind, metadata, metadata_patch, metadata_with, minted_message_id,
    minted_thread_id, new_message, now, page, render_thread, rendered_thread, thread, thread_id,
    title, End, ErrKind, Fail, Harness,
};

fn tool_resources() -> ToolResources {
    ToolResources::parse(serde_json::json!({"code_interpreter": {"file_ids": ["file-1"]}})).unwrap()
}

// ---------------------------------------------------------------- create

/// The thread and its messages get minted ids and the clock's time, the
/// thread counts its messages, both are written in one read-write unit of
/// work (thread first), and the rendered thread is returned.
#[tokio::test]
async fn create_thread_writes_the_thread_then_its_messages_with_minted_ids_and_the_clock_time() {
    let mut h = Harness::new();
    let cmd = CreateThread::new(
        vec![
            new_message(Role::User, "first"),
            new_message(Role::Assistant, "second"),
        ],
        metadata(&[("team", "infra")]),
        tool_resources(),
        Some(title("Infra")),
    )
    .unwrap();
    let expected = weft_domain::Thread {
        id: minted_thread_id(1),
        created_at: now(),
        updated_at: now(),
        metadata: metadata(&[("team", "infra")]),
        tool_resources: tool_resources(),
        title: Some(title("Infra")),
        message_count: 2,
    };
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |t| {
                assert_eq!(t, &want);
                Ok(())
            });
        u.expect_insert_messages()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|ms| {
                let got: Vec<_> = ms
                    .iter()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.thread_id.clone(),
                            m.created_at,
                            m.role,
                            m.content.plain_text(),
                        )
                    })
                    .collect();
                assert_eq!(
                    got,
                    vec![
                        (
                            minted_message_id(1),
                            minted_thread_id(1),
                            now(),
                            Role::User,
                            "first".to_owned()
                        ),
                        (
                            minted_message_id(2),
                            minted_thread_id(1),
                            now(),
                            Role::Assistant,
                            "second".to_owned()
                        ),
                    ],
                    "messages in order, with minted ids, in the new thread, at the clock's time"
                );
                Ok(())
            });
    });
    let app = h.app();
    let got = app
        .create_thread(&h.ctx, cmd, render_thread())
        .await
        .unwrap();
    assert_eq!(got, rendered_thread(&expected));
    assert_eq!(h.begun(), vec![Mode::ReadWrite]);
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// The owner's thread sequence is locked before the thread's id is minted,
/// and the id is minted above the owner's newest thread id (which another
/// process may have minted with a clock ahead), so the owner's thread ids
/// commit in id order.
#[tokio::test]
async fn create_thread_locks_the_owners_sequence_then_mints_above_its_newest() {
    let mut h = Harness::new();
    let newest = thread_id(0xffff_0000);
    let above = thread_id(0xffff_0001);
    h.ids = weft_ports::mocks::MockIdSource::new();
    let (n, a) = (newest.clone(), above.clone());
    h.ids
        .expect_thread_id()
        .withf(move |x| *x == Some(&n))
        .times(1)
        .returning(move |_| a.clone());
    h.ids
        .expect_message_id()
        .returning(|_| minted_message_id(1));
    let (n, a) = (newest.clone(), above.clone());
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        u.expect_lock_thread_sequence()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move || Ok(Some(n.clone())));
        u.expect_insert_thread()
            .withf(move |t| t.id == a)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        u.expect_insert_messages()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
    });
    let app = h.app();
    let got = app
        .create_thread(&h.ctx, create_cmd(), render_thread())
        .await
        .unwrap();
    assert!(got.body.contains(above.as_str()), "{}", got.body);
}

/// The clock is read once per create: the thread and its initial messages
/// share one timestamp even when the clock moves between calls.
#[tokio::test]
async fn create_thread_gives_the_thread_and_its_messages_one_timestamp() {
    let mut h = Harness::new();
    let ticks = std::sync::atomic::AtomicI64::new(0);
    h.clock = weft_ports::mocks::MockClock::new();
    h.clock
        .expect_now()
        .returning(move || at(ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|t| {
            assert_eq!((t.created_at, t.updated_at), (now(), now()));
            Ok(())
        });
        u.expect_insert_messages().times(1).returning(|ms| {
            assert!(ms.iter().all(|m| m.created_at == now()), "{ms:?}");
            Ok(())
        });
    });
    let app = h.app();
    app.create_thread(&h.ctx, create_cmd(), render_thread())
        .await
        .unwrap();
}

/// A thread created without messages makes no message insert and counts zero.
#[tokio::test]
async fn create_thread_without_messages_inserts_no_messages() {
    let mut h = Harness::new();
    let cmd =
        CreateThread::new(vec![], Default::default(), ToolResources::default(), None).unwrap();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|t| {
            assert_eq!((t.message_count, t.title.clone()), (0, None));
            Ok(())
        });
        u.expect_insert_messages().never();
    });
    let app = h.app();
    let got = app
        .create_thread(&h.ctx, cmd, render_thread())
        .await
        .unwrap();
    assert!(got.body.contains("count 0"), "{got:?}");
}

/// With the 32 messages allowed, all are written in one call, ids in order.
#[tokio::test]
async fn create_thread_with_the_maximum_of_32_messages_writes_them_in_one_call_in_order() {
    let mut h = Harness::new();
    let msgs = (0..32)
        .map(|i| new_message(Role::User, &format!("m{i}")))
        .collect();
    let cmd = CreateThread::new(msgs, Default::default(), ToolResources::default(), None).unwrap();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|t| {
            assert_eq!(t.message_count, 32);
            Ok(())
        });
        u.expect_insert_messages().times(1).returning(|ms| {
            let ids: Vec<_> = ms.iter().map(|m| m.id.clone()).collect();
            assert_eq!(ids, (1..=32).map(minted_message_id).collect::<Vec<_>>());
            Ok(())
        });
    });
    let app = h.app();
    app.create_thread(&h.ctx, cmd, render_thread())
        .await
        .unwrap();
}

/// Nothing is written unless everything is: messages failing to insert roll
/// the thread back too.
#[tokio::test]
async fn create_thread_rolls_back_the_thread_when_its_messages_fail_to_insert() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|_| Ok(()));
        u.expect_insert_messages()
            .times(1)
            .returning(|_| Err(Fail::Unavailable.err()));
    });
    let app = h.app();
    let r = app
        .create_thread(&h.ctx, create_cmd(), render_thread())
        .await;
    assert_eq!(err_kind(r, "create_thread"), ErrKind::Unavailable);
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

// ---------------------------------------------------------------- get / list

/// A single-read unit of work reads the asked thread and returns it as stored.
#[tokio::test]
async fn get_thread_returns_the_stored_thread_from_a_single_read_unit_of_work() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::SingleRead, End::Commit, |u| {
        u.expect_get_thread()
            .withf(|id| *id == thread_id(7))
            .times(1)
            .returning(|_| Ok(thread(7)));
    });
    let app = h.app();
    assert_eq!(
        app.get_thread(&h.ctx, thread_id(7)).await.unwrap(),
        thread(7)
    );
    assert_eq!(h.observed(), vec![(Mode::SingleRead, TxOutcome::Committed)]);
}

/// A missing (or foreign, or deleted) thread is not found, and the read-only
/// unit of work is rolled back.
#[tokio::test]
async fn get_thread_is_not_found_for_a_missing_thread_and_rolls_back() {
    let mut h = Harness::new();
    h.uow(Mode::SingleRead, End::Rollback, |u| {
        u.expect_get_thread()
            .times(1)
            .returning(|_| Err(Fail::NotFound.err()));
    });
    let app = h.app();
    let r = app.get_thread(&h.ctx, thread_id(7)).await;
    assert_eq!(err_kind(r, "get_thread"), ErrKind::NotFound);
    assert_eq!(
        h.observed(),
        vec![(Mode::SingleRead, TxOutcome::RolledBack)]
    );
}

/// The list parameters reach the repository unchanged and its page comes back as is.
#[tokio::test]
async fn list_threads_passes_the_parameters_through_and_returns_the_page() {
    let mut h = Harness::new();
    let params = ListParams::new(
        PageLimit::new(2).unwrap(),
        Order::Asc,
        Some(thread_id(3)),
        None,
    );
    let expected = params.clone();
    h.uow(Mode::SingleRead, End::Commit, move |u| {
        u.expect_list_threads()
            .withf(move |p| *p == expected)
            .times(1)
            .returning(|_| Ok(page(vec![thread(4), thread(5)], true)));
    });
    let app = h.app();
    let got: Page<_> = app.list_threads(&h.ctx, params).await.unwrap();
    assert_eq!(got, page(vec![thread(4), thread(5)], true));
}

/// A cursor that is not one of the caller's threads is refused as such.
#[tokio::test]
async fn list_threads_refuses_an_unknown_cursor_and_rolls_back() {
    let mut h = Harness::new();
    h.uow(Mode::SingleRead, End::Rollback, |u| {
        u.expect_list_threads()
            .times(1)
            .returning(|_| Err(Fail::InvalidCursor.err()));
    });
    let app = h.app();
    let params = ListParams::new(PageLimit::default(), Order::Desc, None, Some(thread_id(99)));
    let r = app.list_threads(&h.ctx, params).await;
    assert_eq!(err_kind(r, "list_threads"), ErrKind::InvalidCursor);
}

// ---------------------------------------------------------------- modify

/// Under the row lock: metadata merged (set and remove), tool resources
/// replaced, title set, `updated_at` moved to now; the written thread is returned.
#[tokio::test]
async fn modify_thread_merges_metadata_replaces_tool_resources_and_sets_the_title_under_the_lock() {
    let mut h = Harness::new();
    h.no_ids();
    let mut current = thread(1);
    current.metadata = metadata(&[("a", "1"), ("b", "2")]);
    let mut expected = current.clone();
    expected.metadata = metadata(&[("a", "1"), ("c", "3")]);
    expected.tool_resources = tool_resources();
    expected.title = Some(title("Renamed"));
    expected.updated_at = now();
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        u.expect_lock_thread()
            .withf(|id| *id == thread_id(1))
            .times(1)
            .in_sequence(&mut seq)
            .return_once(move |_| Ok(current));
        u.expect_update_thread()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |t| {
                assert_eq!(t, &want);
                Ok(())
            });
        // The plain read would not hold the lock a concurrent merge needs.
        u.expect_get_thread().never();
    });
    let app = h.app();
    let patch = ThreadPatch {
        metadata: Some(metadata_patch(&[("b", None), ("c", Some("3"))])),
        tool_resources: Some(tool_resources()),
        title: Some(Some(title("Renamed"))),
    };
    assert_eq!(
        app.modify_thread(&h.ctx, thread_id(1), patch)
            .await
            .unwrap(),
        expected
    );
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// `title: null` clears the title; fields left out of the patch stay.
#[tokio::test]
async fn modify_thread_clears_the_title_with_an_explicit_null_and_keeps_what_the_patch_leaves_out()
{
    let mut h = Harness::new();
    let mut current = thread(1);
    current.title = Some(title("Old"));
    current.tool_resources = tool_resources();
    let mut expected = current.clone();
    expected.title = None;
    expected.updated_at = now();
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        u.expect_lock_thread()
            .times(1)
            .return_once(move |_| Ok(current));
        u.expect_update_thread().times(1).returning(move |t| {
            assert_eq!(t, &want);
            Ok(())
        });
    });
    let app = h.app();
    let patch = ThreadPatch {
        title: Some(None),
        ..ThreadPatch::default()
    };
    assert_eq!(
        app.modify_thread(&h.ctx, thread_id(1), patch)
            .await
            .unwrap(),
        expected
    );
}

/// A thread touched "in the future" (clock skew between instances) keeps
/// its `updated_at`: it never moves backwards.
#[tokio::test]
async fn modify_thread_never_moves_updated_at_backwards() {
    let mut h = Harness::new();
    let mut current = thread(1);
    current.updated_at = at(60);
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        u.expect_lock_thread()
            .times(1)
            .return_once(move |_| Ok(current));
        u.expect_update_thread().times(1).returning(|t| {
            assert_eq!(t.updated_at, at(60));
            Ok(())
        });
    });
    let app = h.app();
    let got = app
        .modify_thread(&h.ctx, thread_id(1), ThreadPatch::default())
        .await
        .unwrap();
    assert_eq!(got.updated_at, at(60));
}

/// The pair limit applies to the merged result: 16 stored pairs plus one
/// new key is refused, nothing is written, and the unit of work rolls back.
#[tokio::test]
async fn modify_thread_refuses_a_merge_over_sixteen_pairs_and_writes_nothing() {
    let mut h = Harness::new();
    let mut current = thread(1);
    current.metadata = metadata_with(16);
    h.uow(Mode::ReadWrite, End::Rollback, move |u| {
        u.expect_lock_thread()
            .times(1)
            .return_once(move |_| Ok(current));
        u.expect_update_thread().never();
    });
    let app = h.app();
    let patch = ThreadPatch {
        metadata: Some(metadata_patch(&[("extra", Some("x"))])),
        ..ThreadPatch::default()
    };
    let r = app.modify_thread(&h.ctx, thread_id(1), patch).await;
    assert_eq!(err_kind(r, "modify_thread"), ErrKind::Invalid);
    assert_eq!(h.begun().len(), 1, "a validation failure is not retried");
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

/// A patch may name more keys than the limit when enough of them are
/// removals: 16 stored pairs, one removed and one added, is accepted.
#[tokio::test]
async fn modify_thread_accepts_a_merge_that_stays_at_sixteen_pairs() {
    let mut h = Harness::new();
    let mut current = thread(1);
    current.metadata = metadata_with(16);
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        u.expect_lock_thread()
            .times(1)
            .return_once(move |_| Ok(current));
        u.expect_update_thread().times(1).returning(|t| {
            assert_eq!(t.metadata.as_map().len(), 16);
            assert!(
                t.metadata.as_map().contains_key("extra")
                    && !t.metadata.as_map().contains_key("k00")
            );
            Ok(())
        });
    });
    let app = h.app();
    let patch = ThreadPatch {
        metadata: Some(metadata_patch(&[("k00", None), ("extra", Some("x"))])),
        ..ThreadPatch::default()
    };
    app.modify_thread(&h.ctx, thread_id(1), patch)
        .await
        .unwrap();
}

/// A thread that is gone when locked: not found, nothing written.
#[tokio::test]
async fn modify_thread_is_not_found_when_the_thread_is_missing_and_writes_nothing() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread()
            .times(1)
            .returning(|_| Err(Fail::NotFound.err()));
        u.expect_update_thread().never();
    });
    let app = h.app();
    let r = app
        .modify_thread(&h.ctx, thread_id(1), ThreadPatch::default())
        .await;
    assert_eq!(err_kind(r, "modify_thread"), ErrKind::NotFound);
}

// ---------------------------------------------------------------- delete

/// The thread (and with it its messages) is archived at the clock's time.
#[tokio::test]
async fn delete_thread_archives_the_thread_at_the_clock_time() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_archive_thread()
            .withf(|id, at| *id == thread_id(4) && *at == now())
            .times(1)
            .returning(|_, _| Ok(()));
    });
    let app = h.app();
    app.delete_thread(&h.ctx, thread_id(4)).await.unwrap();
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// Deleting a thread twice: the second is not found and rolls back.
#[tokio::test]
async fn delete_thread_is_not_found_when_already_deleted() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_archive_thread()
            .times(1)
            .returning(|_, _| Err(Fail::NotFound.err()));
    });
    let app = h.app();
    let r = app.delete_thread(&h.ctx, thread_id(4)).await;
    assert_eq!(err_kind(r, "delete_thread"), ErrKind::NotFound);
}
