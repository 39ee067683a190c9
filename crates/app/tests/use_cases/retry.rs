//! The retry rule: a transient conflict (from any repository call, from
//! `begin` or from `commit`) runs the whole unit of work again, from a fresh
//! `begin`, up to the policy's bound; nothing else is ever retried.

use std::time::{Duration, Instant};

use weft_app::RetryPolicy;
use weft_domain::Role;
use weft_ports::{Appended, Mode, RequestContext, TxOutcome};

use crate::support::{
    create_cmd, ctx, err_kind, minted_message_id, minted_thread_id, new_message, render_message,
    render_thread, rendered_thread, thread_id, End, ErrKind, Fail, Harness, UseCase, ALL,
};

/// What the observer must see for attempts that conflicted `conflicts`
/// times and then ended `last`.
fn outcomes(mode: Mode, conflicts: usize, last: Option<TxOutcome>) -> Vec<(Mode, TxOutcome)> {
    let mut v = Vec::new();
    for _ in 0..conflicts {
        v.push((mode, TxOutcome::RolledBack));
        v.push((mode, TxOutcome::Retried));
    }
    v.extend(last.map(|o| (mode, o)));
    v
}

/// For every call of every use case: a conflict there rolls the attempt
/// back, and a fresh unit of work runs the whole use case again and commits.
#[tokio::test]
async fn a_conflict_from_any_call_retries_the_whole_unit_of_work_and_the_next_attempt_commits() {
    for uc in ALL {
        for (i, step) in uc.steps().into_iter().enumerate() {
            let what = format!("{uc:?} with {step:?} conflicting once");
            let mut h = Harness::new();
            uc.plan(&mut h, Some((i, Fail::Conflict)), End::Rollback);
            uc.plan(&mut h, None, End::Commit);
            let app = h.app();
            let r = uc.run(&app, &h.ctx).await;
            assert!(r.is_ok(), "{what}: {r:?}");
            assert_eq!(h.begun(), vec![uc.mode(); 2], "{what}");
            assert_eq!(
                h.observed(),
                outcomes(uc.mode(), 1, Some(TxOutcome::Committed)),
                "{what}"
            );
            h.assert_all_ended(&what);
        }
    }
}

/// A commit refused with a conflict certainly did not commit: the whole
/// unit of work runs again.
#[tokio::test]
async fn a_commit_conflict_retries_the_whole_unit_of_work() {
    for uc in ALL {
        let what = format!("{uc:?} with its commit conflicting once");
        let mut h = Harness::new();
        uc.plan(&mut h, None, End::CommitFails(Fail::Conflict));
        uc.plan(&mut h, None, End::Commit);
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert!(r.is_ok(), "{what}: {r:?}");
        assert_eq!(h.begun(), vec![uc.mode(); 2], "{what}");
        assert_eq!(
            h.observed(),
            outcomes(uc.mode(), 1, Some(TxOutcome::Committed)),
            "{what}"
        );
    }
}

/// A database busy at `begin` (SQLite) is a conflict too: retried.
#[tokio::test]
async fn a_conflict_at_begin_is_retried() {
    for uc in ALL {
        let what = format!("{uc:?} with begin conflicting once");
        let mut h = Harness::new();
        h.begin_fails(uc.mode(), Fail::Conflict);
        uc.plan(&mut h, None, End::Commit);
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert!(r.is_ok(), "{what}: {r:?}");
        assert_eq!(h.begun(), vec![uc.mode(); 2], "{what}");
        assert_eq!(
            h.observed(),
            vec![
                (uc.mode(), TxOutcome::Retried),
                (uc.mode(), TxOutcome::Committed)
            ],
            "{what}"
        );
    }
}

/// Conflicts on every attempt: exactly `max_attempts` units of work, each
/// rolled back, then `Busy`.
#[tokio::test]
async fn conflicts_on_every_attempt_give_up_busy_after_max_attempts() {
    for uc in ALL {
        let what = format!("{uc:?} conflicting on every attempt");
        let mut h = Harness::with_attempts(3);
        for _ in 0..3 {
            uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
        }
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert_eq!(err_kind(r, &what), ErrKind::Busy, "{what}");
        assert_eq!(h.begun(), vec![uc.mode(); 3], "{what}");
        assert_eq!(
            h.observed(),
            outcomes(uc.mode(), 2, Some(TxOutcome::RolledBack)),
            "{what}"
        );
        h.assert_all_ended(&what);
    }
}

