//! API.md "Idempotency-Key": replay, 409 on reuse, concurrent duplicates.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::every_topology;
use crate::helpers::TestApp;

every_topology! {
    /// A retry with the same key and body replays the first response and creates nothing.
    async fn a_retry_with_the_same_key_replays_the_first_response(app) {
        let body = json!({"metadata": {"a": "1", "b": "2"}, "title": "t"});
        let first = app.send(app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", "key-1").json(&body)).await;
        first.expect(200);
        // Same JSON value, other key order and white space.
        let raw = "{ \"title\" : \"t\",\n \"metadata\": {\"b\":\"2\",\"a\":\"1\"} }";
        let second = app
            .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", "key-1").header("content-type", "application/json").body(raw))
            .await;
        second.expect(200);
        assert_eq!(first.text, second.text, "replayed byte for byte");
        let list = app.get("/v1/threads", "alice").await.expect(200);
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        // The same key for another user is that user's own key.
        let other = app.send(app.request(Method::POST, "/v1/threads", Some("bob")).header("Idempotency-Key", "key-1").json(&body)).await;
        assert_ne!(other.expect(200)["id"], first.json()["id"]);
    }

    /// The same key with another body or path → 409 idempotency_key_reused, and nothing is created.
    async fn a_key_reused_with_another_body_or_path_conflicts(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let path = format!("/v1/threads/{id}/messages");
        let send = |path: String, body: serde_json::Value| {
            app.send(app.request(Method::POST, &path, Some("alice")).header("Idempotency-Key", "k").json(&body))
        };
        send(path.clone(), json!({"role": "user", "content": "one"})).await.expect(200);
        send(path.clone(), json!({"role": "user", "content": "two"})).await.expect_error(409);
        send("/v1/threads".into(), json!({})).await.expect_error(409);
        let thread = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 1);
        assert_eq!(app.get("/v1/threads", "alice").await.expect(200)["data"].as_array().unwrap().len(), 1);
    }

    /// A failed first attempt is not recorded: the retry runs fresh.
    async fn only_successful_responses_are_recorded(app) {
        let r = app
            .send(app.request(Method::POST, "/v1/threads/thread_00000000000000000000000000000000/messages", Some("alice")).header("Idempotency-Key", "k2").json(&json!({"role": "user", "content": "x"})))
            .await;
        r.expect_error(404);
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let r = app
            .send(app.request(Method::POST, &format!("/v1/threads/{id}/messages"), Some("alice")).header("Idempotency-Key", "k3").json(&json!({"role": "user", "content": ""})))
            .await;
        r.expect_error(400);
        let r = app
            .send(app.request(Method::POST, &format!("/v1/threads/{id}/messages"), Some("alice")).header("Idempotency-Key", "k3").json(&json!({"role": "user", "content": "now valid"})))
            .await;
        r.expect(200);
    }

    /// 20 concurrent POSTs with one key: one message, 20 identical replies.
    async fn twenty_concurrent_duplicates_create_one_message(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let token = app.token("alice");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (client, base, token, id) = (app.client.clone(), app.next_base().to_owned(), token.clone(), id.clone());
                tokio::spawn(async move {
                    let r = client
                        .post(format!("{base}/v1/threads/{id}/messages"))
                        .bearer_auth(token)
                        .header("Idempotency-Key", "same-key")
                        .json(&json!({"role": "user", "content": "only once"}))
                        .send()
                        .await
                        .expect("sent");
                    (r.status().as_u16(), r.text().await.expect("body"))
                })
            })
            .collect();
        let replies = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks)).await.expect("in time");
        let replies: Vec<(u16, String)> = replies.into_iter().map(|r| r.unwrap()).collect();
        for (status, body) in &replies {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body, &replies[0].1, "identical replies");
        }
        let thread = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 1);
        let list = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }

    /// Keys outside 1–255 visible ASCII characters → 400.
    async fn invalid_keys_are_refused(app) {
        for key in ["", "has space", &"k".repeat(256), "tab\tkey"] {
            let r = app.send(app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", key).json(&json!({}))).await;
            assert_eq!(r.status.as_u16(), 400, "{key:?}: {}", r.text);
            r.expect_error(400);
        }
        app.send(app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", "!~".repeat(127)).json(&json!({})))
            .await
            .expect(200);
        assert_eq!(app.get("/v1/threads", "alice").await.expect(200)["data"].as_array().unwrap().len(), 1);
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
