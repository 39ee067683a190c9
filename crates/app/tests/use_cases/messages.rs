//! Message use cases: the calls they make, with which arguments, and what
//! they return.

use mockall::Sequence;
use weft_domain::{ListParams, MessagePatch, Order, PageLimit, Role};
use weft_ports::mocks::MockIdSource;
use weft_ports::{Appended, Mode, TxOutcome};

use crate::support::{
    err_kind, message, message_id, metadata, metadata_patch, metadata_with, minted_message_id,
    new_message, now, page, render_message, rendered_message, thread_id, End, ErrKind, Fail,
    Harness,
};

// ---------------------------------------------------------------- create

/// The message is minted and appended to its thread in one call (which
/// raises the count, moves `updated_at` and locks the thread row); the
/// rendered message is returned.
#[tokio::test]
async fn create_message_appends_the_minted_message_and_returns_it_rendered() {
    let mut h = Harness::new();
    let mut expected = new_message(Role::User, "hello there").into_message(
        minted_message_id(1),
        thread_id(3),
        now(),
    );
    expected.metadata = metadata(&[("lang", "en")]);
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        u.expect_append_message().times(1).returning(move |m| {
            assert_eq!(m, &want);
            Ok(Appended::Done)
        });
    });
    let app = h.app();
    let mut msg = new_message(Role::User, "hello there");
    msg.metadata = metadata(&[("lang", "en")]);
    let got = app
        .create_message(&h.ctx, thread_id(3), msg, render_message())
        .await
        .unwrap();
    assert_eq!(got, rendered_message(&expected));
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// When the thread's newest message id is not below the minted one
/// (another process's clock ahead, or a concurrent request took the thread
/// first), a new id is minted above the newest and the append is repeated
/// in the same unit of work: ids commit in id order.
#[tokio::test]
async fn create_message_remints_above_a_newer_id_and_appends_again() {
    let mut h = Harness::new();
    let newest = message_id(0xffff_0000);
    let above = message_id(0xffff_0001);
    h.ids = MockIdSource::new();
    let mut seq = Sequence::new();
    h.ids
        .expect_message_id()
        .withf(|a| a.is_none())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| minted_message_id(1));
    let (n, a) = (newest.clone(), above.clone());
    h.ids
        .expect_message_id()
        .withf(move |x| *x == Some(&n))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| a.clone());
    let (n, a) = (newest.clone(), above.clone());
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        u.expect_append_message()
            .withf(|m| m.id == minted_message_id(1))
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_| Ok(Appended::Stale { newest: n.clone() }));
        u.expect_append_message()
            .withf(move |m| m.id == a)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(Appended::Done));
    });
    let app = h.app();
    let got = app
        .create_message(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hi"),
            render_message(),
        )
        .await
        .unwrap();
    assert!(got.body.contains(above.as_str()), "{}", got.body);
}

/// An append that fails (missing thread, lost database, anything) rolls the
/// whole unit of work back and answers the failure's kind.
#[tokio::test]
async fn create_message_rolls_back_when_the_append_fails() {
    for fail in [Fail::NotFound, Fail::Unavailable, Fail::Unexpected] {
        let mut h = Harness::new();
        h.uow(Mode::ReadWrite, End::Rollback, |u| {
            u.expect_append_message()
                .times(1)
                .returning(move |_| Err(fail.err()));
        });
        let app = h.app();
        let r = app
            .create_message(
                &h.ctx,
                thread_id(3),
                new_message(Role::User, "hi"),
                render_message(),
            )
            .await;
        assert_eq!(
            err_kind(r, "create_message"),
            fail.expected(),
            "append failing {fail:?}"
        );
        assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
    }
}

// ---------------------------------------------------------------- get / list

/// The message is read from its thread in a single-read unit of work.
#[tokio::test]
async fn get_message_reads_the_message_of_its_thread_in_a_single_read() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::SingleRead, End::Commit, |u| {
        u.expect_get_message()
            .withf(|t, m| (t, m) == (&thread_id(2), &message_id(5)))
            .times(1)
            .returning(|_, _| Ok(message(2, 5, Role::Assistant, "answer")));
    });
    let app = h.app();
    let got = app
        .get_message(&h.ctx, thread_id(2), message_id(5))
        .await
        .unwrap();
    assert_eq!(got, message(2, 5, Role::Assistant, "answer"));
    assert_eq!(h.observed(), vec![(Mode::SingleRead, TxOutcome::Committed)]);
}

/// A message of another thread (or missing, foreign, deleted) is not found.
#[tokio::test]
async fn get_message_is_not_found_for_a_message_of_another_thread() {
    let mut h = Harness::new();
    h.uow(Mode::SingleRead, End::Rollback, |u| {
        u.expect_get_message()
            .times(1)
            .returning(|_, _| Err(Fail::NotFound.err()));
    });
    let app = h.app();
    let r = app.get_message(&h.ctx, thread_id(9), message_id(5)).await;
    assert_eq!(err_kind(r, "get_message"), ErrKind::NotFound);
}

/// The thread and the list parameters reach the repository unchanged.
#[tokio::test]
async fn list_messages_passes_the_thread_and_parameters_through_and_returns_the_page() {
    let mut h = Harness::new();
    let params = ListParams::new(
        PageLimit::new(1).unwrap(),
        Order::Asc,
        None,
        Some(message_id(8)),
    );
    let expected = params.clone();
    h.uow(Mode::SingleRead, End::Commit, move |u| {
        u.expect_list_messages()
            .withf(move |t, p| *t == thread_id(2) && *p == expected)
            .times(1)
            .returning(|_, _| Ok(page(vec![message(2, 7, Role::User, "q")], true)));
    });
    let app = h.app();
    let got = app
        .list_messages(&h.ctx, thread_id(2), params)
        .await
        .unwrap();
    assert_eq!(got, page(vec![message(2, 7, Role::User, "q")], true));
}