/// Commit conflicts on every attempt also end `Busy` after the bound.
#[tokio::test]
async fn commit_conflicts_on_every_attempt_give_up_busy_after_max_attempts() {
    let uc = UseCase::CreateMessage;
    let mut h = Harness::with_attempts(2);
    uc.plan(&mut h, None, End::CommitFails(Fail::Conflict));
    uc.plan(&mut h, None, End::CommitFails(Fail::Conflict));
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "create_message"), ErrKind::Busy);
    assert_eq!(h.begun().len(), 2);
}

/// Not found, unavailable, unexpected and invalid-cursor failures are
/// answers, not accidents: one attempt only, even with attempts to spare.
#[tokio::test]
async fn failures_other_than_a_conflict_are_never_retried() {
    let cases = [
        (UseCase::CreateMessage, Fail::NotFound),
        (UseCase::CreateMessage, Fail::Unavailable),
        (UseCase::CreateMessage, Fail::Unexpected),
        (UseCase::ListThreads, Fail::InvalidCursor),
        (UseCase::CreateThread, Fail::Duplicate),
    ];
    for (uc, fail) in cases {
        let what = format!("{uc:?} failing {fail:?}");
        let mut h = Harness::with_attempts(5);
        uc.plan(&mut h, Some((0, fail)), End::Rollback);
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert_eq!(err_kind(r, &what), fail.expected(), "{what}");
        assert_eq!(h.begun().len(), 1, "{what}: retried");
        assert!(
            !h.observed().iter().any(|(_, o)| *o == TxOutcome::Retried),
            "{what}"
        );
    }
}

/// A conflict then a real failure: retried once, then the failure is final.
#[tokio::test]
async fn a_conflict_followed_by_not_found_stops_at_not_found() {
    let uc = UseCase::ModifyThread;
    let mut h = Harness::with_attempts(5);
    uc.plan(&mut h, Some((1, Fail::Conflict)), End::Rollback);
    uc.plan(&mut h, Some((0, Fail::NotFound)), End::Rollback);
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "modify_thread"), ErrKind::NotFound);
    assert_eq!(h.begun().len(), 2);
}

/// `RetryPolicy::immediate(1)` means one attempt: a conflict is `Busy` at once.
#[tokio::test]
async fn a_single_attempt_policy_never_retries() {
    let uc = UseCase::DeleteThread;
    let mut h = Harness::with_attempts(1);
    uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "delete_thread"), ErrKind::Busy);
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

/// A misconfigured bound of zero still runs the unit of work once.
#[tokio::test]
async fn a_zero_attempt_policy_still_runs_the_unit_of_work_once() {
    let uc = UseCase::GetThread;
    let mut h = Harness::with_attempts(0);
    uc.plan(&mut h, None, End::Commit);
    let app = h.app();
    uc.run(&app, &h.ctx).await.unwrap();

    let mut h = Harness::with_attempts(0);
    uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "get_thread"), ErrKind::Busy);
    assert_eq!(h.begun().len(), 1);
}

/// The default policy makes five attempts in all, sleeping a jittered
/// backoff between them.
#[tokio::test]
async fn the_default_policy_makes_five_attempts_with_backoff() {
    let uc = UseCase::CreateMessage;
    let mut h = Harness::new();
    h.config.retry = RetryPolicy::default();
    for _ in 0..4 {
        uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    }
    uc.plan(&mut h, None, End::Commit);
    let app = h.app();
    uc.run(&app, &h.ctx).await.unwrap();
    assert_eq!(
        h.observed(),
        outcomes(Mode::ReadWrite, 4, Some(TxOutcome::Committed))
    );

    let mut h = Harness::new();
    h.config.retry = RetryPolicy::default();
    for _ in 0..5 {
        uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    }
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "create_message"), ErrKind::Busy);
    assert_eq!(h.begun().len(), 5);
}

/// A request whose deadline has passed is not retried: the conflict is
/// reported as `Busy` after the one attempt.
#[tokio::test]
async fn no_retry_is_made_past_the_request_deadline() {
    let uc = UseCase::CreateMessage;
    let mut h = Harness::with_attempts(5);
    let base = ctx();
    h.ctx = RequestContext::new(
        base.user().clone(),
        base.request_id().clone(),
        Some(Instant::now()),
    );
    uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "create_message"), ErrKind::Busy);
    assert_eq!(h.begun().len(), 1);
}

