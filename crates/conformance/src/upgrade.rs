//! Upgrading in place: a database filled through the first schema
//! (migration 0001, id-only keys) must read back unchanged after the
//! owner-keyed migration, through the ports, and keep working.
//!
//! An adapter's test applies its migration 0001 alone, runs
//! [`V1_ROWS`] (plain SQL literals that both PostgreSQL and SQLite accept),
//! applies the remaining migrations, then calls [`verify`].

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_domain::{
    IdempotencyKey, ListParams, MessageId, Order, PageLimit, Role, ThreadId, Timestamp,
};
use weft_ports::{Mode, PortError, UnitOfWorkFactory};

use crate::app;
use crate::fixtures::ctx;

/// Rows in the first schema: alice has a thread with two live messages and
/// one deleted, an archived thread, an empty thread and an idempotency
/// record; bob has one thread with one message.
pub const V1_ROWS: &str = r#"
INSERT INTO threads (id, owner, created_at, updated_at, metadata, tool_resources, title, message_count, deleted_at) VALUES
 ('thread_0000000000007000800000000000000a', 'alice', 100, 150, '{"project":"alpha"}', '{"code_interpreter":{"file_ids":["f1"]}}', 'GPU costs', 2, NULL),
 ('thread_0000000000007000800000000000000b', 'alice', 110, 110, '{}', '{}', NULL, 1, 120),
 ('thread_0000000000007000800000000000000c', 'alice', 130, 130, '{}', '{}', NULL, 0, NULL),
 ('thread_0000000000007000800000000000000d', 'bob',   105, 106, '{}', '{}', 'bob''s', 1, NULL);
INSERT INTO messages (id, thread_id, owner, created_at, role, content, attachments, metadata, deleted_at) VALUES
 ('msg_00000000000070008000000000000001', 'thread_0000000000007000800000000000000a', 'alice', 101, 'user', '[{"type":"text","text":{"value":"Why did the bill go up?","annotations":[]}}]', '[]', '{"lang":"en"}', NULL),
 ('msg_00000000000070008000000000000002', 'thread_0000000000007000800000000000000a', 'alice', 102, 'assistant', '[{"type":"text","text":{"value":"Storage.","annotations":[]}}]', '[{"file_id":"f1","tools":[]}]', '{}', NULL),
 ('msg_00000000000070008000000000000003', 'thread_0000000000007000800000000000000a', 'alice', 103, 'user', '[{"type":"text","text":{"value":"deleted","annotations":[]}}]', '[]', '{}', 140),
 ('msg_00000000000070008000000000000004', 'thread_0000000000007000800000000000000b', 'alice', 111, 'user', '[{"type":"text","text":{"value":"archived with its thread","annotations":[]}}]', '[]', '{}', 120),
 ('msg_00000000000070008000000000000005', 'thread_0000000000007000800000000000000d', 'bob', 106, 'user', '[{"type":"text","text":{"value":"hello from bob","annotations":[]}}]', '[]', '{}', NULL);
INSERT INTO idempotency (owner, key, fingerprint, status, body, created_at) VALUES
 ('alice', 'retry-1', 'abc123', 200, '{"id":"thread_0000000000007000800000000000000a"}', 100);
"#;

fn id<T>(r: Result<T, weft_domain::IdError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("fixture id: {e}"),
    }
}

fn ok<T>(r: Result<T, PortError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} after the upgrade failed: {e:?}"),
    }
}

fn thread_id(last: char) -> ThreadId {
    id(ThreadId::parse(&format!(
        "thread_0000000000007000800000000000000{last}"
    )))
}

fn message_id(n: u8) -> MessageId {
    id(MessageId::parse(&format!(
        "msg_000000000000700080000000000000{n:02}"
    )))
}

