//! The conformance cases: the unit-of-work contract of `weft_ports::uow`,
//! one public async function per rule. Each takes the target on a fresh,
//! empty database and panics (it is test code) when the adapter breaks the
//! contract; [`crate::conformance_tests!`] turns each into a named test.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weft_app::AppError;
use weft_domain::{
    Attachments, ListParams, Message, MessageId, MessagePatch, MetadataPatch, Order, Page,
    PageLimit, Role, Thread, ThreadId, ThreadPatch, Timestamp, Title, ToolResources,
};
use weft_domain::{CreateThread, IdempotencyKey, NewMessage, RequestFingerprint, StoredResponse};
use weft_ports::{IdempotencyRecord, Mode, PortError, UnitOfWork, UnitOfWorkFactory};

use crate::app;
use crate::cancel::CancelAfterPolls;
use crate::fixtures::{ctx, message, metadata, thread, NOW};
use crate::{assert_settled, scripts, ConformanceTarget};

/// The target as the cases hold it: shared with spawned tasks.
pub type Target = Arc<dyn ConformanceTarget>;

const ALICE: &str = "alice";
const BOB: &str = "bob";

async fn begin(f: &dyn UnitOfWorkFactory, user: &str, mode: Mode) -> Box<dyn UnitOfWork> {
    match f.begin(&ctx(user), mode).await {
        Ok(uow) => uow,
        Err(e) => panic!("begin({user}, {mode:?}) failed: {e:?}"),
    }
}

async fn commit(uow: Box<dyn UnitOfWork>) {
    if let Err(e) = uow.commit().await {
        panic!("commit failed: {e:?}");
    }
}

fn ok<T>(r: Result<T, PortError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::NotFound)),
        "{what}: expected NotFound, got {r:?}"
    );
}

fn assert_invalid_cursor<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::InvalidCursor)),
        "{what}: expected InvalidCursor, got {r:?}"
    );
}

fn params<I>(limit: i64, order: Order, after: Option<I>, before: Option<I>) -> ListParams<I> {
    let limit = match PageLimit::new(limit) {
        Ok(l) => l,
        Err(e) => panic!("bad limit in case: {e}"),
    };
    match ListParams::new(limit, order, after, before) {
        Ok(p) => p,
        Err(e) => panic!("bad list params in case: {e}"),
    }
}

fn at(offset: i64) -> Timestamp {
    Timestamp::from_unix_seconds(NOW.unix_seconds() + offset)
}

/// Creates a thread of `user` with `n` messages (alternating user/assistant)
/// and returns both.
async fn seed_thread(f: &dyn UnitOfWorkFactory, user: &str, n: usize) -> (Thread, Vec<Message>) {
    let mut t = thread(NOW);
    let messages: Vec<Message> = (0..n)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            message(&t.id, role, &format!("message {i}"), NOW)
        })
        .collect();
    t.message_count = n as u64;
    ok(
        scripts::create_thread(f, &ctx(user), &t, &messages).await,
        "seeding a thread",
    );
    (t, messages)
}

async fn read_thread(
    f: &dyn UnitOfWorkFactory,
    user: &str,
    id: &ThreadId,
) -> Result<Thread, PortError> {
    scripts::read_thread(f, &ctx(user), id).await
}

/// Every live message id of a thread, oldest first, paging by 100.
async fn all_message_ids(f: &dyn UnitOfWorkFactory, user: &str, t: &ThreadId) -> Vec<MessageId> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let mut uow = begin(f, user, Mode::ReadOnly).await;
        let page = ok(
            uow.list_messages(t, &params(100, Order::Asc, after.clone(), None))
                .await,
            "list_messages",
        );
        commit(uow).await;
        out.extend(page.items.iter().map(|m| m.id.clone()));
        match (page.has_more, page.items.last()) {
            (true, Some(last)) => after = Some(last.id.clone()),
            _ => return out,
        }
    }
    panic!("paging through messages did not end");
}

// ---------------------------------------------------------------- CRUD ----

