//! Owner scoping (DESIGN.md "Isolation") and cursor validity.

use weft_domain::{ListParams, Order, Role, Title};
use weft_ports::{Mode, PortError};

use super::*;
use crate::fixtures::{ctx, message, metadata};

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
        uow.adjust_message_count(&t.id, 5, at(9)).await,
        "bob changes the count of alice's thread",
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
        uow.append_message(&intruder).await,
        "bob posts into alice's thread",
    );
    assert_not_found(
        uow.insert_messages(std::slice::from_ref(&intruder)).await,
        "bob inserts into alice's thread",
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
