//! Idempotent creates (one protocol, `weft_app::idempotency`): the key is
//! looked up in the 24 h window, the objects are created, then the key is
//! recorded with the rendered response — all in one unit of work; a
//! matching retry replays the stored response and writes nothing; another
//! request with the key is refused; losing the record race retries, and the
//! next attempt replays.

use mockall::Sequence;
use weft_app::Idempotency;
use weft_domain::Role;
use weft_ports::{Appended, IdempotencyRecord, Mode, TxOutcome};

use crate::support::{
    create_cmd, err_kind, idem, minted_message_id, minted_thread_id, new_message, now,
    render_message, render_thread, rendered_message, rendered_thread, stored, thread_id, End,
    ErrKind, Fail, Harness, DAY_SECS, NOW_SECS,
};

fn key() -> Idempotency {
    idem(
        "retry-me-1",
        serde_json::json!({"messages": [{"role": "user", "content": "hello"}]}),
    )
}

fn other_request() -> Idempotency {
    idem("retry-me-1", serde_json::json!({"messages": []}))
}

/// A record for the key as an earlier request left it.
fn record(of: &Idempotency, body: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        key: of.key.clone(),
        fingerprint: of.fingerprint.clone(),
        response: stored(body),
        created_at: crate::support::at(-3600),
    }
}

/// The window's start: records older than 24 h are not replayed.
fn window_start() -> weft_domain::Timestamp {
    weft_domain::Timestamp::from_unix_seconds(NOW_SECS - DAY_SECS)
}

/// Expects the writes of a thread create: the owner's thread sequence
/// locked, the thread (the `k`-th minted id) and its messages inserted.
fn expect_thread_writes(u: &mut weft_ports::mocks::MockUnitOfWork, seq: &mut Sequence, k: u32) {
    u.expect_lock_thread_sequence()
        .times(1)
        .in_sequence(seq)
        .returning(|| Ok(None));
    u.expect_lock_thread_sequence().returning(|| Ok(None));
    u.expect_insert_thread()
        .withf(move |t| t.id == minted_thread_id(k))
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(()));
    u.expect_insert_messages()
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(()));
}

/// Expects the write of a message create: one append of the `k`-th minted
/// message id to thread 3.
fn expect_append(u: &mut weft_ports::mocks::MockUnitOfWork, seq: &mut Sequence, k: u32) {
    u.expect_append_message()
        .withf(move |m| m.thread_id == thread_id(3) && m.id == minted_message_id(k))
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(Appended::Done));
}

/// Expects a lookup of [`key`] within the window, answering `found`.
fn expect_find(
    u: &mut weft_ports::mocks::MockUnitOfWork,
    seq: &mut Sequence,
    found: Option<IdempotencyRecord>,
) {
    u.expect_find_idempotency()
        .withf(|k, not_before| *k == key().key && *not_before == window_start())
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _| Ok(found));
}

// ---------------------------------------------------------------- threads

/// First use of a key: looked up in the 24 h window, then the thread and
/// its messages written, then the key recorded with the rendered response
/// and the clock's time — one unit of work, committed once.
#[tokio::test]
async fn create_thread_idempotent_records_the_key_with_the_rendered_response_in_the_same_unit_of_work(
) {
    let mut h = Harness::new();
    let created = create_cmd().to_thread(minted_thread_id(1), now());
    let expected_record = IdempotencyRecord {
        key: key().key,
        fingerprint: key().fingerprint,
        response: rendered_thread(&created),
        created_at: now(),
    };
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        expect_thread_writes(u, &mut seq, 1);
        u.expect_insert_idempotency()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |rec, not_before| {
                assert_eq!(rec, &expected_record);
                assert_eq!(
                    not_before,
                    window_start(),
                    "an expired record may be replaced"
                );
                Ok(())
            });
    });
    let app = h.app();
    let got = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await
        .unwrap();
    assert_eq!(got, rendered_thread(&created));
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::Committed)]);
}

