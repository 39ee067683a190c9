//! Auto-rename: read in a read-only unit of work, call the title generator
//! with no unit of work open, write in a read-write one that re-checks the
//! thread. Every generator installed by [`Harness::titles`] asserts, when
//! called, that the count of open units of work is zero — so each test here
//! also re-proves that the generator never runs inside a transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mockall::Sequence;
use weft_domain::{
    derive_title, Content, ContentInput, ContentPartInput, Message, Role, Thread, Title,
};
use weft_ports::mocks::MockUnitOfWork;
use weft_ports::{Mode, TitleError, TitleGenerator, TxOutcome};

use crate::support::{
    at, err_kind, message, now, thread, thread_id, title, End, ErrKind, Fail, Harness,
};

const FIRST: &str = "Quarterly GPU cost review for the infra team";

fn first_message() -> Message {
    message(1, 10, Role::User, FIRST)
}

/// The read step: the thread, then its first user message.
fn read(u: &mut MockUnitOfWork, seen: Thread, first: Option<Message>) {
    let mut seq = Sequence::new();
    u.expect_get_thread()
        .withf(|id| *id == thread_id(1))
        .times(1)
        .in_sequence(&mut seq)
        .return_once(move |_| Ok(seen));
    u.expect_first_user_message()
        .withf(|id| *id == thread_id(1))
        .times(1)
        .in_sequence(&mut seq)
        .return_once(move |_| Ok(first));
}

/// The write step up to its decision: the thread locked, then its first
/// user message re-read.
fn recheck(u: &mut MockUnitOfWork, seq: &mut Sequence, current: Thread, first: Option<Message>) {
    u.expect_lock_thread()
        .withf(|id| *id == thread_id(1))
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| Ok(current));
    u.expect_first_user_message()
        .withf(|id| *id == thread_id(1))
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| Ok(first));
}

/// The full write step, expecting `expected` to be written.
fn write(u: &mut MockUnitOfWork, current: Thread, first: Message, expected: Thread) {
    let mut seq = Sequence::new();
    recheck(u, &mut seq, current, Some(first));
    u.expect_update_thread()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |t| {
            assert_eq!(t, &expected);
            Ok(())
        });
}

fn titled(mut t: Thread, s: &str, updated: weft_domain::Timestamp) -> Thread {
    t.title = Some(title(s));
    t.updated_at = updated;
    t
}

// ---------------------------------------------------------------- success

/// The happy path: read-only read, generator called once with the first
/// user message's text and no unit of work open, read-write write of the
/// new title with `updated_at` now; both committed once.
#[tokio::test]
async fn auto_rename_reads_then_calls_the_generator_outside_any_unit_of_work_then_writes_the_title()
{
    let mut h = Harness::new();
    h.no_ids();
    h.titles(|_| Ok(title("GPU costs")));
    let expected = titled(thread(1), "GPU costs", now());
    let want = expected.clone();
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(),
        expected
    );
    assert_eq!(h.begun(), vec![Mode::ReadOnly, Mode::ReadWrite]);
    assert_eq!(h.title_calls(), vec![FIRST.to_owned()]);
    assert_eq!(
        h.observed(),
        vec![
            (Mode::ReadOnly, TxOutcome::Committed),
            (Mode::ReadWrite, TxOutcome::Committed)
        ]
    );
    h.assert_all_ended("auto_rename");
}

/// The rename future is `Send + 'static` with owned inputs, so the HTTP
/// layer can spawn it and let it finish after a client disconnect.
#[tokio::test]
async fn auto_rename_runs_to_completion_in_a_spawned_task() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    let want = titled(thread(1), "GPU costs", now());
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let (app, ctx) = (h.app(), h.ctx.clone());
    let got = tokio::spawn(async move { app.auto_rename(&ctx, thread_id(1)).await })
        .await
        .unwrap();
    assert_eq!(got.unwrap().title, Some(title("GPU costs")));
}