/// Threads: insert, get, lock, update, list, and the NotFound/Duplicate
/// contract of each thread port.
pub async fn threads_round_trip_through_every_thread_port(target: Target) {
    let f = target.factory();
    let f = &*f;
    let mut t = thread(NOW);
    t.metadata = metadata(&[("project", "alpha"), ("ünïcødé", "välue ✓")]);
    t.tool_resources = ok(
        ToolResources::parse(
            json!({"code_interpreter": {"file_ids": ["file_1", "file_2"]}, "n": 1.5}),
        )
        .map_err(PortError::unexpected),
        "tool resources",
    );
    t.title = Some(ok(
        Title::parse("Quarterly GPU cost review").map_err(PortError::unexpected),
        "title",
    ));

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_eq!(uow.mode(), Mode::ReadWrite);
    ok(uow.insert_thread(&t).await, "insert_thread");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    assert_eq!(uow.mode(), Mode::ReadOnly);
    assert_eq!(
        ok(uow.get_thread(&t.id).await, "get_thread"),
        t,
        "a thread reads back as stored"
    );
    commit(uow).await;

    // Update writes every mutable field, but never the count.
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_eq!(ok(uow.lock_thread(&t.id).await, "lock_thread"), t);
    let mut changed = t.clone();
    changed.metadata = metadata(&[("project", "beta")]);
    changed.tool_resources = ToolResources::default();
    changed.title = None;
    changed.updated_at = at(60);
    changed.message_count = 99;
    ok(uow.update_thread(&changed).await, "update_thread");
    commit(uow).await;
    changed.message_count = 0;
    assert_eq!(
        ok(read_thread(f, ALICE, &t.id).await, "read"),
        changed,
        "update writes the mutable fields only"
    );

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    let page = ok(
        uow.list_threads(&ListParams::default()).await,
        "list_threads",
    );
    assert_eq!(page.items, vec![changed.clone()]);
    assert!(!page.has_more);
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let dup = uow.insert_thread(&t).await;
    assert!(
        matches!(dup, Err(PortError::Duplicate)),
        "inserting an existing id: {dup:?}"
    );
    drop(uow);

    let unknown = crate::fixtures::thread_id();
    let mut ghost = t.clone();
    ghost.id = unknown.clone();
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_not_found(
        uow.get_thread(&unknown).await,
        "get_thread of an unknown id",
    );
    assert_not_found(
        uow.lock_thread(&unknown).await,
        "lock_thread of an unknown id",
    );
    assert_not_found(
        uow.update_thread(&ghost).await,
        "update_thread of an unknown id",
    );
    assert_not_found(
        uow.touch_thread(&unknown, 1, NOW).await,
        "touch_thread of an unknown id",
    );
    assert_not_found(
        uow.archive_thread(&unknown, NOW).await,
        "archive_thread of an unknown id",
    );
    commit(uow).await;
}

/// Messages: insert, get, lock, update, list, first user message, archive,
/// and the NotFound/Duplicate contract of each message port.
pub async fn messages_round_trip_through_every_message_port(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, _) = seed_thread(f, ALICE, 0).await;
    let (other, _) = seed_thread(f, ALICE, 0).await;
    let first = message(&t.id, Role::Assistant, "Hello! How can I help?", at(1));
    let mut second = message(
        &t.id,
        Role::User,
        "Summarise the GPU bill, please. 🚀",
        at(2),
    );
    second.attachments = ok(
        Attachments::parse(json!([{"file_id": "file_9", "tools": [{"type": "file_search"}]}]))
            .map_err(PortError::unexpected),
        "attachments",
    );
    second.metadata = metadata(&[("lang", "en")]);
    let third = message(&t.id, Role::User, "And the storage bill.", at(3));

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(
        uow.insert_messages(&[first.clone(), second.clone(), third.clone()])
            .await,
        "insert_messages",
    );
    ok(uow.touch_thread(&t.id, 3, at(3)).await, "touch_thread");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    assert_eq!(
        ok(uow.get_message(&t.id, &first.id).await, "get_message"),
        first
    );
    assert_eq!(
        ok(uow.get_message(&t.id, &second.id).await, "get_message"),
        second,
        "attachments and metadata round trip"
    );
    let page = ok(
        uow.list_messages(&t.id, &params(20, Order::Asc, None, None))
            .await,
        "list_messages",
    );
    assert_eq!(
        page.items,
        vec![first.clone(), second.clone(), third.clone()]
    );
    assert!(!page.has_more);
    assert_eq!(
        ok(uow.first_user_message(&t.id).await, "first_user_message"),
        Some(second.clone()),
        "the first user message skips the assistant's"
    );
    assert_eq!(
        ok(uow.get_thread(&t.id).await, "get_thread").message_count,
        3
    );
    assert_not_found(
        uow.get_message(&other.id, &first.id).await,
        "get_message through another thread",
    );
    assert_eq!(
        ok(
            uow.first_user_message(&other.id).await,
            "first_user_message"
        ),
        None
    );
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.lock_message(&t.id, &second.id).await, "lock_message"),
        second
    );
    let patched = ok(
        second
            .patched(&MessagePatch {
                metadata: ok(
                    MetadataPatch::parse(BTreeMap::from([
                        ("lang".to_owned(), None),
                        ("topic".to_owned(), Some("billing".to_owned())),
                    ]))
                    .map_err(PortError::unexpected),
                    "patch",
                ),
            })
            .map_err(PortError::unexpected),
        "patched",
    );
    ok(uow.update_message(&patched).await, "update_message");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.get_message(&t.id, &second.id).await, "get_message"),
        patched,
        "metadata update reads back"
    );
    let dup = uow.insert_messages(std::slice::from_ref(&first)).await;
    assert!(
        matches!(dup, Err(PortError::Duplicate)),
        "inserting an existing message id: {dup:?}"
    );
    drop(uow);

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let ghost_thread = crate::fixtures::thread_id();
    let orphan = message(&ghost_thread, Role::User, "nobody home", NOW);
    assert_not_found(
        uow.insert_messages(std::slice::from_ref(&orphan)).await,
        "insert into an unknown thread",
    );
    drop(uow);

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_not_found(
        uow.archive_message(&other.id, &second.id, at(4)).await,
        "archive through another thread",
    );
    assert_not_found(
        uow.lock_message(&other.id, &second.id).await,
        "lock through another thread",
    );
    assert_not_found(
        uow.list_messages(&ghost_thread, &ListParams::default())
            .await,
        "list of an unknown thread",
    );
    assert_not_found(
        uow.first_user_message(&ghost_thread).await,
        "first user message of an unknown thread",
    );
    ok(
        uow.archive_message(&t.id, &second.id, at(4)).await,
        "archive_message",
    );
    ok(uow.touch_thread(&t.id, -1, at(4)).await, "touch_thread");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_not_found(
        uow.get_message(&t.id, &second.id).await,
        "get of an archived message",
    );
    assert_not_found(
        uow.lock_message(&t.id, &second.id).await,
        "lock of an archived message",
    );
    assert_not_found(
        uow.update_message(&patched).await,
        "update of an archived message",
    );
    assert_not_found(
        uow.archive_message(&t.id, &second.id, at(5)).await,
        "archive twice",
    );
    let page = ok(
        uow.list_messages(&t.id, &params(20, Order::Desc, None, None))
            .await,
        "list_messages",
    );
    assert_eq!(
        page.items,
        vec![third.clone(), first.clone()],
        "archived messages leave the list"
    );
    assert_eq!(
        ok(uow.first_user_message(&t.id).await, "first_user_message"),
        Some(third.clone()),
        "an archived message is no longer the first user message"
    );
    let thread_now = ok(uow.get_thread(&t.id).await, "get_thread");
    assert_eq!(thread_now.message_count, 2);
    assert_eq!(thread_now.updated_at, at(4));
    commit(uow).await;
}

