//! The conformance cases: the unit-of-work contract of `weft_ports::uow`,
//! one public async function per rule, grouped by concern. Each takes the
//! target on a fresh, empty database and panics (it is test code) when the
//! adapter breaks the contract; [`crate::conformance_tests!`] turns each
//! into a named test.
//!
//! - [`crud`]: every port round trip and its NotFound/Duplicate contract.
//! - [`isolation`]: owner scoping and cursor validity.
//! - [`paging`]: the one paging plan, `before`/`after` windows, and ids
//!   visible in id order to a pager while others create (rule 8).
//! - [`transactions`]: rollback, drop, read-only, concurrent writers,
//!   serializable conflicts through the app's retry.
//! - [`cancellation`]: use cases cut at every await point, and a storm.

use std::sync::Arc;

use weft_domain::{
    Attachments, CreateThread, ListParams, Message, MessageId, NewMessage, Order, PageLimit, Role,
    Thread, ThreadId, Timestamp, ToolResources,
};
use weft_ports::{Mode, PortError, UnitOfWork, UnitOfWorkFactory};

use crate::fixtures::{ctx, message, thread, NOW};
use crate::{scripts, ConformanceTarget};

pub mod cancellation;
pub mod crud;
pub mod isolation;
pub mod paging;
pub mod transactions;

pub use cancellation::*;
pub use crud::*;
pub use isolation::*;
pub use paging::*;
pub use transactions::*;

/// The target as the cases hold it: shared with spawned tasks.
pub type Target = Arc<dyn ConformanceTarget>;

pub(crate) const ALICE: &str = "alice";
pub(crate) const BOB: &str = "bob";

pub(crate) async fn begin(
    f: &dyn UnitOfWorkFactory,
    user: &str,
    mode: Mode,
) -> Box<dyn UnitOfWork> {
    match f.begin(&ctx(user), mode).await {
        Ok(uow) => uow,
        Err(e) => panic!("begin({user}, {mode:?}) failed: {e:?}"),
    }
}

pub(crate) async fn commit(uow: Box<dyn UnitOfWork>) {
    if let Err(e) = uow.commit().await {
        panic!("commit failed: {e:?}");
    }
}

pub(crate) fn ok<T>(r: Result<T, PortError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

pub(crate) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::NotFound)),
        "{what}: expected NotFound, got {r:?}"
    );
}

pub(crate) fn assert_invalid_cursor<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::InvalidCursor)),
        "{what}: expected InvalidCursor, got {r:?}"
    );
}

pub(crate) fn params<I>(
    limit: i64,
    order: Order,
    after: Option<I>,
    before: Option<I>,
) -> ListParams<I> {
    let limit = match PageLimit::new(limit) {
        Ok(l) => l,
        Err(e) => panic!("bad limit in case: {e}"),
    };
    ListParams::new(limit, order, after, before)
}

pub(crate) fn at(offset: i64) -> Timestamp {
    Timestamp::from_unix_seconds(NOW.unix_seconds() + offset)
}

/// Creates a thread of `user` with `n` messages (alternating user/assistant)
/// and returns both.
pub(crate) async fn seed_thread(
    f: &dyn UnitOfWorkFactory,
    user: &str,
    n: usize,
) -> (Thread, Vec<Message>) {
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
    )
}

pub(crate) async fn read_thread(
    f: &dyn UnitOfWorkFactory,
    user: &str,
    id: &ThreadId,
) -> Result<Thread, PortError> {
    scripts::read_thread(f, &ctx(user), id).await
}

/// Every live message id of a thread, oldest first, paging by 100.
pub(crate) async fn all_message_ids(
    f: &dyn UnitOfWorkFactory,
    user: &str,
    t: &ThreadId,
) -> Vec<MessageId> {
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

pub(crate) fn new_message(text: &str) -> NewMessage {
    NewMessage {
        role: Role::User,
        content: crate::fixtures::content(text),
        attachments: Attachments::default(),
        metadata: weft_domain::Metadata::default(),
    }
}

pub(crate) fn create_thread_command(n: usize) -> CreateThread {
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
pub(crate) async fn all_threads(f: &dyn UnitOfWorkFactory, user: &str) -> Vec<Thread> {
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