/// The proof's control: the counter the generator checks really sees the
/// units of work — it is 1 inside each of them and 0 at the generator.
#[tokio::test]
async fn the_open_unit_of_work_counter_is_one_inside_each_unit_of_work_and_zero_at_the_generator() {
    let mut h = Harness::new();
    let open = h.open_counter();
    let seen_at_generator = Arc::new(AtomicUsize::new(usize::MAX));
    let (o, s) = (open.clone(), seen_at_generator.clone());
    h.titles(move |_| {
        s.store(o.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(title("GPU costs"))
    });
    let (o1, o2) = (open.clone(), open.clone());
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        u.expect_get_thread().times(1).returning(move |_| {
            assert_eq!(
                o1.load(Ordering::SeqCst),
                1,
                "the read unit of work is counted open"
            );
            Ok(thread(1))
        });
        u.expect_first_user_message()
            .times(1)
            .returning(|_| Ok(Some(first_message())));
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        u.expect_lock_thread().times(1).returning(move |_| {
            assert_eq!(
                o2.load(Ordering::SeqCst),
                1,
                "the write unit of work is counted open"
            );
            Ok(thread(1))
        });
        u.expect_first_user_message()
            .times(1)
            .returning(|_| Ok(Some(first_message())));
        u.expect_update_thread().times(1).returning(|_| Ok(()));
    });
    let app = h.app();
    app.auto_rename(&h.ctx, thread_id(1)).await.unwrap();
    assert_eq!(seen_at_generator.load(Ordering::SeqCst), 0);
    assert_eq!(open.load(Ordering::SeqCst), 0);
}

/// The generator gets the plain text of every part, joined by newlines.
#[tokio::test]
async fn auto_rename_gives_the_generator_the_plain_text_of_all_parts() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("t")));
    let mut first = first_message();
    first.content = Content::parse(ContentInput::Parts(vec![
        ContentPartInput::Text("part one".into()),
        ContentPartInput::Text("part two".into()),
    ]))
    .unwrap();
    let (f1, f2) = (first.clone(), first.clone());
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        read(u, thread(1), Some(f1))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), f2, titled(thread(1), "t", now()));
    });
    let app = h.app();
    app.auto_rename(&h.ctx, thread_id(1)).await.unwrap();
    assert_eq!(h.title_calls(), vec!["part one\npart two".to_owned()]);
}

/// A first user message with no text (only an image) gives the model
/// nothing to name: it is not asked, and the derived title is written.
#[tokio::test]
async fn auto_rename_of_an_image_only_message_never_asks_the_generator() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("invented by the model")));
    let mut first = first_message();
    first.content = Content::parse(ContentInput::Parts(vec![ContentPartInput::ImageUrl {
        url: "https://example.com/cat.png".into(),
        detail: None,
    }]))
    .unwrap();
    let derived = derive_title("");
    let (f1, f2) = (first.clone(), first.clone());
    let want = titled(thread(1), derived.as_str(), now());
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        read(u, thread(1), Some(f1))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), f2, want)
    });
    let app = h.app();
    let renamed = app.auto_rename(&h.ctx, thread_id(1)).await.unwrap();
    assert_eq!(renamed.title, Some(derived));
    assert!(h.title_calls().is_empty(), "{:?}", h.title_calls());
}

/// A title nobody changed since the read is replaced by the generated one.
#[tokio::test]
async fn auto_rename_replaces_an_existing_title_nobody_changed_meanwhile() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    let old = titled(thread(1), "Old", at(-500));
    let (seen, current) = (old.clone(), old.clone());
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        read(u, seen, Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, current, first_message(), titled(old, "GPU costs", now()));
    });
    let app = h.app();
    let got = app.auto_rename(&h.ctx, thread_id(1)).await.unwrap();
    assert_eq!(got.title, Some(title("GPU costs")));
}

/// A thread whose `updated_at` is ahead of this clock keeps it.
#[tokio::test]
async fn auto_rename_never_moves_updated_at_backwards() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    let mut ahead = thread(1);
    ahead.updated_at = at(120);
    let (seen, current, expected) = (
        ahead.clone(),
        ahead.clone(),
        titled(ahead, "GPU costs", at(120)),
    );
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        read(u, seen, Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, current, first_message(), expected)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1))
            .await
            .unwrap()
            .updated_at,
        at(120)
    );
}

// ---------------------------------------------------------------- generator fallback

/// A generator error is not the client's problem: the deterministic derived
/// title is written instead.
#[tokio::test]
async fn auto_rename_falls_back_to_the_derived_title_when_the_generator_fails() {
    let mut h = Harness::new();
    h.titles(|_| Err(TitleError("model overloaded".into())));
    let expected = weft_domain::Thread {
        title: Some(derive_title(FIRST)),
        updated_at: now(),
        ..thread(1)
    };
    let want = expected.clone();
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(),
        expected
    );
    assert_eq!(
        h.title_calls().len(),
        1,
        "a failed generator is not called again"
    );
}

