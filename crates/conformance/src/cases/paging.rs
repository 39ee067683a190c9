//! Paging: the one plan every adapter executes, `before`/`after` windows,
//! and ids visible in id order to a pager while others create (ports rule
//! 8; API.md "Lists": every object exactly once).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_domain::{Message, MessageId, Order, Page, Role, Thread};
use weft_ports::{Mode, PortError, UnitOfWork, UnitOfWorkFactory};

use super::*;
use crate::app;
use crate::fixtures::{ctx, message, thread, NOW};

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
                        scripts::create_thread(&*f, &c, &th, &[]).await.map(drop),
                        "concurrent thread insert",
                    );
                } else {
                    let m = message(&tid, Role::User, "concurrent", NOW);
                    ok(
                        scripts::create_message(&*f, &c, &m).await.map(drop),
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

/// `after` and `before` together select the objects strictly between the
/// two cursors, in the chosen order, paged from the `after` side (what the
/// official SDKs send when they page on from a `before` list); crossed or
/// equal cursors select nothing; both cursors are checked.
pub async fn after_and_before_together_select_the_window_between_them(target: Target) {
    let f = target.factory();
    let f = &*f;
    let (t, msgs) = seed_thread(f, ALICE, 10).await;
    let ids: Vec<MessageId> = msgs.iter().map(|m| m.id.clone()).collect();
    let (_, others) = seed_thread(f, ALICE, 1).await;
    let page_of = |p: Page<Message>| {
        (
            p.items.into_iter().map(|m| m.id).collect::<Vec<_>>(),
            p.has_more,
        )
    };
    let mut uow = begin(f, ALICE, Mode::ReadOnly).await;
    for (limit, order, a, b, want, more) in [
        (3, Order::Asc, 1, 8, ids[2..5].to_vec(), true),
        (10, Order::Asc, 1, 8, ids[2..8].to_vec(), false),
        (
            3,
            Order::Desc,
            8,
            1,
            vec![ids[7].clone(), ids[6].clone(), ids[5].clone()],
            true,
        ),
        (
            10,
            Order::Desc,
            8,
            1,
            ids[2..8].iter().rev().cloned().collect(),
            false,
        ),
        (5, Order::Asc, 4, 5, vec![], false),
        (5, Order::Asc, 6, 2, vec![], false),
        (5, Order::Desc, 2, 6, vec![], false),
        (5, Order::Asc, 3, 3, vec![], false),
    ] {
        let p = params(limit, order, Some(ids[a].clone()), Some(ids[b].clone()));
        let got = page_of(ok(uow.list_messages(&t.id, &p).await, "window"));
        assert_eq!(
            got,
            (want, more),
            "{order:?} limit {limit} between #{a} and #{b}"
        );
    }
    let bad = params(
        5,
        Order::Asc,
        Some(ids[1].clone()),
        Some(others[0].id.clone()),
    );
    assert_invalid_cursor(
        uow.list_messages(&t.id, &bad).await,
        "a window whose before cursor is of another list",
    );
    let bad = params(
        5,
        Order::Asc,
        Some(others[0].id.clone()),
        Some(ids[5].clone()),
    );
    assert_invalid_cursor(
        uow.list_messages(&t.id, &bad).await,
        "a window whose after cursor is of another list",
    );
    commit(uow).await;
}

/// Writers of one owner create threads (each with messages) and append
/// messages to one thread, through two app instances whose clocks differ
/// (one runs 300 ms behind), while a pager walks each list with `after`
/// until the writers are done, then once more: the pager sees every object
/// exactly once and in order (API.md "Lists"; ports rule 8). Without the
/// per-owner and per-thread sequences, an id minted early but committed
/// late lands behind the pager and is never seen.
pub async fn a_pager_sees_every_object_created_while_it_pages(target: Target) {
    let f = target.factory();
    let outcomes = Arc::new(app::Outcomes::default());
    let apps = [
        app::app(Arc::clone(&f), Arc::clone(&outcomes)),
        app::app_with_ids(
            Arc::clone(&f),
            Arc::clone(&outcomes),
            Arc::new(app::SkewedIds::new(Duration::from_millis(300))),
        ),
    ];
    let (target_thread, _) = seed_thread(&*f, ALICE, 0).await;
    let load = target.load();
    let writers = 4;
    let per_writer = (load.count_writers / 2).clamp(5, 25);
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let app = apps[w % 2].clone();
        let tid = target_thread.id.clone();
        tasks.push(tokio::spawn(async move {
            let c = ctx(ALICE);
            for i in 0..per_writer {
                app.create_thread(&c, create_thread_command(4), app::render_thread())
                    .await
                    .map_err(PortError::unexpected)?;
                app.create_message(
                    &c,
                    tid.clone(),
                    new_message(&format!("writer {w} message {i}")),
                    app::render_message(),
                )
                .await
                .map_err(PortError::unexpected)?;
            }
            Ok::<(), PortError>(())
        }));
    }
    let pager = {
        let (f, done, tid) = (Arc::clone(&f), Arc::clone(&done), target_thread.id.clone());
        tokio::spawn(async move {
            let mut threads: Vec<weft_domain::ThreadId> = Vec::new();
            let mut messages: Vec<MessageId> = Vec::new();
            let mut last_round = false;
            for _ in 0..100_000 {
                let finished = done.load(Ordering::SeqCst);
                let mut uow = f.begin(&ctx(ALICE), Mode::ReadOnly).await?;
                let page = uow
                    .list_threads(&params(7, Order::Asc, threads.last().cloned(), None))
                    .await?;
                threads.extend(page.items.into_iter().map(|t| t.id));
                let page = uow
                    .list_messages(&tid, &params(7, Order::Asc, messages.last().cloned(), None))
                    .await?;
                messages.extend(page.items.into_iter().map(|m| m.id));
                uow.commit().await?;
                if last_round {
                    return Ok::<_, PortError>((threads, messages));
                }
                // One more full pass after the writers finished.
                last_round = finished;
                tokio::task::yield_now().await;
            }
            Err(PortError::unexpected("the pager did not finish"))
        })
    };
    let written = tokio::time::timeout(load.time_bound, futures::future::join_all(tasks)).await;
    for r in ok(
        written.map_err(PortError::unexpected),
        "writers within the time bound",
    ) {
        ok(ok(r.map_err(PortError::unexpected), "join"), "a writer");
    }
    done.store(true, Ordering::SeqCst);
    let (seen_threads, seen_messages) = ok(
        ok(pager.await.map_err(PortError::unexpected), "join"),
        "the pager",
    );
    // The pager keeps paging past its last page until the writers stop,
    // so it must also have caught everything written after it started.
    let all: Vec<_> = all_threads(&*f, ALICE)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all.len(), 1 + writers * per_writer);
    assert_pager_saw_all(&seen_threads, &all, "threads");
    let all_msgs = all_message_ids(&*f, ALICE, &target_thread.id).await;
    assert_eq!(all_msgs.len(), writers * per_writer);
    assert_pager_saw_all(&seen_messages, &all_msgs, "messages");
}

/// The pager saw exactly `all`, in order; the failure names what it missed.
fn assert_pager_saw_all<I: Ord + std::hash::Hash + std::fmt::Debug>(
    seen: &[I],
    all: &[I],
    what: &str,
) {
    let seen_set: HashSet<&I> = seen.iter().collect();
    let missed: Vec<&I> = all.iter().filter(|i| !seen_set.contains(i)).collect();
    assert!(
        missed.is_empty(),
        "the pager missed {} of {} {what} (ids committed behind it), e.g. {:?}",
        missed.len(),
        all.len(),
        missed.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(seen.len(), all.len(), "the pager saw some {what} twice");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the pager saw {what} out of order"
    );
}