/// A missing thread is not found; a cursor of another thread is invalid.
#[tokio::test]
async fn list_messages_reports_a_missing_thread_and_an_unknown_cursor() {
    for fail in [Fail::NotFound, Fail::InvalidCursor] {
        let mut h = Harness::new();
        h.uow(Mode::SingleRead, End::Rollback, |u| {
            u.expect_list_messages()
                .times(1)
                .returning(move |_, _| Err(fail.err()));
        });
        let app = h.app();
        let r = app
            .list_messages(&h.ctx, thread_id(2), ListParams::default())
            .await;
        assert_eq!(err_kind(r, "list_messages"), fail.expected(), "{fail:?}");
    }
}

// ---------------------------------------------------------------- modify

/// Under the message lock, only the metadata changes (merge: set and
/// remove); the written message is returned.
#[tokio::test]
async fn modify_message_merges_metadata_under_the_message_lock() {
    let mut h = Harness::new();
    h.no_ids();
    let mut current = message(2, 5, Role::User, "hi");
    current.metadata = metadata(&[("a", "1"), ("b", "2")]);
    let mut expected = current.clone();
    expected.metadata = metadata(&[("a", "9"), ("c", "3")]);
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        u.expect_lock_message()
            .withf(|t, m| (t, m) == (&thread_id(2), &message_id(5)))
            .times(1)
            .in_sequence(&mut seq)
            .return_once(move |_, _| Ok(current));
        u.expect_update_message()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |m| {
                assert_eq!(m, &want);
                Ok(())
            });
        u.expect_get_message().never();
    });
    let app = h.app();
    let patch = MessagePatch {
        metadata: metadata_patch(&[("a", Some("9")), ("b", None), ("c", Some("3"))]),
    };
    let got = app
        .modify_message(&h.ctx, thread_id(2), message_id(5), patch)
        .await
        .unwrap();
    assert_eq!(got, expected);
}

/// 16 stored pairs plus a new key: invalid, nothing written, rolled back.
#[tokio::test]
async fn modify_message_refuses_a_merge_over_sixteen_pairs_and_writes_nothing() {
    let mut h = Harness::new();
    let mut current = message(2, 5, Role::User, "hi");
    current.metadata = metadata_with(16);
    h.uow(Mode::ReadWrite, End::Rollback, move |u| {
        u.expect_lock_message()
            .times(1)
            .return_once(move |_, _| Ok(current));
        u.expect_update_message().never();
    });
    let app = h.app();
    let patch = MessagePatch {
        metadata: metadata_patch(&[("k16", Some("v"))]),
    };
    let r = app
        .modify_message(&h.ctx, thread_id(2), message_id(5), patch)
        .await;
    assert_eq!(err_kind(r, "modify_message"), ErrKind::Invalid);
    assert_eq!(h.begun().len(), 1, "a validation failure is not retried");
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

/// A message that is gone when locked: not found, nothing written.
#[tokio::test]
async fn modify_message_is_not_found_when_the_message_is_missing() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_message()
            .times(1)
            .returning(|_, _| Err(Fail::NotFound.err()));
        u.expect_update_message().never();
    });
    let app = h.app();
    let r = app
        .modify_message(&h.ctx, thread_id(2), message_id(5), MessagePatch::default())
        .await;
    assert_eq!(err_kind(r, "modify_message"), ErrKind::NotFound);
}

// ---------------------------------------------------------------- delete

/// The thread is locked first, then the message archived, then the count
/// lowered by one with `updated_at` moved to the same time.
#[tokio::test]
async fn delete_message_locks_the_thread_archives_the_message_then_lowers_the_count() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        let mut seq = Sequence::new();
        u.expect_lock_thread()
            .withf(|t| t == &thread_id(2))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(crate::support::thread(2)));
        u.expect_archive_message()
            .withf(|t, m, at| (t, m, *at) == (&thread_id(2), &message_id(5), now()))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        u.expect_adjust_message_count()
            .withf(|t, delta, at| (t, *delta, *at) == (&thread_id(2), -1, now()))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
    });
    let app = h.app();
    app.delete_message(&h.ctx, thread_id(2), message_id(5))
        .await
        .unwrap();
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// The message is not there (already deleted, of another thread): not
/// found, and the count is never touched, so it cannot go below zero.
#[tokio::test]
async fn delete_message_leaves_the_count_alone_when_the_message_is_missing() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread()
            .times(1)
            .returning(|_| Ok(crate::support::thread(2)));
        u.expect_archive_message()
            .times(1)
            .returning(|_, _, _| Err(Fail::NotFound.err()));
        u.expect_adjust_message_count().never();
    });
    let app = h.app();
    let r = app
        .delete_message(&h.ctx, thread_id(2), message_id(5))
        .await;
    assert_eq!(err_kind(r, "delete_message"), ErrKind::NotFound);
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

/// A missing thread: not found, and no message is archived.
#[tokio::test]
async fn delete_message_is_not_found_when_the_thread_is_missing() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread()
            .times(1)
            .returning(|_| Err(Fail::NotFound.err()));
        u.expect_archive_message().never();
        u.expect_adjust_message_count().never();
    });
    let app = h.app();
    let r = app
        .delete_message(&h.ctx, thread_id(2), message_id(5))
        .await;
    assert_eq!(err_kind(r, "delete_message"), ErrKind::NotFound);
}