/// `touch_thread` adds its delta exactly and keeps `updated_at` monotonic.
pub async fn touch_thread_counts_and_never_moves_updated_at_backwards(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, _) = seed_thread(f, ALICE, 0).await;
    let (t2, _) = seed_thread(f, ALICE, 0).await;
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.touch_thread(&t.id, 3, at(10)).await, "touch");
    ok(
        uow.touch_thread(&t.id, -1, at(5)).await,
        "touch back in time",
    );
    commit(uow).await;
    let got = ok(read_thread(f, ALICE, &t.id).await, "read");
    assert_eq!(got.message_count, 2);
    assert_eq!(got.updated_at, at(10), "updated_at never moves backwards");
    assert_eq!(got.created_at, NOW);
    let other = ok(read_thread(f, ALICE, &t2.id).await, "read");
    assert_eq!(
        (other.message_count, other.updated_at),
        (0, NOW),
        "touch changes only its own thread"
    );
    // Put the count back so the storage invariant (count == live messages) holds.
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.touch_thread(&t.id, -2, at(11)).await, "touch");
    commit(uow).await;
}

/// An archived thread and all its messages are gone from every read and
/// every write.
pub async fn archiving_a_thread_hides_it_and_its_messages(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 3).await;
    let (kept, _) = seed_thread(f, ALICE, 1).await;
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.archive_thread(&t.id, at(7)).await, "archive_thread");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_not_found(uow.get_thread(&t.id).await, "get of an archived thread");
    assert_not_found(uow.lock_thread(&t.id).await, "lock of an archived thread");
    assert_not_found(uow.update_thread(&t).await, "update of an archived thread");
    assert_not_found(
        uow.touch_thread(&t.id, 1, at(8)).await,
        "touch of an archived thread",
    );
    assert_not_found(uow.archive_thread(&t.id, at(8)).await, "archive twice");
    assert_not_found(
        uow.get_message(&t.id, &msgs[0].id).await,
        "get of a message of an archived thread",
    );
    assert_not_found(
        uow.list_messages(&t.id, &ListParams::default()).await,
        "list of an archived thread",
    );
    assert_not_found(
        uow.first_user_message(&t.id).await,
        "first user message of an archived thread",
    );
    assert_not_found(
        uow.archive_message(&t.id, &msgs[1].id, at(8)).await,
        "archive a message of an archived thread",
    );
    let page = ok(
        uow.list_threads(&ListParams::default()).await,
        "list_threads",
    );
    assert_eq!(
        page.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![kept.id.clone()]
    );
    commit(uow).await;
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let late = message(&t.id, Role::User, "too late", at(9));
    assert_not_found(
        uow.insert_messages(std::slice::from_ref(&late)).await,
        "insert into an archived thread",
    );
    drop(uow);
}