/// A generator that never answers, checking the proof's counter too.
struct NeverAnswers {
    open: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl TitleGenerator for NeverAnswers {
    async fn generate(&self, _first_user_text: &str) -> Result<Title, TitleError> {
        assert_eq!(
            self.open.load(Ordering::SeqCst),
            0,
            "generator called inside a unit of work"
        );
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// A generator that hangs is cut off by `title_timeout`, and the derived
/// title is written; no unit of work is held open meanwhile.
#[tokio::test]
async fn auto_rename_falls_back_to_the_derived_title_when_the_generator_times_out() {
    let mut h = Harness::new();
    h.config.title_timeout = Duration::from_millis(20);
    let calls = Arc::new(AtomicUsize::new(0));
    h.title_generator(Arc::new(NeverAnswers {
        open: h.open_counter(),
        calls: calls.clone(),
    }));
    let expected = titled(thread(1), derive_title(FIRST).as_str(), now());
    let want = expected.clone();
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let app = h.app();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        app.auto_rename(&h.ctx, thread_id(1)),
    )
    .await
    .expect("the title timeout bounds the rename");
    assert_eq!(got.unwrap(), expected);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------- failures

/// A missing thread: not found from the read, the generator is never called,
/// no write unit of work is begun.
#[tokio::test]
async fn auto_rename_is_not_found_for_a_missing_thread_and_never_calls_the_generator() {
    let mut h = Harness::new();
    h.uow(Mode::ReadOnly, End::Rollback, |u| {
        u.expect_get_thread()
            .times(1)
            .returning(|_| Err(Fail::NotFound.err()));
        u.expect_first_user_message().never();
    });
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::NotFound);
    assert_eq!(h.begun(), vec![Mode::ReadOnly]);
}

/// No user message to derive a title from: refused, generator never called.
#[tokio::test]
async fn auto_rename_refuses_a_thread_without_a_user_message() {
    let mut h = Harness::new();
    h.uow(Mode::ReadOnly, End::Rollback, |u| read(u, thread(1), None));
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::NoUserMessage);
    assert_eq!(h.begun(), vec![Mode::ReadOnly]);
    assert_eq!(h.observed(), vec![(Mode::ReadOnly, TxOutcome::RolledBack)]);
}

/// The thread was deleted while the generator ran: not found, nothing
/// written, the write unit of work rolled back.
#[tokio::test]
async fn auto_rename_is_not_found_when_the_thread_vanished_before_the_write() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        u.expect_lock_thread()
            .times(1)
            .returning(|_| Err(Fail::NotFound.err()));
        u.expect_update_thread().never();
    });
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::NotFound);
    assert_eq!(h.begun(), vec![Mode::ReadOnly, Mode::ReadWrite]);
    assert_eq!(
        h.observed(),
        vec![
            (Mode::ReadOnly, TxOutcome::Committed),
            (Mode::ReadWrite, TxOutcome::RolledBack)
        ]
    );
}

/// The only user message was deleted while the generator ran: refused,
/// nothing written.
#[tokio::test]
async fn auto_rename_refuses_when_the_user_message_vanished_before_the_write() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        recheck(u, &mut seq, thread(1), None);
        u.expect_update_thread().never();
    });
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::NoUserMessage);
}

/// Someone titled the thread while the generator ran: their title is newer
/// and is kept; nothing is written and the kept thread is returned.
#[tokio::test]
async fn auto_rename_keeps_a_title_set_meanwhile() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    let theirs = titled(thread(1), "Named by a person", at(-10));
    let current = theirs.clone();
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        recheck(u, &mut seq, current, Some(first_message()));
        u.expect_update_thread().never();
    });
    let app = h.app();
    assert_eq!(app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(), theirs);
}

/// The first user message changed while the generator ran (the first one
/// was deleted): the rename starts over from the read, and the generator
/// is asked again about the new text — each time with no unit of work open.
#[tokio::test]
async fn auto_rename_starts_over_when_the_first_user_message_changed() {
    let mut h = Harness::new();
    h.titles(|text| Ok(title(&format!("about {text}"))));
    let newer = message(1, 11, Role::User, "Actually, storage costs");
    let (n1, n2, n3, n4) = (newer.clone(), newer.clone(), newer.clone(), newer.clone());
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        recheck(u, &mut seq, thread(1), Some(n1));
        u.expect_update_thread().never();
    });
    h.uow(Mode::ReadOnly, End::Commit, move |u| {
        read(u, thread(1), Some(n2))
    });
    let expected = titled(thread(1), "about Actually, storage costs", now());
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), n3, want)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(),
        expected
    );
    assert_eq!(
        h.begun(),
        vec![
            Mode::ReadOnly,
            Mode::ReadWrite,
            Mode::ReadOnly,
            Mode::ReadWrite
        ]
    );
    assert_eq!(
        h.title_calls(),
        vec![FIRST.to_owned(), n4.content.plain_text()]
    );
}

