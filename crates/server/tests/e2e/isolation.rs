//! API.md "isolation": another user's objects are indistinguishable from
//! missing ones (404, never 403), and their ids are invalid cursors (400).

use reqwest::Method;
use serde_json::json;

use crate::every_topology;
use crate::helpers::TestApp;

every_topology! {
    /// Bob gets 404 on every read, modify and delete of Alice's thread and message, and changes nothing.
    async fn another_users_objects_are_not_found_everywhere(app) {
        let t = app.create_thread("alice", json!({"messages": [{"role": "user", "content": "secret"}], "metadata": {"a": "1"}})).await;
        let id = t["id"].as_str().unwrap();
        let list = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        let mid = list["data"][0]["id"].as_str().unwrap();
        let probes: Vec<(Method, String, Option<serde_json::Value>)> = vec![
            (Method::GET, format!("/v1/threads/{id}"), None),
            (Method::POST, format!("/v1/threads/{id}"), Some(json!({"metadata": {"a": "bob"}, "title": "pwned"}))),
            (Method::DELETE, format!("/v1/threads/{id}"), None),
            (Method::POST, format!("/v1/threads/{id}/auto_rename"), Some(json!({}))),
            (Method::GET, format!("/v1/threads/{id}/messages"), None),
            (Method::POST, format!("/v1/threads/{id}/messages"), Some(json!({"role": "user", "content": "intrude"}))),
            (Method::GET, format!("/v1/threads/{id}/messages/{mid}"), None),
            (Method::POST, format!("/v1/threads/{id}/messages/{mid}"), Some(json!({"metadata": {"x": "y"}}))),
            (Method::DELETE, format!("/v1/threads/{id}/messages/{mid}"), None),
        ];
        for (method, path, body) in probes {
            let mut rb = app.request(method.clone(), &path, Some("bob"));
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let r = app.send(rb).await;
            assert_eq!(r.status.as_u16(), 404, "{method} {path}: {}", r.text);
            r.expect_error(404);
        }
        // Bob's own thread cannot reach Alice's message either.
        let bobs = app.create_thread("bob", json!({})).await;
        let bid = bobs["id"].as_str().unwrap();
        // Alice's data is untouched.
        let after = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(after, t);
        let msgs = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        assert_eq!(msgs, list);
        // Bob's list shows only his own thread.
        let bob_list = app.get("/v1/threads", "bob").await.expect(200);
        assert_eq!(bob_list["data"].as_array().unwrap().len(), 1);
        assert_eq!(bob_list["data"][0]["id"], bid);
        app.get(&format!("/v1/threads/{bid}/messages/{mid}"), "bob").await.expect_error(404);
        app.post(&format!("/v1/threads/{bid}/messages/{mid}"), "bob", json!({"metadata": {"x": "y"}})).await.expect_error(404);
        app.delete(&format!("/v1/threads/{bid}/messages/{mid}"), "bob").await.expect_error(404);
        let bob_thread = app.get(&format!("/v1/threads/{bid}"), "bob").await.expect(200);
        assert_eq!(bob_thread["message_count"], 0);
    }

    /// Alice's ids used as Bob's list cursors → 400 (existence is not leaked through paging).
    async fn another_users_ids_are_invalid_cursors(app) {
        let t = app.create_thread("alice", json!({"messages": [{"role": "user", "content": "x"}]})).await;
        let id = t["id"].as_str().unwrap();
        let mid = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200)["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.create_thread("bob", json!({})).await;
        let bobs = app.create_thread("bob", json!({})).await;
        let bid = bobs["id"].as_str().unwrap();
        app.create_message("bob", bid, "mine").await;
        app.get(&format!("/v1/threads?after={id}"), "bob").await.expect_error(400);
        app.get(&format!("/v1/threads?before={id}"), "bob").await.expect_error(400);
        app.get(&format!("/v1/threads/{bid}/messages?after={mid}"), "bob").await.expect_error(400);
        app.get(&format!("/v1/threads/{bid}/messages?before={mid}"), "bob").await.expect_error(400);
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