/// Idempotency records: one claim per owner and key; a claim waits for a
/// concurrent one and then sees Duplicate; an expired record is replaced.
pub async fn idempotency_keys_are_claimed_once_and_replaced_after_expiry(target: Target) {
    let f = target.factory();
    let window = weft_domain::idempotency::REPLAY_WINDOW_SECS;
    let key = ok(
        IdempotencyKey::parse("key-1").map_err(PortError::unexpected),
        "key",
    );
    let record = IdempotencyRecord {
        key: key.clone(),
        fingerprint: RequestFingerprint::new("POST", "/v1/threads", Some(&json!({"a": 1}))),
        response: StoredResponse {
            status: 200,
            body: r#"{"id":"thread_1","object":"thread"}"#.to_owned(),
        },
        created_at: NOW,
    };
    let not_before = NOW.minus_seconds(window);

    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.find_idempotency(&key, not_before).await, "find"),
        None
    );
    ok(
        uow.insert_idempotency(&record, not_before).await,
        "insert_idempotency",
    );
    commit(uow).await;

    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.find_idempotency(&key, not_before).await, "find"),
        Some(record.clone())
    );
    assert_eq!(
        ok(uow.find_idempotency(&key, at(1)).await, "find"),
        None,
        "a record older than not_before is not found"
    );
    let again = uow.insert_idempotency(&record, not_before).await;
    assert!(
        matches!(again, Err(PortError::Duplicate)),
        "a second claim: {again:?}"
    );
    drop(uow);

    // Keys are per owner.
    let mut uow = begin(&*f, BOB, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.find_idempotency(&key, not_before).await, "find"),
        None,
        "another owner's key is invisible"
    );
    ok(
        uow.insert_idempotency(&record, not_before).await,
        "another owner claims the same key",
    );
    commit(uow).await;

    // A concurrent claim waits for the first and then sees Duplicate.
    let key2 = ok(
        IdempotencyKey::parse("key-2").map_err(PortError::unexpected),
        "key",
    );
    let record2 = IdempotencyRecord {
        key: key2,
        ..record.clone()
    };
    let mut first = begin(&*f, ALICE, Mode::ReadWrite).await;
    ok(
        first.insert_idempotency(&record2, not_before).await,
        "first claim",
    );
    let f2 = Arc::clone(&f);
    let r2 = record2.clone();
    let second = tokio::spawn(async move {
        let mut uow = f2.begin(&ctx(ALICE), Mode::ReadWrite).await?;
        uow.insert_idempotency(&r2, not_before).await?;
        uow.commit().await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    commit(first).await;
    let second = ok(second.await.map_err(PortError::unexpected), "join");
    assert!(
        matches!(second, Err(PortError::Duplicate)),
        "a concurrent second claim: {second:?}"
    );

    // Past the window, a new claim replaces the old record.
    let later = Timestamp::from_unix_seconds(NOW.unix_seconds() + window + 10);
    let replacement = IdempotencyRecord {
        fingerprint: RequestFingerprint::new("POST", "/v1/threads", None),
        response: StoredResponse {
            status: 200,
            body: "{}".to_owned(),
        },
        created_at: later,
        ..record.clone()
    };
    let later_not_before = later.minus_seconds(window);
    let mut uow = begin(&*f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.find_idempotency(&key, later_not_before).await, "find"),
        None,
        "an expired record is not replayed"
    );
    ok(
        uow.insert_idempotency(&replacement, later_not_before).await,
        "replacing an expired record",
    );
    commit(uow).await;
    let mut uow = begin(&*f, ALICE, Mode::ReadOnly).await;
    assert_eq!(
        ok(uow.find_idempotency(&key, later_not_before).await, "find"),
        Some(replacement)
    );
    commit(uow).await;
}

// ------------------------------------------------------------ isolation ----

/// Another owner sees none of alice's objects and can change none of them:
/// every port answers NotFound, exactly as for a missing id.
pub async fn another_owner_sees_nothing_and_can_change_nothing(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 2).await;
    let m = &msgs[0];

    let mut uow = begin(f, BOB, Mode::ReadWrite).await;
    assert_not_found(uow.get_thread(&t.id).await, "bob gets alice's thread");
    assert_not_found(uow.lock_thread(&t.id).await, "bob locks alice's thread");
    let mut hijack = t.clone();
    hijack.title = Some(ok(
        Title::parse("mine now").map_err(PortError::unexpected),
        "title",
    ));
    assert_not_found(
        uow.update_thread(&hijack).await,
        "bob updates alice's thread",
    );
    assert_not_found(
        uow.touch_thread(&t.id, 5, at(9)).await,
        "bob touches alice's thread",
    );
    assert_not_found(
        uow.archive_thread(&t.id, at(9)).await,
        "bob archives alice's thread",
    );
    assert_not_found(
        uow.get_message(&t.id, &m.id).await,
        "bob gets alice's message",
    );
    assert_not_found(
        uow.lock_message(&t.id, &m.id).await,
        "bob locks alice's message",
    );
    let mut changed = m.clone();
    changed.metadata = metadata(&[("owned", "bob")]);
    assert_not_found(
        uow.update_message(&changed).await,
        "bob updates alice's message",
    );
    assert_not_found(
        uow.archive_message(&t.id, &m.id, at(9)).await,
        "bob archives alice's message",
    );
    assert_not_found(
        uow.list_messages(&t.id, &ListParams::default()).await,
        "bob lists alice's messages",
    );
    assert_not_found(
        uow.first_user_message(&t.id).await,
        "bob reads alice's first message",
    );
    let page = ok(
        uow.list_threads(&ListParams::default()).await,
        "list_threads",
    );
    assert!(
        page.items.is_empty() && !page.has_more,
        "bob's list shows alice's threads: {page:?}"
    );
    commit(uow).await;

    let mut uow = begin(f, BOB, Mode::ReadWrite).await;
    let intruder = message(&t.id, Role::User, "hello from bob", at(9));
    assert_not_found(
        uow.insert_messages(std::slice::from_ref(&intruder)).await,
        "bob posts into alice's thread",
    );
    drop(uow);

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    assert_eq!(
        ok(uow.get_thread(&t.id).await, "get_thread"),
        t,
        "alice's thread is untouched"
    );
    assert_eq!(
        ok(uow.get_message(&t.id, &m.id).await, "get_message"),
        *m,
        "alice's message is untouched"
    );
    assert_eq!(all_message_ids(f, ALICE, &t.id).await.len(), 2);
    commit(uow).await;
}

