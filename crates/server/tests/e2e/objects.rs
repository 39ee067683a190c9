//! API.md "Objects" and "Endpoints": shapes, defaults, and what each
//! operation changes.

use serde_json::{json, Value};

use crate::every_topology;
use crate::helpers::TestApp;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn thread_keys() -> Vec<String> {
    let mut k: Vec<String> = [
        "id",
        "object",
        "created_at",
        "updated_at",
        "metadata",
        "tool_resources",
        "title",
        "message_count",
    ]
    .map(String::from)
    .to_vec();
    k.sort();
    k
}

fn message_keys() -> Vec<String> {
    let mut k: Vec<String> = [
        "id",
        "object",
        "created_at",
        "thread_id",
        "status",
        "incomplete_details",
        "completed_at",
        "incomplete_at",
        "role",
        "content",
        "assistant_id",
        "run_id",
        "attachments",
        "metadata",
    ]
    .map(String::from)
    .to_vec();
    k.sort();
    k
}

fn is_id(v: &Value, prefix: &str) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix(prefix)
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

every_topology! {
    /// An empty create gives a thread of exactly the documented shape and defaults.
    async fn a_new_thread_has_the_openai_shape_and_defaults(app) {
        let t = app.create_thread("alice", json!({})).await;
        assert_eq!(keys(&t), thread_keys());
        assert!(is_id(&t["id"], "thread_"), "{t}");
        assert_eq!(t["object"], "thread");
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["tool_resources"], json!({}));
        assert_eq!(t["title"], Value::Null);
        assert_eq!(t["message_count"], 0);
        assert!(t["created_at"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(t["created_at"], t["updated_at"]);
        let got = app.get(&format!("/v1/threads/{}", t["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(got, t);
    }

    /// Initial messages are created with the thread, counted, and listed in order.
    async fn a_thread_created_with_messages_counts_and_lists_them(app) {
        let t = app
            .create_thread(
                "alice",
                json!({
                    "messages": [
                        {"role": "user", "content": "first"},
                        {"role": "assistant", "content": [{"type": "text", "text": "second"}], "metadata": {"k": "v"}},
                        {"role": "user", "content": "third", "attachments": [{"file_id": "f1", "tools": [{"type": "file_search"}]}]}
                    ],
                    "metadata": {"project": "alpha"},
                    "title": "Quarterly GPU cost review"
                }),
            )
            .await;
        assert_eq!(t["message_count"], 3);
        assert_eq!(t["title"], "Quarterly GPU cost review");
        assert_eq!(t["metadata"], json!({"project": "alpha"}));
        let id = t["id"].as_str().unwrap();
        let list = app.get(&format!("/v1/threads/{id}/messages?order=asc"), "alice").await.expect(200);
        let data = list["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        let texts: Vec<&str> = data.iter().map(|m| m["content"][0]["text"]["value"].as_str().unwrap()).collect();
        assert_eq!(texts, ["first", "second", "third"]);
        assert_eq!(data[1]["role"], "assistant");
        assert_eq!(data[1]["metadata"], json!({"k": "v"}));
        assert_eq!(data[2]["attachments"], json!([{"file_id": "f1", "tools": [{"type": "file_search"}]}]));
        for m in data {
            assert_eq!(keys(m), message_keys());
            assert_eq!(m["thread_id"], id);
        }
    }

    /// A message has exactly the OpenAI shape with the documented constant fields.
    async fn a_new_message_has_the_openai_shape(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let m = app.create_message("alice", id, "Hello").await;
        assert_eq!(keys(&m), message_keys());
        assert!(is_id(&m["id"], "msg_"), "{m}");
        assert_eq!(m["object"], "thread.message");
        assert_eq!(m["thread_id"], id);
        assert_eq!(m["status"], "completed");
        assert_eq!(m["incomplete_details"], Value::Null);
        assert_eq!(m["completed_at"], m["created_at"]);
        assert_eq!(m["incomplete_at"], Value::Null);
        assert_eq!(m["role"], "user");
        assert_eq!(m["content"], json!([{"type": "text", "text": {"value": "Hello", "annotations": []}}]));
        assert_eq!(m["assistant_id"], Value::Null);
        assert_eq!(m["run_id"], Value::Null);
        assert_eq!(m["attachments"], json!([]));
        assert_eq!(m["metadata"], json!({}));
        let got = app.get(&format!("/v1/threads/{id}/messages/{}", m["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(got, m);
    }

    /// Creating and deleting messages keeps the thread's count exact.
    async fn messages_update_the_thread_count(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let m1 = app.create_message("alice", id, "one").await;
        app.create_message("alice", id, "two").await;
        let got = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(got["message_count"], 2);
        assert!(got["updated_at"].as_i64() >= t["updated_at"].as_i64());
        let mid = m1["id"].as_str().unwrap();
        let del = app.delete(&format!("/v1/threads/{id}/messages/{mid}"), "alice").await.expect(200);
        assert_eq!(del, json!({"id": mid, "object": "thread.message.deleted", "deleted": true}));
        let got = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(got["message_count"], 1);
        app.get(&format!("/v1/threads/{id}/messages/{mid}"), "alice").await.expect_error(404);
        app.delete(&format!("/v1/threads/{id}/messages/{mid}"), "alice").await.expect_error(404);
        let list = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }

    /// Deleting an unknown message of an empty thread is a plain 404 and leaves the count at 0.
    async fn deleting_a_missing_message_of_an_empty_thread_is_not_found(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        app.delete(&format!("/v1/threads/{id}/messages/msg_00000000000000000000000000000000"), "alice")
            .await
            .expect_error(404);
        let got = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(got, t);
    }

    /// A deleted thread and its messages are gone from every endpoint.
    async fn a_deleted_thread_is_gone_with_its_messages(app) {
        let t = app.create_thread("alice", json!({"messages": [{"role": "user", "content": "hi"}]})).await;
        let id = t["id"].as_str().unwrap();
        let list = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        let mid = list["data"][0]["id"].as_str().unwrap().to_owned();
        let del = app.delete(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(del, json!({"id": id, "object": "thread.deleted", "deleted": true}));
        app.get(&format!("/v1/threads/{id}"), "alice").await.expect_error(404);
        app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect_error(404);
        app.get(&format!("/v1/threads/{id}/messages/{mid}"), "alice").await.expect_error(404);
        app.post(&format!("/v1/threads/{id}"), "alice", json!({"title": "x"})).await.expect_error(404);
        app.post(&format!("/v1/threads/{id}/messages"), "alice", json!({"role": "user", "content": "x"})).await.expect_error(404);
        app.delete(&format!("/v1/threads/{id}"), "alice").await.expect_error(404);
        let threads = app.get("/v1/threads", "alice").await.expect(200);
        assert_eq!(threads["data"], json!([]));
    }

    /// tool_resources and attachments come back exactly as given.
    async fn opaque_json_round_trips_as_given(app) {
        let tr = json!({"code_interpreter": {"file_ids": ["a", "b"]}, "x": [1, 2.5, null, true, {"y": "z"}]});
        let t = app.create_thread("alice", json!({"tool_resources": tr})).await;
        assert_eq!(t["tool_resources"], tr);
        let id = t["id"].as_str().unwrap();
        let att = json!([{"file_id": "f", "tools": [{"type": "code_interpreter"}]}]);
        let m = app
            .post(&format!("/v1/threads/{id}/messages"), "alice", json!({"role": "user", "content": "x", "attachments": att}))
            .await
            .expect(200);
        assert_eq!(m["attachments"], att);
        let got = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(got["tool_resources"], tr);
        let tr2 = json!({"file_search": {}});
        let got = app.post(&format!("/v1/threads/{id}"), "alice", json!({"tool_resources": tr2})).await.expect(200);
        assert_eq!(got["tool_resources"], tr2);
    }

    /// Modify merges metadata (null removes), sets and clears the title, keeps the rest.
    async fn modify_thread_merges_metadata_and_sets_or_clears_the_title(app) {
        let t = app.create_thread("alice", json!({"metadata": {"a": "1", "b": "2"}, "title": "old"})).await;
        let id = t["id"].as_str().unwrap();
        let got = app
            .post(&format!("/v1/threads/{id}"), "alice", json!({"metadata": {"b": null, "c": "3", "a": "9"}}))
            .await
            .expect(200);
        assert_eq!(got["metadata"], json!({"a": "9", "c": "3"}));
        assert_eq!(got["title"], "old");
        let got = app.post(&format!("/v1/threads/{id}"), "alice", json!({"title": "new"})).await.expect(200);
        assert_eq!(got["title"], "new");
        assert_eq!(got["metadata"], json!({"a": "9", "c": "3"}));
        let got = app.post(&format!("/v1/threads/{id}"), "alice", json!({"title": null})).await.expect(200);
        assert_eq!(got["title"], Value::Null);
        let again = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(again, got);
    }

    /// Modify message merges its metadata and changes nothing else.
    async fn modify_message_merges_metadata(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let m = app
            .post(&format!("/v1/threads/{id}/messages"), "alice", json!({"role": "user", "content": "x", "metadata": {"a": "1", "b": "2"}}))
            .await
            .expect(200);
        let mid = m["id"].as_str().unwrap();
        let got = app
            .post(&format!("/v1/threads/{id}/messages/{mid}"), "alice", json!({"metadata": {"a": null, "z": "26"}}))
            .await
            .expect(200);
        assert_eq!(got["metadata"], json!({"b": "2", "z": "26"}));
        assert_eq!(got["content"], m["content"]);
        assert_eq!(got["created_at"], m["created_at"]);
    }

    /// auto_rename titles the thread from its first user message; without one → 400.
    async fn auto_rename_uses_the_first_user_message(app) {
        let t = app
            .create_thread("alice", json!({"messages": [
                {"role": "assistant", "content": "How can I help?"},
                {"role": "user", "content": "  Quarterly   GPU\ncost review "},
                {"role": "user", "content": "later"}
            ]}))
            .await;
        let id = t["id"].as_str().unwrap();
        let got = app.post(&format!("/v1/threads/{id}/auto_rename"), "alice", json!({})).await.expect(200);
        assert_eq!(got["title"], "Quarterly GPU cost review");
        assert_eq!(got["message_count"], 3);

        let empty = app.create_thread("alice", json!({"messages": [{"role": "assistant", "content": "hi"}]})).await;
        let eid = empty["id"].as_str().unwrap();
        app.post(&format!("/v1/threads/{eid}/auto_rename"), "alice", json!({})).await.expect_error(400);
        let unchanged = app.get(&format!("/v1/threads/{eid}"), "alice").await.expect(200);
        assert_eq!(unchanged["title"], Value::Null);
        app.send(app.request(reqwest::Method::POST, "/v1/threads/thread_00000000000000000000000000000000/auto_rename", Some("alice")))
            .await
            .expect_error(404);
    }

    /// A run_id filter matches nothing (Weft messages have no run).
    async fn listing_messages_by_run_id_matches_nothing(app) {
        let t = app.create_thread("alice", json!({"messages": [{"role": "user", "content": "hi"}]})).await;
        let id = t["id"].as_str().unwrap();
        let list = app.get(&format!("/v1/threads/{id}/messages?run_id=run_abc"), "alice").await.expect(200);
        assert_eq!(list, json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false}));
    }

    /// OpenAI headers clients send are accepted and ignored.
    async fn openai_beta_headers_are_accepted(app) {
        let r = app
            .send(
                app.request(reqwest::Method::POST, "/v1/threads", Some("alice"))
                    .header("OpenAI-Beta", "assistants=v2")
                    .header("OpenAI-Organization", "org-x")
                    .json(&json!({})),
            )
            .await;
        r.expect(200);
    }
}

/// Helper use: keeps `TestApp` imported for the macro's `use super::*`.
#[allow(dead_code)]
fn _uses(_: &TestApp) {}
