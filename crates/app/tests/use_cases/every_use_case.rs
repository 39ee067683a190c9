//! The unit-of-work rules, checked across every single-transaction use case
//! from one table: the right mode, commit exactly once on success, and on
//! each repository call failing no commit, one rollback and the right error.

use weft_ports::TxOutcome;

use crate::support::{End, ErrKind, Fail, Harness, ALL};

/// Success: one `begin` in the use case's mode, every call of its path in
/// order, one commit, no rollback, one `Committed` outcome.
#[tokio::test]
async fn every_use_case_begins_in_its_mode_and_commits_exactly_once_on_success() {
    for uc in ALL {
        let mut h = Harness::new();
        uc.plan(&mut h, None, End::Commit);
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert!(r.is_ok(), "{uc:?}: {r:?}");
        assert_eq!(h.begun(), vec![uc.mode()], "{uc:?}");
        assert_eq!(
            h.observed(),
            vec![(uc.mode(), TxOutcome::Committed)],
            "{uc:?}"
        );
        h.assert_all_ended(&format!("{uc:?}"));
    }
}

/// Each call of each use case failing with each error it can raise: no
/// commit, exactly one rollback, no later call, and the mapped error.
#[tokio::test]
async fn every_use_case_rolls_back_once_with_the_mapped_error_when_any_call_fails() {
    let mut cases = 0;
    for uc in ALL {
        for (i, step) in uc.steps().into_iter().enumerate() {
            let mut fails = vec![Fail::NotFound, Fail::Unavailable, Fail::Unexpected];
            if step.takes_a_cursor() {
                fails.push(Fail::InvalidCursor);
            }
            for fail in fails {
                let what = format!("{uc:?} with {step:?} failing {fail:?}");
                let mut h = Harness::new();
                uc.plan(&mut h, Some((i, fail)), End::Rollback);
                let app = h.app();
                let r = uc.run(&app, &h.ctx).await;
                assert_eq!(
                    crate::support::err_kind(r, &what),
                    fail.expected(),
                    "{what}"
                );
                assert_eq!(
                    h.begun(),
                    vec![uc.mode()],
                    "{what}: retried or begun in the wrong mode"
                );
                assert_eq!(
                    h.observed(),
                    vec![(uc.mode(), TxOutcome::RolledBack)],
                    "{what}"
                );
                h.assert_all_ended(&what);
                cases += 1;
            }
        }
    }
    assert!(cases >= 60, "the table covers {cases} cases");
}

/// A duplicate id from an insert of a thread or message is a bug or
/// corruption: unexpected, rolled back, not retried.
#[tokio::test]
async fn a_duplicate_id_on_insert_is_unexpected_and_rolled_back() {
    use crate::support::{Step, UseCase};
    for uc in [
        UseCase::CreateThread,
        UseCase::CreateThreadIdempotent,
        UseCase::CreateMessage,
        UseCase::CreateMessageIdempotent,
    ] {
        for (i, step) in uc.steps().into_iter().enumerate() {
            if !matches!(step, Step::InsertThread | Step::InsertMessages) {
                continue;
            }
            let what = format!("{uc:?} with {step:?} failing Duplicate");
            let mut h = Harness::new();
            uc.plan(&mut h, Some((i, Fail::Duplicate)), End::Rollback);
            let app = h.app();
            let r = uc.run(&app, &h.ctx).await;
            assert_eq!(
                crate::support::err_kind(r, &what),
                ErrKind::Unexpected,
                "{what}"
            );
            assert_eq!(h.begun().len(), 1, "{what}: a duplicate id is not retried");
        }
    }
}

