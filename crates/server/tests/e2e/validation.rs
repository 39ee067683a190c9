//! API.md "Details" and the 400/413/415 rows: limits, content forms,
//! unknown fields, body size and media type. A refused request changes nothing.

use futures::stream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::every_topology;
use crate::helpers::TestApp;

fn nested(levels: usize) -> Value {
    let mut v = json!({});
    for _ in 1..levels {
        v = json!({ "a": v });
    }
    v
}

fn nested_array(levels: usize) -> Value {
    let mut v = json!([]);
    for _ in 1..levels {
        v = json!([v]);
    }
    v
}

fn pairs(n: usize) -> Value {
    Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
}

every_topology! {
    /// Metadata: 16 pairs, 64-char keys and 512-char values pass; one more of anything → 400.
    async fn metadata_limits_are_enforced(app) {
        app.create_thread("alice", json!({"metadata": pairs(16)})).await;
        let long_key = "k".repeat(64);
        app.create_thread("alice", json!({"metadata": {long_key: "v".repeat(512)}})).await;
        let too_long_key = "k".repeat(65);
        for bad in [
            json!({"metadata": pairs(17)}),
            json!({"metadata": {too_long_key: "v"}}),
            json!({"metadata": {"": "v"}}),
            json!({"metadata": {"k": "v".repeat(513)}}),
            json!({"metadata": {"k": 1}}),
            json!({"metadata": {"k": null}}),
            json!({"metadata": {"k": "a\u{0}b"}}),
            json!({"metadata": ["k"]}),
        ] {
            app.post("/v1/threads", "alice", bad.clone()).await.expect_error(400);
        }
        let threads = app.get("/v1/threads?limit=100", "alice").await.expect(200);
        assert_eq!(threads["data"].as_array().unwrap().len(), 2, "refused creates created nothing");
    }

    /// The 16-pair limit applies to the merged result of a modify; a refused modify changes nothing.
    async fn the_pair_limit_applies_after_the_merge(app) {
        let t = app.create_thread("alice", json!({"metadata": pairs(16)})).await;
        let id = t["id"].as_str().unwrap();
        app.post(&format!("/v1/threads/{id}"), "alice", json!({"metadata": {"new": "v"}, "title": "x"})).await.expect_error(400);
        let unchanged = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(unchanged, t);
        let swapped = app
            .post(&format!("/v1/threads/{id}"), "alice", json!({"metadata": {"new": "v", "k0": null}}))
            .await
            .expect(200);
        assert_eq!(swapped["metadata"].as_object().unwrap().len(), 16);
        assert_eq!(swapped["metadata"]["new"], "v");
    }

    /// Content: a string or parts; every text part non-empty, 256,000 characters in all; unknown part types, NUL, lone surrogates → 400.
    async fn content_forms_and_limits(app) {
        let t = app.create_thread("alice", json!({})).await;
        let path = format!("/v1/threads/{}/messages", t["id"].as_str().unwrap());
        let ok = |c: Value| json!({"role": "user", "content": c});
        let m = app.post(&path, "alice", ok(json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]))).await.expect(200);
        assert_eq!(m["content"], json!([
            {"type": "text", "text": {"value": "a", "annotations": []}},
            {"type": "text", "text": {"value": "b", "annotations": []}}
        ]));
        // 256,000 characters, counted as Unicode scalar values (é is 2 bytes, 1 character).
        let max = "é".repeat(256_000);
        app.post(&path, "alice", ok(json!(max))).await.expect(200);
        let half = "x".repeat(128_000);
        app.post(&path, "alice", ok(json!([{"type": "text", "text": half}, {"type": "text", "text": half}]))).await.expect(200);
        for bad in [
            ok(json!("")),
            ok(json!([])),
            ok(json!("x".repeat(256_001))),
            ok(json!([{"type": "text", "text": half}, {"type": "text", "text": half}, {"type": "text", "text": "y"}])),
            ok(json!([{"type": "text", "text": ""}, {"type": "text", "text": "y"}])),
            ok(json!([{"type": "refusal", "refusal": "no"}])),
            ok(json!([{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}])),
            ok(json!([{"text": "no type"}])),
            ok(json!(42)),
            ok(json!({"type": "text", "text": "x"})),
            ok(json!("nul \u{0} inside")),
            json!({"role": "system", "content": "x"}),
            json!({"role": "user"}),
            json!({"content": "x"}),
        ] {
            let r = app.post(&path, "alice", bad.clone()).await;
            assert_eq!(r.status.as_u16(), 400, "{} → {}", &bad.to_string()[..bad.to_string().len().min(120)], r.text);
            r.expect_error(400);
        }
        let lone = r#"{"role":"user","content":"bad \ud800 surrogate"}"#;
        app.send(app.request(Method::POST, &path, Some("alice")).header("content-type", "application/json").body(lone))
            .await
            .expect_error(400);
        let thread = app.get(&format!("/v1/threads/{}", t["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 3, "only the valid messages were created");
    }

    /// Image parts (API.md "Details"): accepted, stored and returned in OpenAI's form with detail `auto` by default; images alone are a message; bounds and shapes → 400, and a refused message is not created.
    async fn image_parts_are_stored_and_returned_in_openais_form(app) {
        let t = app.create_thread("alice", json!({"messages": [
            {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "file-first"}}]}
        ]})).await;
        let tid = t["id"].as_str().unwrap();
        let path = format!("/v1/threads/{tid}/messages");
        let long_url = format!("data:image/png;base64,{}", "A".repeat(8192 - 22));
        assert_eq!(long_url.chars().count(), 8192);
        let content = json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": long_url, "detail": "low"}},
            {"type": "image_file", "image_file": {"file_id": "f".repeat(128), "detail": "high"}}
        ]);
        let m = app.post(&path, "alice", json!({"role": "user", "content": content})).await.expect(200);
        let expected = json!([
            {"type": "text", "text": {"value": "What is in these?", "annotations": []}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "auto"}},
            {"type": "image_url", "image_url": {"url": long_url, "detail": "low"}},
            {"type": "image_file", "image_file": {"file_id": "f".repeat(128), "detail": "high"}}
        ]);
        assert_eq!(m["content"], expected);
        let got = app.get(&format!("{path}/{}", m["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(got["content"], expected, "stored as returned");
        let listed = app.get(&format!("{path}?order=asc"), "alice").await.expect(200);
        assert_eq!(listed["data"][0]["content"], json!([{"type": "image_file", "image_file": {"file_id": "file-first", "detail": "auto"}}]));
        assert_eq!(listed["data"][1]["content"], expected);
        // An image-only first message still gives the thread a title.
        let renamed = app.post(&format!("/v1/threads/{tid}/auto_rename"), "alice", json!({})).await.expect(200);
        assert!(renamed["title"].as_str().is_some_and(|t| !t.is_empty()));

        let img = |v: Value| json!({"role": "user", "content": [v]});
        for bad in [
            img(json!({"type": "image_url", "image_url": {"url": "u".repeat(8193)}})),
            img(json!({"type": "image_url", "image_url": {"url": ""}})),
            img(json!({"type": "image_url", "image_url": {"url": "https://x", "detail": "medium"}})),
            img(json!({"type": "image_url", "image_url": {"url": "https://x", "extra": 1}})),
            img(json!({"type": "image_url", "image_url": "https://x"})),
            img(json!({"type": "image_url", "url": "https://x"})),
            img(json!({"type": "image_url", "image_url": {"url": "a\u{0}b"}})),
            img(json!({"type": "image_file", "image_file": {"file_id": "f".repeat(129)}})),
            img(json!({"type": "image_file", "image_file": {"file_id": ""}})),
            img(json!({"type": "image_file", "image_file": {"file_id": 7}})),
            img(json!({"type": "image_file", "image_file": {"file_id": "f"}, "text": "x"})),
            json!({"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "f"}}, {"type": "text", "text": ""}]}),
        ] {
            let r = app.post(&path, "alice", bad.clone()).await;
            assert_eq!(r.status.as_u16(), 400, "{bad} → {}", r.text);
            r.expect_error(400);
        }
        let nul = r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"a\u0000b"}}]}"#;
        app.send(app.request(Method::POST, &path, Some("alice")).header("content-type", "application/json").body(nul))
            .await
            .expect_error(400);
        let thread = app.get(&format!("/v1/threads/{tid}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 2, "refused messages were not created");
    }

    /// Unknown fields, wrong types and malformed JSON in every create/modify body → 400.
    async fn unknown_fields_wrong_types_and_malformed_json_are_refused(app) {
        let t = app.create_thread("alice", json!({"messages": [{"role": "user", "content": "x"}]})).await;
        let id = t["id"].as_str().unwrap();
        let list = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        let mid = list["data"][0]["id"].as_str().unwrap();
        let cases: Vec<(String, Value)> = vec![
            ("/v1/threads".into(), json!({"nope": 1})),
            ("/v1/threads".into(), json!({"messages": [{"role": "user", "content": "x", "file_ids": []}]})),
            ("/v1/threads".into(), json!({"messages": "x"})),
            ("/v1/threads".into(), json!({"title": 5})),
            ("/v1/threads".into(), json!({"tool_resources": []})),
            (format!("/v1/threads/{id}"), json!({"role": "user"})),
            (format!("/v1/threads/{id}"), json!({"metadata": "x"})),
            (format!("/v1/threads/{id}/messages"), json!({"role": "user", "content": "x", "extra": true})),
            (format!("/v1/threads/{id}/messages"), json!({"role": "user", "content": "x", "attachments": {}})),
            (format!("/v1/threads/{id}/messages"), json!({"role": 1, "content": "x"})),
            (format!("/v1/threads/{id}/messages/{mid}"), json!({"content": "y"})),
            (format!("/v1/threads/{id}/messages/{mid}"), json!({"metadata": []})),
        ];
        for (path, body) in cases {
            let r = app.post(&path, "alice", body.clone()).await;
            assert_eq!(r.status.as_u16(), 400, "{path} {body} → {}", r.text);
            r.expect_error(400);
        }
        for raw in ["{", "{\"a\":}", "[1,2]", "\"str\"", "nul", "{\"title\":\"x\"} trailing"] {
            let r = app
                .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json").body(raw))
                .await;
            assert_eq!(r.status.as_u16(), 400, "{raw:?} → {}", r.text);
            r.expect_error(400);
        }
        let after = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(after, t, "refused modifies changed nothing");
        let threads = app.get("/v1/threads", "alice").await.expect(200);
        assert_eq!(threads["data"].as_array().unwrap().len(), 1);
    }

    /// Titles: at most 256 characters, no NUL.
    async fn title_limits_are_enforced(app) {
        app.create_thread("alice", json!({"title": "t".repeat(256)})).await;
        app.post("/v1/threads", "alice", json!({"title": "t".repeat(257)})).await.expect_error(400);
        app.post("/v1/threads", "alice", json!({"title": "a\u{0}"})).await.expect_error(400);
    }

    /// tool_resources and attachments deeper than 32 levels → 400; 32 is fine.
    async fn opaque_json_deeper_than_32_levels_is_refused(app) {
        app.create_thread("alice", json!({"tool_resources": nested(32)})).await;
        app.post("/v1/threads", "alice", json!({"tool_resources": nested(33)})).await.expect_error(400);
        let t = app.create_thread("alice", json!({})).await;
        let path = format!("/v1/threads/{}/messages", t["id"].as_str().unwrap());
        app.post(&path, "alice", json!({"role": "user", "content": "x", "attachments": nested_array(32)})).await.expect(200);
        app.post(&path, "alice", json!({"role": "user", "content": "x", "attachments": nested_array(33)})).await.expect_error(400);
    }

    /// More than 32 initial messages → 400 and no thread.
    async fn at_most_32_initial_messages(app) {
        let msgs: Vec<Value> = (0..33).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
        app.post("/v1/threads", "alice", json!({"messages": msgs})).await.expect_error(400);
        assert_eq!(app.get("/v1/threads", "alice").await.expect(200)["data"], json!([]));
        let msgs: Vec<Value> = (0..32).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
        let t = app.create_thread("alice", json!({"messages": msgs})).await;
        assert_eq!(t["message_count"], 32);
    }

    /// Bodies over WEFT_MAX_BODY_BYTES (default 4 MiB) → 413, whether sized or chunked; the limit itself passes.
    async fn bodies_over_the_limit_are_refused_even_chunked(app) {
        const LIMIT: usize = 4 * 1024 * 1024;
        // Exactly the limit (valid JSON padded with spaces): not a 413.
        let body = format!("{{\"title\":\"ok\"}}{}", " ".repeat(LIMIT - 14));
        assert_eq!(body.len(), LIMIT);
        let r = app
            .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json").body(body))
            .await;
        r.expect(200);
        // One byte more, with Content-Length.
        let over = format!("{{\"title\":\"no\"}}{}", " ".repeat(LIMIT - 13));
        let r = app.send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json").body(over))
            .await;
        r.expect_error(413);
        assert!(r.text.contains("4194304"), "the limit is named: {}", r.text);
        // Chunked, no Content-Length: 65 chunks of 64 KiB.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..65).map(|i| Ok(if i == 0 { b"{\"title\":\"x\"}".to_vec() } else { vec![b' '; 64 * 1024] })).collect();
        let r = app
            .send(
                app.request(Method::POST, "/v1/threads", Some("alice"))
                    .header("content-type", "application/json")
                    .body(reqwest::Body::wrap_stream(stream::iter(chunks))),
            )
            .await;
        r.expect_error(413);
        // A small chunked body is fine.
        let small: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"{\"title\":".to_vec()), Ok(b"\"chunked\"}".to_vec())];
        let r = app
            .send(
                app.request(Method::POST, "/v1/threads", Some("alice"))
                    .header("content-type", "application/json")
                    .body(reqwest::Body::wrap_stream(stream::iter(small))),
            )
            .await;
        assert_eq!(r.expect(200)["title"], "chunked");
        let threads = app.get("/v1/threads", "alice").await.expect(200);
        assert_eq!(threads["data"].as_array().unwrap().len(), 2);
    }

    /// A non-JSON Content-Type → 415; a missing one is read as JSON; GET/DELETE need no body.
    async fn non_json_bodies_are_unsupported_and_missing_content_type_is_json(app) {
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"] {
            let r = app
                .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", ct).body("{}"))
                .await;
            assert_eq!(r.status.as_u16(), 415, "{ct} → {}", r.text);
            r.expect_error(415);
        }
        let r = app.send(app.request(Method::POST, "/v1/threads", Some("alice")).body("{\"title\":\"bare\"}")).await;
        assert_eq!(r.expect(200)["title"], "bare");
        let r = app
            .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json; charset=utf-8").body("{}"))
            .await;
        r.expect(200);
        let id = r.id();
        // Also on an operation that takes no body.
        app.send(
            app.request(Method::POST, &format!("/v1/threads/{id}/auto_rename"), Some("alice"))
                .header("content-type", "text/plain")
                .body("rename please"),
        )
        .await
        .expect_error(415);
        app.send(app.request(Method::GET, &format!("/v1/threads/{id}"), Some("alice"))).await.expect(200);
        app.send(app.request(Method::DELETE, &format!("/v1/threads/{id}"), Some("alice"))).await.expect(200);
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