/// A conversation whose first message keeps changing: `Busy` after the
/// policy's bound of rounds.
#[tokio::test]
async fn auto_rename_gives_up_busy_when_the_first_user_message_keeps_changing() {
    let mut h = Harness::with_attempts(2);
    h.titles(|_| Ok(title("t")));
    for round in 0..2u128 {
        let seen = message(1, 10 + round, Role::User, "seen");
        let changed = message(1, 20 + round, Role::User, "changed");
        h.uow(Mode::ReadOnly, End::Commit, move |u| {
            read(u, thread(1), Some(seen))
        });
        h.uow(Mode::ReadWrite, End::Commit, move |u| {
            let mut seq = Sequence::new();
            recheck(u, &mut seq, thread(1), Some(changed));
        });
    }
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::Busy);
    assert_eq!(h.begun().len(), 4);
    assert_eq!(h.title_calls().len(), 2);
}

/// Each call of the write step failing: the error, a rollback, no update
/// after the failing call, and no retry.
#[tokio::test]
async fn auto_rename_rolls_back_the_write_when_any_of_its_calls_fails() {
    for fail in [Fail::Unavailable, Fail::Unexpected] {
        for at_call in ["lock_thread", "first_user_message", "update_thread"] {
            let what = format!("auto_rename with {at_call} failing {fail:?}");
            let mut h = Harness::with_attempts(5);
            h.titles(|_| Ok(title("t")));
            h.uow(Mode::ReadOnly, End::Commit, |u| {
                read(u, thread(1), Some(first_message()))
            });
            h.uow(Mode::ReadWrite, End::Rollback, |u| {
                let e = move |name: &str| {
                    if name == at_call {
                        Err(fail.err())
                    } else {
                        Ok(())
                    }
                };
                let mut seq = Sequence::new();
                let lock = e("lock_thread");
                u.expect_lock_thread()
                    .times(1)
                    .in_sequence(&mut seq)
                    .return_once(move |_| lock.map(|()| thread(1)));
                if at_call == "lock_thread" {
                    return;
                }
                let first = e("first_user_message");
                u.expect_first_user_message()
                    .times(1)
                    .in_sequence(&mut seq)
                    .return_once(move |_| first.map(|()| Some(first_message())));
                if at_call == "first_user_message" {
                    return;
                }
                let update = e("update_thread");
                u.expect_update_thread()
                    .times(1)
                    .in_sequence(&mut seq)
                    .return_once(move |_| update);
            });
            let app = h.app();
            let r = app.auto_rename(&h.ctx, thread_id(1)).await;
            assert_eq!(err_kind(r, &what), fail.expected(), "{what}");
            assert_eq!(
                h.begun(),
                vec![Mode::ReadOnly, Mode::ReadWrite],
                "{what}: retried"
            );
            h.assert_all_ended(&what);
        }
    }
}

/// Each call of the read step failing: the error, a rollback, no generator call.
#[tokio::test]
async fn auto_rename_rolls_back_the_read_when_any_of_its_calls_fails() {
    for fail in [Fail::Unavailable, Fail::Unexpected] {
        for first_fails in [false, true] {
            let what = format!(
                "auto_rename with the read's call #{} failing {fail:?}",
                1 + usize::from(first_fails)
            );
            let mut h = Harness::with_attempts(5);
            h.uow(Mode::ReadOnly, End::Rollback, |u| {
                if first_fails {
                    u.expect_get_thread().times(1).returning(|_| Ok(thread(1)));
                    u.expect_first_user_message()
                        .times(1)
                        .returning(move |_| Err(fail.err()));
                } else {
                    u.expect_get_thread()
                        .times(1)
                        .returning(move |_| Err(fail.err()));
                }
            });
            let app = h.app();
            let r = app.auto_rename(&h.ctx, thread_id(1)).await;
            assert_eq!(err_kind(r, &what), fail.expected(), "{what}");
            assert_eq!(h.begun(), vec![Mode::ReadOnly], "{what}");
        }
    }
}