/// Reads every object of [`V1_ROWS`] back through `factory` and checks it
/// is unchanged; then writes through the app and checks new ids land
/// above the old ones (the sequences were filled from the existing ids).
///
/// # Panics
/// On any difference: this is a test helper.
pub async fn verify(factory: Arc<dyn UnitOfWorkFactory>) {
    let f = &*factory;
    let (a, b, c, d) = (
        thread_id('a'),
        thread_id('b'),
        thread_id('c'),
        thread_id('d'),
    );
    let mut uow = ok(f.begin(&ctx("alice"), Mode::ReadOnly).await, "begin");
    let page = ok(
        uow.list_threads(&ListParams::new(
            PageLimit::default(),
            Order::Asc,
            None,
            None,
        ))
        .await,
        "list_threads",
    );
    let ids: Vec<_> = page.items.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, vec![a.clone(), c.clone()], "alice's live threads");
    let ta = &page.items[0];
    assert_eq!(
        (ta.created_at, ta.updated_at, ta.message_count),
        (
            Timestamp::from_unix_seconds(100),
            Timestamp::from_unix_seconds(150),
            2
        )
    );
    assert_eq!(ta.title.as_ref().map(|t| t.as_str()), Some("GPU costs"));
    assert_eq!(
        ta.metadata.as_map(),
        &BTreeMap::from([("project".to_owned(), "alpha".to_owned())])
    );
    assert_eq!(
        ta.tool_resources.as_value(),
        &serde_json::json!({"code_interpreter": {"file_ids": ["f1"]}})
    );
    let msgs = ok(
        uow.list_messages(
            &a,
            &ListParams::new(PageLimit::default(), Order::Asc, None, None),
        )
        .await,
        "list_messages",
    );
    let texts: Vec<_> = msgs
        .items
        .iter()
        .map(|m| (m.id.clone(), m.role, m.content.plain_text()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (
                message_id(1),
                Role::User,
                "Why did the bill go up?".to_owned()
            ),
            (message_id(2), Role::Assistant, "Storage.".to_owned()),
        ]
    );
    assert_eq!(
        msgs.items[1].attachments.as_value(),
        &serde_json::json!([{"file_id": "f1", "tools": []}])
    );
    // The deleted message is still a valid cursor.
    let after_deleted = ok(
        uow.list_messages(
            &a,
            &ListParams::new(PageLimit::default(), Order::Desc, Some(message_id(3)), None),
        )
        .await,
        "list after the deleted message",
    );
    assert_eq!(after_deleted.items.len(), 2);
    assert!(matches!(uow.get_thread(&b).await, Err(PortError::NotFound)));
    let rec = ok(
        uow.find_idempotency(
            &ok(
                IdempotencyKey::parse("retry-1").map_err(PortError::unexpected),
                "key",
            ),
            Timestamp::from_unix_seconds(0),
        )
        .await,
        "find_idempotency",
    );
    assert_eq!(
        rec.map(|r| r.response.body),
        Some(r#"{"id":"thread_0000000000007000800000000000000a"}"#.to_owned())
    );
    ok(uow.commit().await, "commit");

    let mut uow = ok(f.begin(&ctx("bob"), Mode::ReadOnly).await, "begin");
    let page = ok(uow.list_threads(&ListParams::default()).await, "bob's list");
    assert_eq!(
        page.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![d.clone()]
    );
    assert!(matches!(uow.get_thread(&a).await, Err(PortError::NotFound)));
    ok(uow.commit().await, "commit");

    // New writes continue above the old ids.
    let app = app::app(Arc::clone(&factory), Arc::default());
    let body = match app
        .create_message(
            &ctx("alice"),
            a.clone(),
            crate::cases::new_message("after the upgrade"),
            app::render_message(),
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) => panic!("create_message after the upgrade: {e:?}"),
    };
    assert!(
        body.as_str() > message_id(3).as_str(),
        "a new message id {body} is above the thread's old ones"
    );
    let body = match app
        .create_thread(
            &ctx("alice"),
            crate::cases::create_thread_command(1),
            app::render_thread(),
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) => panic!("create_thread after the upgrade: {e:?}"),
    };
    assert!(
        body.as_str() > c.as_str(),
        "a new thread id {body} is above the owner's old ones"
    );
}