/// A cursor must name an object of the same list and owner; a deleted one
/// of theirs keeps its position.
pub async fn cursors_of_other_lists_and_owners_are_invalid_and_deleted_ones_stay_valid(
    target: Target,
) {
    let f = target.factory();
    let f = &*f;
    let (t1, m1) = seed_thread(f, ALICE, 3).await;
    let (t2, m2) = seed_thread(f, ALICE, 1).await;
    let (b1, bm) = seed_thread(f, BOB, 1).await;
    let unknown_thread = crate::fixtures::thread_id();
    let unknown_message = crate::fixtures::message_id();

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    for (name, p) in [
        (
            "after bob's thread",
            params(5, Order::Asc, Some(b1.id.clone()), None),
        ),
        (
            "before bob's thread",
            params(5, Order::Desc, None, Some(b1.id.clone())),
        ),
        (
            "after an unknown thread",
            params(5, Order::Desc, Some(unknown_thread.clone()), None),
        ),
    ] {
        assert_invalid_cursor(uow.list_threads(&p).await, name);
    }
    for (name, p) in [
        (
            "after a message of another thread",
            params(5, Order::Asc, Some(m2[0].id.clone()), None),
        ),
        (
            "before bob's message",
            params(5, Order::Asc, None, Some(bm[0].id.clone())),
        ),
        (
            "after an unknown message",
            params(5, Order::Desc, Some(unknown_message.clone()), None),
        ),
    ] {
        assert_invalid_cursor(uow.list_messages(&t1.id, &p).await, name);
    }
    commit(uow).await;

    // Deleted objects of the same list remain valid cursors.
    ok(
        scripts::delete_message(f, &ctx(ALICE), &t1.id, &m1[0].id, at(5)).await,
        "delete_message",
    );
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.archive_thread(&t2.id, at(5)).await, "archive_thread");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    let page = ok(
        uow.list_messages(&t1.id, &params(5, Order::Asc, Some(m1[0].id.clone()), None))
            .await,
        "list after a deleted message",
    );
    assert_eq!(
        page.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![m1[1].id.clone(), m1[2].id.clone()]
    );
    let page = ok(
        uow.list_threads(&params(5, Order::Desc, Some(t2.id.clone()), None))
            .await,
        "list after a deleted thread",
    );
    assert_eq!(
        page.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![t1.id.clone()]
    );
    commit(uow).await;
}

// --------------------------------------------------------------- paging ----

/// Pages through `list` with `after` cursors; returns the ids in the order seen.
async fn page_through<I: Clone + Send + Sync, T>(
    f: &dyn UnitOfWorkFactory,
    order: Order,
    limit: i64,
    id_of: impl Fn(&T) -> I,
    mut list: impl for<'a> FnMut(
        &'a mut Box<dyn UnitOfWork>,
        ListParams<I>,
    ) -> futures::future::BoxFuture<'a, Result<Page<T>, PortError>>,
) -> Vec<I> {
    let mut seen = Vec::new();
    let mut after: Option<I> = None;
    for _ in 0..10_000 {
        let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
        let page = ok(
            list(&mut uow, params(limit, order, after.clone(), None)).await,
            "list",
        );
        commit(uow).await;
        seen.extend(page.items.iter().map(&id_of));
        match (page.has_more, page.items.last()) {
            (true, Some(last)) => after = Some(id_of(last)),
            _ => return seen,
        }
        // Give the inserting task room to land rows between pages.
        tokio::task::yield_now().await;
    }
    panic!("paging did not end");
}

fn assert_seen_once<I: Ord + Clone + std::hash::Hash + std::fmt::Debug>(
    seen: &[I],
    existing: &[I],
    order: Order,
    what: &str,
) {
    let unique: HashSet<&I> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: an object was seen twice");
    for id in existing {
        assert!(
            unique.contains(id),
            "{what}: pre-existing {id:?} was skipped"
        );
    }
    let sorted = seen.windows(2).all(|w| match order {
        Order::Asc => w[0] < w[1],
        Order::Desc => w[0] > w[1],
    });
    assert!(sorted, "{what}: pages are not in {order:?} order");
}

/// Paging with `after` sees every pre-existing object exactly once, in
/// order, in both orders, while another task keeps inserting.
pub async fn paging_sees_every_object_once_while_another_task_inserts(target: Target) {
    let f = target.factory();
    let mut threads = Vec::new();
    for _ in 0..23 {
        threads.push(seed_thread(&*f, ALICE, 0).await.0.id);
    }
    let (t, msgs) = seed_thread(&*f, ALICE, 23).await;
    let existing_msgs: Vec<MessageId> = msgs.iter().map(|m| m.id.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (f, stop, tid) = (Arc::clone(&f), Arc::clone(&stop), t.id.clone());
        tokio::spawn(async move {
            // Bounded: at most 400 inserts, or until told to stop.
            for i in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = ctx(ALICE);
                if i % 2 == 0 {
                    let th = thread(NOW);
                    ok(
                        scripts::create_thread(&*f, &c, &th, &[]).await,
                        "concurrent thread insert",
                    );
                } else {
                    let m = message(&tid, Role::User, "concurrent", NOW);
                    ok(
                        scripts::create_message(&*f, &c, &m).await,
                        "concurrent message insert",
                    );
                }
            }
        })
    };

    for order in [Order::Asc, Order::Desc] {
        let seen = page_through(
            &*f,
            order,
            4,
            |t: &Thread| t.id.clone(),
            |uow, p| Box::pin(async move { uow.list_threads(&p).await }),
        )
        .await;
        assert_seen_once(&seen, &threads, order, "threads");
        let tid = t.id.clone();
        let seen = page_through(
            &*f,
            order,
            4,
            |m: &Message| m.id.clone(),
            move |uow, p| {
                let tid = tid.clone();
                Box::pin(async move { uow.list_messages(&tid, &p).await })
            },
        )
        .await;
        assert_seen_once(&seen, &existing_msgs, order, "messages");
    }
    stop.store(true, Ordering::Relaxed);
    ok(inserter.await.map_err(PortError::unexpected), "inserter");
}

