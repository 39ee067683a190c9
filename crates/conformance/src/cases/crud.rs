//! Every port round trip and its NotFound/Duplicate contract.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weft_app::AppError;
use weft_domain::{
    Attachments, IdempotencyKey, MessagePatch, MetadataPatch, Order, RequestFingerprint, Role,
    StoredResponse, ThreadPatch, Timestamp, Title, ToolResources,
};
use weft_ports::{Appended, IdempotencyRecord, Mode, PortError};

use super::*;
use crate::app;
use crate::fixtures::{ctx, message, metadata, thread, NOW};

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
    assert_eq!(
        ok(uow.lock_thread_sequence().await, "lock_thread_sequence"),
        None,
        "a new owner has no thread yet"
    );
    ok(uow.insert_thread(&t).await, "insert_thread");
    commit(uow).await;
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    assert_eq!(
        ok(uow.lock_thread_sequence().await, "lock_thread_sequence"),
        Some(t.id.clone()),
        "the sequence remembers the owner's newest thread"
    );
    let below = uow.insert_thread(&t).await;
    assert!(
        matches!(
            below,
            Err(PortError::Unexpected(_)) | Err(PortError::Duplicate)
        ),
        "a thread id not above the owner's newest is refused: {below:?}"
    );
    drop(uow);

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
        uow.adjust_message_count(&unknown, 1, NOW).await,
        "adjust_message_count of an unknown id",
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
    for m in [&first, &second, &third] {
        assert_eq!(
            ok(uow.append_message(m).await, "append_message"),
            Appended::Done
        );
    }
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
    let again = uow.append_message(&first).await;
    assert!(
        matches!(
            again,
            Ok(Appended::Stale { .. }) | Err(PortError::Duplicate)
        ),
        "appending an existing message id: {again:?}"
    );
    drop(uow);

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let ghost_thread = crate::fixtures::thread_id();
    let orphan = message(&ghost_thread, Role::User, "nobody home", NOW);
    assert_not_found(
        uow.append_message(&orphan).await,
        "append to an unknown thread",
    );
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
    ok(
        uow.adjust_message_count(&t.id, -1, at(4)).await,
        "adjust_message_count",
    );
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

/// An append whose id is not above the thread's newest message id (minted
/// by a process whose clock is behind, or by a request that took the thread
/// later) changes nothing, names the newest id, and leaves the thread
/// locked so the retry above it succeeds: message ids become visible in id
/// order (ports rule 8).
pub async fn append_refuses_an_id_below_the_threads_newest_and_the_retry_above_it_succeeds(
    target: Target,
) {
    let f = target.factory();
    let f = &*f;
    let (t, _) = seed_thread(f, ALICE, 0).await;
    let early = message(&t.id, Role::User, "minted first, appended last", at(1));
    let late = message(&t.id, Role::User, "minted last, appended first", at(1));
    ok(
        scripts::create_message(f, &ctx(ALICE), &late).await,
        "append",
    );

    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    let r = ok(uow.append_message(&early).await, "append below the newest");
    assert_eq!(
        r,
        Appended::Stale {
            newest: late.id.clone()
        }
    );
    let mut retry = early.clone();
    retry.id = crate::fixtures::message_id_above(Some(&late.id));
    assert_eq!(
        ok(uow.append_message(&retry).await, "retry"),
        Appended::Done
    );
    commit(uow).await;

    let ids = all_message_ids(f, ALICE, &t.id).await;
    assert_eq!(ids, vec![late.id.clone(), retry.id.clone()]);
    assert_eq!(
        ok(read_thread(f, ALICE, &t.id).await, "read").message_count,
        2,
        "the refused append counted nothing"
    );
}

/// `adjust_message_count` adds its delta exactly and keeps `updated_at` monotonic.
pub async fn adjust_message_count_counts_and_never_moves_updated_at_backwards(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, _) = seed_thread(f, ALICE, 0).await;
    let (t2, _) = seed_thread(f, ALICE, 0).await;
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.adjust_message_count(&t.id, 3, at(10)).await, "adjust");
    ok(
        uow.adjust_message_count(&t.id, -1, at(5)).await,
        "adjust back in time",
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
        "adjust changes only its own thread"
    );
    // Put the count back so the storage invariant (count == live messages) holds.
    let mut uow = begin(f, ALICE, Mode::ReadWrite).await;
    ok(uow.adjust_message_count(&t.id, -2, at(11)).await, "adjust");
    commit(uow).await;
}

/// An archived thread and all its messages are gone from every read and
/// every write, archived in one write whatever the thread's size.
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
        uow.adjust_message_count(&t.id, 1, at(8)).await,
        "adjust of an archived thread",
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
        uow.append_message(&late).await,
        "append to an archived thread",
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