/// The same request again: the stored response is replayed byte for byte;
/// no id is minted and nothing is written. (The read-write unit of work that
/// only read is committed.)
#[tokio::test]
async fn create_thread_idempotent_replays_a_matching_record_and_writes_nothing() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&key(), "the first answer")));
        u.expect_insert_idempotency().never();
        u.expect_insert_thread().never();
        u.expect_insert_messages().never();
    });
    let app = h.app();
    let got = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await
        .unwrap();
    assert_eq!(got, stored("the first answer"));
}

/// The key with another request: refused, nothing written, rolled back,
/// not retried.
#[tokio::test]
async fn create_thread_idempotent_refuses_a_key_reused_with_another_request() {
    let mut h = Harness::with_attempts(5);
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(
            u,
            &mut seq,
            Some(record(&other_request(), "another answer")),
        );
        u.expect_insert_idempotency().never();
        u.expect_insert_thread().never();
    });
    let app = h.app();
    let r = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await;
    assert_eq!(
        err_kind(r, "create_thread_idempotent"),
        ErrKind::IdempotencyKeyReused
    );
    assert_eq!(h.begun().len(), 1);
    assert_eq!(h.observed(), vec![(Mode::ReadWrite, TxOutcome::RolledBack)]);
}

/// Two requests with one key race: this one's claim hits the winner's
/// record (Duplicate). Its attempt is rolled back before the thread is
/// written, retried, and the next attempt replays the winner's response.
#[tokio::test]
async fn create_thread_idempotent_retries_a_lost_claim_and_replays_the_winner() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        expect_thread_writes(u, &mut seq, 1);
        u.expect_insert_idempotency()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(Fail::Duplicate.err()));
    });
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&key(), "the winner's answer")));
        u.expect_insert_idempotency().never();
        u.expect_insert_thread().never();
    });
    let app = h.app();
    let got = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await
        .unwrap();
    assert_eq!(got, stored("the winner's answer"));
    assert_eq!(
        h.observed(),
        vec![
            (Mode::ReadWrite, TxOutcome::RolledBack),
            (Mode::ReadWrite, TxOutcome::Retried),
            (Mode::ReadWrite, TxOutcome::Committed),
        ]
    );
}

/// The winner of the race sent another request with the key: after the
/// retry this one is refused.
#[tokio::test]
async fn create_thread_idempotent_refuses_the_key_after_losing_the_claim_to_another_request() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        expect_thread_writes(u, &mut seq, 1);
        u.expect_insert_idempotency()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(Fail::Duplicate.err()));
    });
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&other_request(), "theirs")));
    });
    let app = h.app();
    let r = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await;
    assert_eq!(
        err_kind(r, "create_thread_idempotent"),
        ErrKind::IdempotencyKeyReused
    );
}

/// A claim lost on every attempt (the record never becomes visible) ends
/// `Busy` after the bound.
#[tokio::test]
async fn a_claim_lost_on_every_attempt_ends_busy() {
    let mut h = Harness::with_attempts(2);
    for k in 1..=2 {
        h.uow(Mode::ReadWrite, End::Rollback, move |u| {
            let mut seq = Sequence::new();
            expect_find(u, &mut seq, None);
            expect_thread_writes(u, &mut seq, k);
            u.expect_insert_idempotency()
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _| Err(Fail::Duplicate.err()));
        });
    }
    let app = h.app();
    let r = app
        .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
        .await;
    assert_eq!(err_kind(r, "create_thread_idempotent"), ErrKind::Busy);
}

// ---------------------------------------------------------------- messages