/// A deadline still ahead leaves the retries alone.
#[tokio::test]
async fn a_deadline_still_ahead_allows_retries() {
    let uc = UseCase::CreateMessage;
    let mut h = Harness::with_attempts(5);
    let base = ctx();
    let deadline = Instant::now() + Duration::from_secs(60);
    h.ctx = RequestContext::new(
        base.user().clone(),
        base.request_id().clone(),
        Some(deadline),
    );
    uc.plan(&mut h, Some((0, Fail::Conflict)), End::Rollback);
    uc.plan(&mut h, None, End::Commit);
    let app = h.app();
    uc.run(&app, &h.ctx).await.unwrap();
    assert_eq!(h.begun().len(), 2);
}

/// Nothing of a rolled-back attempt leaks into the answer: the retried
/// create mints its ids afresh, and the response renders what was committed.
#[tokio::test]
async fn a_retried_create_answers_with_what_the_committing_attempt_wrote() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|t| {
            assert_eq!(t.id, minted_thread_id(1));
            Err(Fail::Conflict.err())
        });
    });
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_lock_thread_sequence().returning(|| Ok(None));
        u.expect_insert_thread().times(1).returning(|t| {
            assert_eq!(t.id, minted_thread_id(2));
            Ok(())
        });
        u.expect_insert_messages().times(1).returning(|ms| {
            assert!(ms.iter().all(|m| m.thread_id == minted_thread_id(2)));
            Ok(())
        });
    });
    let app = h.app();
    let got = app
        .create_thread(&h.ctx, create_cmd(), render_thread())
        .await
        .unwrap();
    let committed = create_cmd().to_thread(minted_thread_id(2), crate::support::now());
    assert_eq!(got, rendered_thread(&committed));
}

/// The retried create_message appends the message once per attempt, each
/// in its own unit of work, with an id minted afresh.
#[tokio::test]
async fn a_retried_create_message_appends_again_in_the_fresh_unit_of_work() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_append_message()
            .withf(|m| m.id == minted_message_id(1))
            .times(1)
            .returning(|_| Err(Fail::Conflict.err()));
    });
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        u.expect_append_message()
            .withf(|m| m.id == minted_message_id(2))
            .times(1)
            .returning(|_| Ok(Appended::Done));
    });
    let app = h.app();
    app.create_message(
        &h.ctx,
        thread_id(1),
        new_message(Role::User, "hi"),
        render_message(),
    )
    .await
    .unwrap();
    assert_eq!(
        h.observed(),
        outcomes(Mode::ReadWrite, 1, Some(TxOutcome::Committed))
    );
}

/// A database busy at every `begin`: `max_attempts` begins, no body call,
/// then `Busy`.
#[tokio::test]
async fn a_database_busy_at_every_begin_ends_busy_after_max_attempts() {
    let uc = UseCase::CreateThread;
    let mut h = Harness::with_attempts(3);
    h.no_ids();
    for _ in 0..3 {
        h.begin_fails(Mode::ReadWrite, Fail::Conflict);
    }
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "create_thread"), ErrKind::Busy);
    assert_eq!(h.begun(), vec![Mode::ReadWrite; 3]);
    assert_eq!(
        h.observed(),
        vec![
            (Mode::ReadWrite, TxOutcome::Retried),
            (Mode::ReadWrite, TxOutcome::Retried)
        ]
    );
}

/// A connection lost during COMMIT leaves the outcome unknown: never
/// retried (it may have committed), answered as unavailable, and reported
/// to the observer as `CommitUnknown`, not as a rollback.
#[tokio::test]
async fn a_commit_lost_mid_flight_is_not_retried_and_is_reported_as_unknown() {
    let uc = UseCase::CreateMessage;
    let mut h = Harness::with_attempts(5);
    uc.plan(&mut h, None, End::CommitFails(Fail::Unavailable));
    let app = h.app();
    let r = uc.run(&app, &h.ctx).await;
    assert_eq!(err_kind(r, "create_message"), ErrKind::Unavailable);
    assert_eq!(h.begun().len(), 1, "an unknown-outcome commit was retried");
    assert_eq!(
        h.observed(),
        vec![(Mode::ReadWrite, TxOutcome::CommitUnknown)]
    );
}