/// `before` pages hold the nearest objects on the other side of the cursor,
/// in the requested order, in both orders; `has_more` tells whether more lie
/// beyond.
pub async fn before_pages_hold_the_nearest_objects_in_both_orders(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 10).await;
    let ids: Vec<MessageId> = msgs.iter().map(|m| m.id.clone()).collect();
    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    let run = |page: Page<Message>| {
        (
            page.items.into_iter().map(|m| m.id).collect::<Vec<_>>(),
            page.has_more,
        )
    };

    let p = ok(
        uow.list_messages(&t.id, &params(3, Order::Asc, None, Some(ids[5].clone())))
            .await,
        "asc before",
    );
    assert_eq!(run(p), (ids[2..5].to_vec(), true), "asc, before the 6th");
    let p = ok(
        uow.list_messages(&t.id, &params(3, Order::Desc, None, Some(ids[5].clone())))
            .await,
        "desc before",
    );
    assert_eq!(
        run(p),
        (vec![ids[8].clone(), ids[7].clone(), ids[6].clone()], true),
        "desc, before the 6th"
    );
    let p = ok(
        uow.list_messages(&t.id, &params(3, Order::Asc, None, Some(ids[2].clone())))
            .await,
        "asc before",
    );
    assert_eq!(run(p), (ids[0..2].to_vec(), false), "asc, before the 3rd");
    let p = ok(
        uow.list_messages(&t.id, &params(3, Order::Desc, Some(ids[0].clone()), None))
            .await,
        "desc after",
    );
    assert_eq!(run(p), (vec![], false), "desc, after the oldest");
    let p = ok(
        uow.list_messages(&t.id, &params(3, Order::Asc, Some(ids[6].clone()), None))
            .await,
        "asc after",
    );
    assert_eq!(run(p), (ids[7..10].to_vec(), false), "asc, after the 7th");
    let p = ok(
        uow.list_messages(&t.id, &params(100, Order::Desc, None, None))
            .await,
        "desc",
    );
    let mut rev = ids.clone();
    rev.reverse();
    assert_eq!(run(p), (rev, false), "desc, everything");
    commit(uow).await;

    // Walking backwards with `before` from the newest visits everything once.
    let mut seen = Vec::new();
    let mut before = Some(ids[9].clone());
    seen.push(ids[9].clone());
    for _ in 0..20 {
        let Some(b) = before.take() else { break };
        let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
        let page = ok(
            uow.list_messages(&t.id, &params(4, Order::Asc, None, Some(b)))
                .await,
            "asc before",
        );
        commit(uow).await;
        let (items, more) = run(page);
        seen.splice(0..0, items.iter().cloned());
        before = if more { items.first().cloned() } else { None };
    }
    assert_eq!(
        seen, ids,
        "walking back with before visits every message once"
    );
}

/// Metadata merges (set, replace, remove) round-trip through storage
/// exactly, at the limits of the metadata rules.
pub async fn metadata_merge_round_trips(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 1).await;
    let long_key = "k".repeat(64);
    let long_value = "é".repeat(512);
    let mut full: BTreeMap<String, Option<String>> = (0..15)
        .map(|i| (format!("key{i:02}"), Some(format!("v{i}"))))
        .collect();
    full.insert(long_key.clone(), Some(long_value.clone()));
    let patch = ok(
        MetadataPatch::parse(full).map_err(PortError::unexpected),
        "patch",
    );

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let locked = ok(uow.lock_thread(&t.id).await, "lock_thread");
    let patched = ok(
        locked
            .patched(
                &ThreadPatch {
                    metadata: Some(patch.clone()),
                    ..ThreadPatch::default()
                },
                at(1),
            )
            .map_err(PortError::unexpected),
        "patched",
    );
    assert_eq!(patched.metadata.as_map().len(), 16);
    ok(uow.update_thread(&patched).await, "update_thread");
    let m = ok(uow.lock_message(&t.id, &msgs[0].id).await, "lock_message");
    let pm = ok(
        m.patched(&MessagePatch { metadata: patch })
            .map_err(PortError::unexpected),
        "patched",
    );
    ok(uow.update_message(&pm).await, "update_message");
    commit(uow).await;

    let got = ok(read_thread(f, ALICE, &t.id).await, "read");
    assert_eq!(
        got.metadata, patched.metadata,
        "16 pairs at the length limits round trip"
    );
    assert_eq!(got.metadata.as_map().get(&long_key), Some(&long_value));

    let removal = ok(
        MetadataPatch::parse(BTreeMap::from([
            ("key00".to_owned(), None),
            ("key01".to_owned(), Some("changed".to_owned())),
            ("absent".to_owned(), None),
        ]))
        .map_err(PortError::unexpected),
        "patch",
    );
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let locked = ok(uow.lock_thread(&t.id).await, "lock_thread");
    let merged = ok(
        locked
            .patched(
                &ThreadPatch {
                    metadata: Some(removal.clone()),
                    ..ThreadPatch::default()
                },
                at(2),
            )
            .map_err(PortError::unexpected),
        "patched",
    );
    ok(uow.update_thread(&merged).await, "update_thread");
    let m = ok(uow.lock_message(&t.id, &msgs[0].id).await, "lock_message");
    let mm = ok(
        m.patched(&MessagePatch { metadata: removal })
            .map_err(PortError::unexpected),
        "patched",
    );
    ok(uow.update_message(&mm).await, "update_message");
    commit(uow).await;

    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    let got = ok(uow.get_thread(&t.id).await, "get_thread");
    assert_eq!(got.metadata.as_map().len(), 15);
    assert_eq!(
        got.metadata.as_map().get("key00"),
        None,
        "a null value removes the key"
    );
    assert_eq!(
        got.metadata.as_map().get("key01").map(String::as_str),
        Some("changed")
    );
    assert_eq!(got.metadata, merged.metadata);
    assert_eq!(
        ok(uow.get_message(&t.id, &msgs[0].id).await, "get_message").metadata,
        mm.metadata
    );
    commit(uow).await;
}