/// First use of a key on a message: looked up in the window, the message
/// appended, then the key recorded with the rendered message — one unit of
/// work, committed once.
#[tokio::test]
async fn create_message_idempotent_creates_the_message_then_claims_the_key_with_its_rendered_response(
) {
    let mut h = Harness::new();
    let created =
        new_message(Role::User, "hello").into_message(minted_message_id(1), thread_id(3), now());
    let expected_record = IdempotencyRecord {
        key: key().key,
        fingerprint: key().fingerprint,
        response: rendered_message(&created),
        created_at: now(),
    };
    h.uow(Mode::ReadWrite, End::Commit, move |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        expect_append(u, &mut seq, 1);
        u.expect_insert_idempotency()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |rec, not_before| {
                assert_eq!(rec, &expected_record);
                assert_eq!(not_before, window_start());
                Ok(())
            });
    });
    let app = h.app();
    let got = app
        .create_message_idempotent(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hello"),
            key(),
            render_message(),
        )
        .await
        .unwrap();
    assert_eq!(got, rendered_message(&created));
}

/// The same request again: replayed without touching the thread or minting an id.
#[tokio::test]
async fn create_message_idempotent_replays_a_matching_record_without_touching_the_thread() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&key(), "the first message")));
        u.expect_append_message().never();
        u.expect_insert_idempotency().never();
    });
    let app = h.app();
    let got = app
        .create_message_idempotent(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hello"),
            key(),
            render_message(),
        )
        .await
        .unwrap();
    assert_eq!(got, stored("the first message"));
}

/// The key with another request: refused, nothing written, rolled back.
#[tokio::test]
async fn create_message_idempotent_refuses_a_key_reused_with_another_request() {
    let mut h = Harness::new();
    h.no_ids();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&other_request(), "theirs")));
        u.expect_append_message().never();
    });
    let app = h.app();
    let r = app
        .create_message_idempotent(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hello"),
            key(),
            render_message(),
        )
        .await;
    assert_eq!(
        err_kind(r, "create_message_idempotent"),
        ErrKind::IdempotencyKeyReused
    );
    assert_eq!(h.begun().len(), 1);
}

/// Losing the claim after the message was written rolls the message (and
/// the raised count) back; the retry replays the winner's response.
#[tokio::test]
async fn create_message_idempotent_rolls_back_the_message_on_a_lost_claim_and_replays_on_retry() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        expect_append(u, &mut seq, 1);
        u.expect_insert_idempotency()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(Fail::Duplicate.err()));
    });
    h.uow(Mode::ReadWrite, End::Commit, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, Some(record(&key(), "the winner's message")));
        u.expect_append_message().never();
    });
    let app = h.app();
    let got = app
        .create_message_idempotent(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hello"),
            key(),
            render_message(),
        )
        .await
        .unwrap();
    assert_eq!(got, stored("the winner's message"));
    assert_eq!(h.begun(), vec![Mode::ReadWrite; 2]);
}

/// A create that fails does not use up the key: no record is claimed.
#[tokio::test]
async fn a_failed_idempotent_create_does_not_claim_the_key() {
    let mut h = Harness::new();
    h.uow(Mode::ReadWrite, End::Rollback, |u| {
        let mut seq = Sequence::new();
        expect_find(u, &mut seq, None);
        u.expect_append_message()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(Fail::NotFound.err()));
        u.expect_insert_idempotency().never();
    });
    let app = h.app();
    let r = app
        .create_message_idempotent(
            &h.ctx,
            thread_id(3),
            new_message(Role::User, "hello"),
            key(),
            render_message(),
        )
        .await;
    assert_eq!(err_kind(r, "create_message_idempotent"), ErrKind::NotFound);
}

/// A lookup that fails is reported and not retried; nothing is created.
#[tokio::test]
async fn a_failing_idempotency_lookup_creates_nothing() {
    for fail in [Fail::Unavailable, Fail::Unexpected] {
        let mut h = Harness::new();
        h.no_ids();
        h.uow(Mode::ReadWrite, End::Rollback, |u| {
            u.expect_find_idempotency()
                .times(1)
                .returning(move |_, _| Err(fail.err()));
            u.expect_insert_thread().never();
        });
        let app = h.app();
        let r = app
            .create_thread_idempotent(&h.ctx, create_cmd(), key(), render_thread())
            .await;
        assert_eq!(
            err_kind(r, "create_thread_idempotent"),
            fail.expected(),
            "lookup failing {fail:?}"
        );
    }
}
