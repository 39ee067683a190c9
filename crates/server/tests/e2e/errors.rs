//! API.md "Errors": every error is the OpenAI envelope, every response
//! carries x-request-id (the client's own when sane).

use reqwest::Method;
use serde_json::json;

use crate::every_topology;
use crate::helpers::TestApp;

every_topology! {
    /// Router, method, auth, parse, size, media-type and conflict errors all answer the envelope with x-request-id.
    async fn every_error_is_the_openai_envelope_with_a_request_id(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let big = " ".repeat(4 * 1024 * 1024 + 1);
        let cases: Vec<(u16, reqwest::RequestBuilder)> = vec![
            (404, app.request(Method::GET, "/nope", None)),
            (404, app.request(Method::GET, "/v1/nope", Some("alice"))),
            (404, app.request(Method::GET, "/v1/threads/thread_00000000000000000000000000000000", Some("alice"))),
            (404, app.request(Method::GET, "/v1/threads/not-an-id", Some("alice"))),
            (404, app.request(Method::GET, &format!("/v1/threads/{id}/messages/garbage"), Some("alice"))),
            (405, app.request(Method::PUT, "/v1/threads", Some("alice"))),
            (405, app.request(Method::PATCH, &format!("/v1/threads/{id}"), Some("alice"))),
            (401, app.request(Method::GET, "/v1/threads", None)),
            (401, app.request(Method::POST, "/v1/threads", None).json(&json!({}))),
            (400, app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json").body("{")),
            (400, app.request(Method::GET, "/v1/threads?limit=0", Some("alice"))),
            (400, app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", "has space").json(&json!({}))),
            (413, app.request(Method::POST, "/v1/threads", Some("alice")).body(big)),
            (415, app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "text/plain").body("{}")),
            (415, app.request(Method::POST, "/v1/threads", Some("alice")).header("content-encoding", "br").body("{}")),
        ];
        for (status, rb) in cases {
            let r = app.send(rb).await;
            assert_eq!(r.status.as_u16(), status, "body: {}", r.text);
            r.expect_error(status);
            let rid = r.headers["x-request-id"].to_str().unwrap();
            assert!(!rid.is_empty() && rid.len() <= 128);
        }
    }

    /// Retry hints (API.md "Safety guarantees"): every 4xx but 408/429 says x-should-retry: false — the reused key's 409 included — and successes say nothing.
    async fn client_errors_tell_the_sdks_not_to_retry(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap();
        let key = |body: serde_json::Value| app.request(Method::POST, "/v1/threads", Some("alice")).header("Idempotency-Key", "reused").json(&body);
        app.send(key(json!({}))).await.expect(200);
        let cases: Vec<(u16, reqwest::RequestBuilder)> = vec![
            (409, key(json!({"title": "other"}))),
            (400, app.request(Method::POST, &format!("/v1/threads/{id}/messages"), Some("alice")).json(&json!({"role": "system", "content": "x"}))),
            (401, app.request(Method::GET, "/v1/threads", None)),
            (404, app.request(Method::GET, "/v1/threads/thread_00000000000000000000000000000000", Some("alice"))),
            (404, app.request(Method::GET, "/nope", None)),
            (405, app.request(Method::PUT, "/v1/threads", Some("alice"))),
            (413, app.request(Method::POST, "/v1/threads", Some("alice")).body(" ".repeat(4 * 1024 * 1024 + 1))),
            (415, app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "text/plain").body("{}")),
        ];
        for (status, rb) in cases {
            let r = app.send(rb).await;
            r.expect_error(status);
            assert_eq!(r.headers.get("x-should-retry").map(|v| v.to_str().unwrap()), Some("false"), "{status}: {}", r.text);
            assert!(!r.headers.contains_key("retry-after"), "{status}");
        }
        let ok = app.get("/v1/threads", "alice").await;
        ok.expect(200);
        assert!(!ok.headers.contains_key("x-should-retry"));
        assert_eq!(app.get("/v1/threads", "alice").await.expect(200)["data"].as_array().unwrap().len(), 2, "nothing created by the refusals");
    }

    /// A sane client request id is echoed on success and error; an insane one is replaced.
    async fn the_clients_request_id_is_echoed_when_sane(app) {
        let r = app.send(app.request(Method::GET, "/v1/threads", Some("alice")).header("x-request-id", "abc-DEF_1.2:3")).await;
        r.expect(200);
        assert_eq!(r.headers["x-request-id"], "abc-DEF_1.2:3");
        let r = app.send(app.request(Method::GET, "/v1/nope", None).header("x-request-id", "trace:42")).await;
        r.expect_error(404);
        assert_eq!(r.headers["x-request-id"], "trace:42");
        for bad in ["has space", "semi;colon", &"r".repeat(129)] {
            let r = app.send(app.request(Method::GET, "/v1/threads", Some("alice")).header("x-request-id", bad)).await;
            r.expect(200);
            let got = r.headers["x-request-id"].to_str().unwrap();
            assert_ne!(got, bad);
            assert!(!got.is_empty() && got.len() <= 128);
        }
        let a = app.get("/v1/threads", "alice").await;
        let b = app.get("/v1/threads", "alice").await;
        assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"], "generated ids are unique");
        let ops = app.send(app.client.get(format!("{}/healthz", app.base))).await;
        assert!(ops.headers.contains_key("x-request-id"));
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