// ---------------------------------------------------------- transactions ----

async fn write_everything(uow: &mut Box<dyn UnitOfWork>, existing: &Thread, fresh: &Thread) {
    ok(uow.insert_thread(fresh).await, "insert_thread");
    let m = message(&existing.id, Role::User, "never committed", at(3));
    ok(
        uow.insert_messages(std::slice::from_ref(&m)).await,
        "insert_messages",
    );
    ok(
        uow.touch_thread(&existing.id, 1, at(3)).await,
        "touch_thread",
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
            status: 200,
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

    for attempt in 0..8 {
        let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
        let r = match attempt {
            0 => uow.insert_thread(&fresh).await,
            1 => uow.update_thread(&changed_thread).await,
            2 => uow.touch_thread(&existing.id, 1, at(1)).await,
            3 => uow.archive_thread(&existing.id, at(1)).await,
            4 => uow.insert_messages(std::slice::from_ref(&new_msg)).await,
            5 => uow.update_message(&changed_msg).await,
            6 => uow.archive_message(&existing.id, &m.id, at(1)).await,
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

fn new_message(text: &str) -> NewMessage {
    NewMessage {
        role: Role::User,
        content: crate::fixtures::content(text),
        attachments: Attachments::default(),
        metadata: weft_domain::Metadata::default(),
    }
}

fn create_thread_command(n: usize) -> CreateThread {
    let messages = (0..n).map(|i| new_message(&format!("m{i}"))).collect();
    ok(
        CreateThread::new(
            messages,
            weft_domain::Metadata::default(),
            ToolResources::default(),
            None,
        )
        .map_err(PortError::unexpected),
        "create thread command",
    )
}

/// Every thread of `user`, oldest first, paging by 100.
async fn all_threads(f: &dyn UnitOfWorkFactory, user: &str) -> Vec<Thread> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let mut uow = begin(f, user, Mode::ReadOnly).await;
        let page = ok(
            uow.list_threads(&params(100, Order::Asc, after.clone(), None))
                .await,
            "list_threads",
        );
        commit(uow).await;
        let more = page.has_more;
        after = page.items.last().map(|t| t.id.clone());
        out.extend(page.items);
        if !more {
            return out;
        }
    }
    panic!("paging through threads did not end");
}

// --------------------------------------------------------- cancellation ----

/// The largest poll budget tried before a use case must have completed.
const MAX_POLLS: usize = 400;

/// Sweeps tried until one of them cut the use case at least once.
const SWEEPS: usize = 5;

/// The app's create-message use case, cancelled after its k-th poll for
/// every k until it completes: after each cancellation nothing leaks and
/// nothing is half-written (the message is there and counted, or neither).
pub async fn create_message_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    let f = target.factory();
    let app = app::app(Arc::clone(&f), Arc::default());
    let (t, _) = seed_thread(&*f, ALICE, 0).await;
    let mut live = 0usize;
    let mut cancelled = 0usize;
    'sweeps: for sweep in 1..=SWEEPS {
        for k in 1..=MAX_POLLS {
            let c = ctx(ALICE);
            let out = CancelAfterPolls::new(
                app.create_message(
                    &c,
                    t.id.clone(),
                    new_message(&format!("attempt {k}")),
                    app::render_message(),
                ),
                k,
            )
            .await;
            assert_settled(
                &*target,
                &format!("create_message cancelled after poll {k}"),
            )
            .await;
            let now_live = all_message_ids(&*f, ALICE, &t.id).await.len();
            assert!(
                now_live == live || now_live == live + 1,
                "poll {k}: {live} messages became {now_live}"
            );
            let landed = now_live == live + 1;
            live = now_live;
            let count = ok(read_thread(&*f, ALICE, &t.id).await, "read").message_count;
            assert_eq!(
                count as usize, live,
                "message_count after cancelling at poll {k}"
            );
            match out {
                Some(Ok(_)) => {
                    assert!(landed, "a completed create is visible");
                    if cancelled == 0 && sweep < SWEEPS {
                        // Every round trip happened to be ready at once (a fast
                        // loopback): nothing was cut, so sweep again.
                        continue 'sweeps;
                    }
                    assert!(
                        cancelled > 0,
                        "the use case never awaited: the sweep tested nothing"
                    );
                    tracing::info!(polls = k, sweep, "create_message completed");
                    return;
                }
                Some(Err(e)) => panic!("create_message failed (not cancelled) at poll {k}: {e:?}"),
                None => cancelled += 1,
            }
        }
        panic!("create_message did not complete within {MAX_POLLS} polls");
    }
    panic!("create_message: no sweep cancelled anything");
}