/// The read cannot begin: the error, and nothing else happens.
#[tokio::test]
async fn auto_rename_makes_no_call_when_the_read_cannot_begin() {
    let mut h = Harness::new();
    h.begin_fails(Mode::ReadOnly, Fail::Unavailable);
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::Unavailable);
    assert_eq!(h.begun(), vec![Mode::ReadOnly]);
}

/// The write cannot begin: the error, after exactly one generator call.
#[tokio::test]
async fn auto_rename_reports_a_write_that_cannot_begin() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("t")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.begin_fails(Mode::ReadWrite, Fail::Unavailable);
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::Unavailable);
    assert_eq!(h.title_calls().len(), 1);
}

// ---------------------------------------------------------------- retries

/// A conflict in the write retries only the write unit of work: the read
/// and the generator are not repeated.
#[tokio::test]
async fn a_conflict_in_the_write_retries_only_the_write_unit_of_work() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        recheck(u, &mut seq, thread(1), Some(first_message()));
        u.expect_update_thread()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(Fail::Conflict.err()));
    });
    let expected = titled(thread(1), "GPU costs", now());
    let want = expected.clone();
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(),
        expected
    );
    assert_eq!(
        h.begun(),
        vec![Mode::ReadOnly, Mode::ReadWrite, Mode::ReadWrite]
    );
    assert_eq!(h.title_calls().len(), 1);
    assert_eq!(
        h.observed(),
        vec![
            (Mode::ReadOnly, TxOutcome::Committed),
            (Mode::ReadWrite, TxOutcome::RolledBack),
            (Mode::ReadWrite, TxOutcome::Retried),
            (Mode::ReadWrite, TxOutcome::Committed),
        ]
    );
}

/// A conflict in the read retries the read before the generator is called.
#[tokio::test]
async fn a_conflict_in_the_read_retries_the_read_before_the_generator_runs() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Rollback, |u| {
        u.expect_get_thread()
            .times(1)
            .returning(|_| Err(Fail::Conflict.err()));
    });
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    let want = titled(thread(1), "GPU costs", now());
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), want)
    });
    let app = h.app();
    app.auto_rename(&h.ctx, thread_id(1)).await.unwrap();
    assert_eq!(
        h.begun(),
        vec![Mode::ReadOnly, Mode::ReadOnly, Mode::ReadWrite]
    );
    assert_eq!(h.title_calls().len(), 1);
}

/// The write's commit failing with a lost connection is reported, not retried.
#[tokio::test]
async fn a_write_commit_failing_unavailable_is_reported_and_not_retried() {
    let mut h = Harness::with_attempts(5);
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    let want = titled(thread(1), "GPU costs", now());
    h.uow(
        Mode::ReadWrite,
        End::CommitFails(Fail::Unavailable),
        move |u| {
            write(u, thread(1), first_message(), want);
        },
    );
    let app = h.app();
    let r = app.auto_rename(&h.ctx, thread_id(1)).await;
    assert_eq!(err_kind(r, "auto_rename"), ErrKind::Unavailable);
    assert_eq!(h.begun(), vec![Mode::ReadOnly, Mode::ReadWrite]);
}

/// The write's commit refused with a conflict: only the write unit of work
/// runs again, re-checking the thread; the generator is not called again.
#[tokio::test]
async fn a_write_commit_conflict_retries_only_the_write_unit_of_work() {
    let mut h = Harness::new();
    h.titles(|_| Ok(title("GPU costs")));
    h.uow(Mode::ReadOnly, End::Commit, |u| {
        read(u, thread(1), Some(first_message()))
    });
    let expected = titled(thread(1), "GPU costs", now());
    let (w1, w2) = (expected.clone(), expected.clone());
    h.uow(
        Mode::ReadWrite,
        End::CommitFails(Fail::Conflict),
        move |u| {
            write(u, thread(1), first_message(), w1);
        },
    );
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        write(u, thread(1), first_message(), w2)
    });
    let app = h.app();
    assert_eq!(
        app.auto_rename(&h.ctx, thread_id(1)).await.unwrap(),
        expected
    );
    assert_eq!(
        h.begun(),
        vec![Mode::ReadOnly, Mode::ReadWrite, Mode::ReadWrite]
    );
    assert_eq!(h.title_calls().len(), 1);
}