/// `begin` failing: the error is reported, no repository call is made (the
/// factory hands out no unit of work), no id is minted, nothing is observed.
#[tokio::test]
async fn every_use_case_makes_no_call_when_begin_fails() {
    for uc in ALL {
        for fail in [Fail::Unavailable, Fail::Unexpected] {
            let what = format!("{uc:?} with begin failing {fail:?}");
            let mut h = Harness::new();
            h.no_ids();
            h.begin_fails(uc.mode(), fail);
            let app = h.app();
            let r = uc.run(&app, &h.ctx).await;
            assert_eq!(
                crate::support::err_kind(r, &what),
                fail.expected(),
                "{what}"
            );
            assert_eq!(h.begun(), vec![uc.mode()], "{what}: retried");
            assert_eq!(h.observed(), vec![], "{what}");
        }
    }
}

/// A rollback that fails does not hide why the body failed: the caller sees
/// the body's error.
#[tokio::test]
async fn a_failing_rollback_still_reports_the_body_error() {
    for uc in ALL {
        let what = format!("{uc:?} with its first call failing NotFound and the rollback failing");
        let mut h = Harness::new();
        uc.plan(
            &mut h,
            Some((0, Fail::NotFound)),
            End::RollbackFails(Fail::Unavailable),
        );
        let app = h.app();
        let r = uc.run(&app, &h.ctx).await;
        assert_eq!(
            crate::support::err_kind(r, &what),
            ErrKind::NotFound,
            "{what}"
        );
        assert_eq!(
            h.observed(),
            vec![(uc.mode(), TxOutcome::RolledBack)],
            "{what}"
        );
    }
}

/// A commit that fails with anything but a conflict reports that error and
/// is not retried: after a lost connection the outcome is unknown (and is
/// observed as such), any other failure is a rollback.
#[tokio::test]
async fn a_commit_failing_other_than_by_conflict_is_reported_and_never_retried() {
    for uc in ALL {
        for fail in [Fail::Unavailable, Fail::Unexpected] {
            let what = format!("{uc:?} with commit failing {fail:?}");
            let mut h = Harness::with_attempts(5);
            uc.plan(&mut h, None, End::CommitFails(fail));
            let app = h.app();
            let r = uc.run(&app, &h.ctx).await;
            assert_eq!(
                crate::support::err_kind(r, &what),
                fail.expected(),
                "{what}"
            );
            assert_eq!(h.begun(), vec![uc.mode()], "{what}: retried");
            let outcome = match fail {
                Fail::Unavailable => TxOutcome::CommitUnknown,
                _ => TxOutcome::RolledBack,
            };
            assert_eq!(h.observed(), vec![(uc.mode(), outcome)], "{what}");
        }
    }
}

/// Each unit of work is begun for the caller's own request context (the
/// adapter scopes every query to its user), whoever the caller is.
#[tokio::test]
async fn every_use_case_begins_its_unit_of_work_with_the_callers_context() {
    for uc in ALL {
        let mut h = Harness::new();
        h.ctx = weft_ports::RequestContext::new(
            weft_domain::UserId::parse("user_bob").unwrap(),
            weft_domain::RequestId::parse("req-bob-42").unwrap(),
            None,
        );
        uc.plan(&mut h, None, End::Commit);
        let app = h.app();
        // The harness's factory asserts `begin` receives exactly `h.ctx`.
        let r = uc.run(&app, &h.ctx).await;
        assert!(r.is_ok(), "{uc:?}: {r:?}");
    }
}

/// The use-case futures are `Send + 'static` once given owned inputs, so the
/// HTTP layer can run them in a spawned task that completes (commits or
/// rolls back) even when the request is dropped.
#[tokio::test]
async fn every_use_case_runs_to_completion_in_a_spawned_task() {
    for uc in ALL {
        let mut h = Harness::new();
        uc.plan(&mut h, None, End::Commit);
        let (app, ctx) = (h.app(), h.ctx.clone());
        let r = tokio::spawn(async move { uc.run(&app, &ctx).await })
            .await
            .unwrap();
        assert!(r.is_ok(), "{uc:?}: {r:?}");
        assert_eq!(
            h.observed(),
            vec![(uc.mode(), TxOutcome::Committed)],
            "{uc:?}"
        );
    }
}