/// The app's delete-message use case, cancelled after its k-th poll for
/// every k until it completes: the message is gone and uncounted, or
/// neither. (A cancel that lands after the COMMIT reached the server leaves
/// the delete done; the next attempt then answers NotFound.)
pub async fn delete_message_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    let f = target.factory();
    let app = app::app(Arc::clone(&f), Arc::default());
    let mut cancelled = 0usize;
    'sweeps: for sweep in 1..=SWEEPS {
        let (t, msgs) = seed_thread(&*f, ALICE, 1).await;
        let victim = msgs[0].id.clone();
        let mut live = 1usize;
        for k in 1..=MAX_POLLS {
            let c = ctx(ALICE);
            let out =
                CancelAfterPolls::new(app.delete_message(&c, t.id.clone(), victim.clone()), k)
                    .await;
            assert_settled(
                &*target,
                &format!("delete_message cancelled after poll {k}"),
            )
            .await;
            let was_live = live;
            live = all_message_ids(&*f, ALICE, &t.id).await.len();
            let count = ok(read_thread(&*f, ALICE, &t.id).await, "read").message_count;
            assert_eq!(
                count as usize, live,
                "message_count after cancelling at poll {k}"
            );
            let done = match out {
                Some(Ok(())) => {
                    assert_eq!(
                        (was_live, live),
                        (1, 0),
                        "a completed delete removed the message"
                    );
                    true
                }
                Some(Err(AppError::NotFound)) if was_live == 0 => true,
                Some(Err(e)) => panic!("delete_message failed (not cancelled) at poll {k}: {e:?}"),
                None => {
                    cancelled += 1;
                    false
                }
            };
            if done {
                if cancelled == 0 && sweep < SWEEPS {
                    continue 'sweeps;
                }
                assert!(
                    cancelled > 0,
                    "the use case never awaited: the sweep tested nothing"
                );
                return;
            }
        }
        panic!("delete_message did not complete within {MAX_POLLS} polls");
    }
    panic!("delete_message: no sweep cancelled anything");
}

/// Deleting the last message twice answers NotFound the second time (the
/// API's 404), not a storage error, and leaves the count at zero.
pub async fn deleting_a_deleted_last_message_is_not_found(target: Target) {
    let f = target.factory();
    let app = app::app(Arc::clone(&f), Arc::default());
    let (t, msgs) = seed_thread(&*f, ALICE, 1).await;
    let c = ctx(ALICE);
    ok(
        app.delete_message(&c, t.id.clone(), msgs[0].id.clone())
            .await
            .map_err(PortError::unexpected),
        "first delete",
    );
    let again = app
        .delete_message(&c, t.id.clone(), msgs[0].id.clone())
        .await;
    assert!(
        matches!(again, Err(AppError::NotFound)),
        "second delete: {again:?}"
    );
    let got = ok(read_thread(&*f, ALICE, &t.id).await, "read");
    assert_eq!(got.message_count, 0);
}

/// The app's create-thread use case (with three messages), cancelled after
/// its k-th poll for every k until it completes: each attempt left a whole
/// thread with all its messages, or nothing.
pub async fn create_thread_cancelled_at_every_await_point_leaves_nothing_behind(target: Target) {
    let f = target.factory();
    let app = app::app(Arc::clone(&f), Arc::default());
    let user = "sweeper";
    let mut threads = 0usize;
    let mut cancelled = 0usize;
    'sweeps: for sweep in 1..=SWEEPS {
        for k in 1..=MAX_POLLS {
            let c = ctx(user);
            let out = CancelAfterPolls::new(
                app.create_thread(&c, create_thread_command(3), app::render_thread()),
                k,
            )
            .await;
            assert_settled(&*target, &format!("create_thread cancelled after poll {k}")).await;
            let all = all_threads(&*f, user).await;
            assert!(
                all.len() == threads || all.len() == threads + 1,
                "poll {k}: {threads} threads became {}",
                all.len()
            );
            let landed = all.len() == threads + 1;
            threads = all.len();
            for t in &all {
                assert_eq!(t.message_count, 3, "thread {} is whole (poll {k})", t.id);
                assert_eq!(
                    all_message_ids(&*f, user, &t.id).await.len(),
                    3,
                    "thread {} has all its messages",
                    t.id
                );
            }
            match out {
                Some(Ok(_)) => {
                    assert!(landed, "a completed create is visible");
                    if cancelled == 0 && sweep < SWEEPS {
                        // Every round trip happened to be ready at once (a fast
                        // loopback): nothing was cut, so sweep again.
                        continue 'sweeps;
                    }
                    assert!(
                        cancelled > 0,
                        "the use case never awaited: the sweep tested nothing"
                    );
                    tracing::info!(polls = k, sweep, "create_thread completed");
                    return;
                }
                Some(Err(e)) => panic!("create_thread failed (not cancelled) at poll {k}: {e:?}"),
                None => cancelled += 1,
            }
        }
        panic!("create_thread did not complete within {MAX_POLLS} polls");
    }
    panic!("create_thread: no sweep cancelled anything");
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
