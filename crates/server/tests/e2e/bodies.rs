//! Request bodies (API.md "Authentication and isolation", "Errors" 408/413/415,
//! "Operations"): nothing of a body is read before its token is verified;
//! gzip is decoded with the limit counted after decoding; the limit fits
//! one message at the text limit in any JSON encoding; a body must arrive
//! within the body timeout; bodies being read share a memory budget; a
//! slow body never holds a database connection. Nothing is stored by any
//! refusal.

use std::io::Write;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_databases;
use crate::helpers::{spawn_app_with, Db, TestApp};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// JSON as Python's `json.dumps` sends it by default: every non-ASCII
/// character as `\uXXXX` (astral ones as a surrogate pair).
fn ascii_json(v: &Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

async fn thread_count(app: &TestApp, user: &str) -> usize {
    app.list_all("/v1/threads", user, "asc", 100).await.len()
}

/// Writes `head` and `body` on a fresh connection and keeps it open.
async fn half_sent(app: &TestApp, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s
}

/// The status line and the rest of what the server answered on `s`,
/// waiting at most `bound` (generous: a wait that long means no answer).
async fn answer(s: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(bound, read).await;
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

fn post_head(path: &str, token: Option<&str>, content_length: usize) -> String {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

both_databases! {
    /// gzip and x-gzip bodies (any case) are decoded; identity is plain; other codings and lists → 415; a false or truncated gzip → 400; a gzip bomb → 413; no refusal stores anything.
    async fn gzip_bodies_are_decoded_and_other_codings_refused(app) {
        let send = |coding: Option<&str>, body: Vec<u8>| {
            let mut rb = app.request(Method::POST, "/v1/threads", Some("alice")).header("content-type", "application/json");
            if let Some(c) = coding {
                rb = rb.header("content-encoding", c);
            }
            app.send(rb.body(body))
        };
        for (coding, title) in [("gzip", "g1"), ("x-gzip", "g2"), ("GZip", "g3")] {
            let r = send(Some(coding), gzip(json!({"title": title}).to_string().as_bytes())).await;
            assert_eq!(r.expect(200)["title"], title, "{coding}");
        }
        let r = send(Some("identity"), json!({"title": "plain"}).to_string().into_bytes()).await;
        assert_eq!(r.expect(200)["title"], "plain");
        // A message at the text limit is tiny compressed and fits decoded.
        let t = app.create_thread("alice", json!({})).await;
        let body = json!({"role": "user", "content": "x".repeat(256_000)}).to_string();
        let r = app
            .send(app.request(Method::POST, &format!("/v1/threads/{}/messages", t["id"].as_str().unwrap()), Some("alice"))
                .header("content-encoding", "gzip")
                .body(gzip(body.as_bytes())))
            .await;
        assert_eq!(r.expect(200)["content"][0]["text"]["value"].as_str().unwrap().len(), 256_000);
        let before = thread_count(&app, "alice").await;

        let plain = json!({"title": "refused"}).to_string().into_bytes();
        for coding in ["br", "deflate", "compress", "gzip, identity", "identity, gzip", "gzip;q=1", ""] {
            let r = send(Some(coding), gzip(&plain)).await;
            assert_eq!(r.status.as_u16(), 415, "{coding:?}: {}", r.text);
            r.expect_error(415);
        }
        let twice = app
            .send(app.request(Method::POST, "/v1/threads", Some("alice")).header("content-encoding", "gzip").header("content-encoding", "gzip").body(gzip(&gzip(&plain))))
            .await;
        twice.expect_error(415);
        // Plain JSON labelled gzip, a truncated gzip, gzip then garbage.
        let mut cut = gzip(&plain);
        cut.truncate(cut.len() - 6);
        let mut trailing = gzip(&plain);
        trailing.extend_from_slice(b"{}");
        for bad in [plain.clone(), cut, trailing] {
            let r = send(Some("gzip"), bad).await;
            assert_eq!(r.status.as_u16(), 400, "{}", r.text);
            assert!(r.expect_error(400)["error"]["message"].as_str().unwrap().contains("gzip"));
        }
        // A bomb: 64 KiB on the wire, 64 MiB decoded.
        let mut inflated = br#"{"title":"bomb"}"#.to_vec();
        inflated.resize(64 * 1024 * 1024, b' ');
        let bomb = gzip(&inflated);
        drop(inflated);
        assert!(bomb.len() < 128 * 1024);
        send(Some("gzip"), bomb).await.expect_error(413);
        assert_eq!(thread_count(&app, "alice").await, before, "no refusal stored anything");
    }

    /// One message at the 256,000-character limit fits as \uXXXX-escaped JSON: CJK (1.54 MB) and emoji (3.07 MB).
    async fn a_message_at_the_text_limit_fits_in_any_json_encoding(app) {
        let t = app.create_thread("alice", json!({})).await;
        let path = format!("/v1/threads/{}/messages", t["id"].as_str().unwrap());
        for (name, ch, min_bytes) in [("CJK", '中', 1_536_000), ("emoji", '😀', 3_072_000)] {
            let text: String = std::iter::repeat_n(ch, 256_000).collect();
            let body = ascii_json(&json!({"role": "user", "content": text}));
            assert!(body.is_ascii() && body.len() > min_bytes, "{name}: {} bytes", body.len());
            let r = app
                .send(app.request(Method::POST, &path, Some("alice")).header("content-type", "application/json").body(body))
                .await;
            let m = r.expect(200);
            assert_eq!(m["content"][0]["text"]["value"].as_str().unwrap().chars().count(), 256_000, "{name}");
        }
        let thread = app.get(&format!("/v1/threads/{}", t["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 2);
    }

    /// Without a valid token no body is read or judged: a wrong type, an oversized body, a bad encoding, a false gzip and a body that never arrives all get 401 — the last without waiting for it.
    async fn without_a_token_nothing_of_the_body_is_read(app) {
        let none = |rb: reqwest::RequestBuilder| rb;
        let bad = |rb: reqwest::RequestBuilder| rb.bearer_auth("not.a.token");
        for auth in [none, bad] {
            let cases = [
                auth(app.request(Method::POST, "/v1/threads", None)).header("content-type", "text/plain").body("hi"),
                auth(app.request(Method::POST, "/v1/threads", None)).body(" ".repeat(5 * 1024 * 1024)),
                auth(app.request(Method::POST, "/v1/threads", None)).header("content-encoding", "br").body("{}"),
                auth(app.request(Method::POST, "/v1/threads", None)).header("content-encoding", "gzip").body("{}"),
                auth(app.request(Method::POST, "/v1/threads/thread_x/auto_rename", None)).header("content-type", "text/plain").body("x"),
                auth(app.request(Method::POST, "/v1/threads", None)).header("Idempotency-Key", "has space").json(&json!({})),
            ];
            for rb in cases {
                let r = app.send(rb).await;
                assert_eq!(r.status.as_u16(), 401, "{}", r.text);
                r.expect_error(401);
            }
        }
        // HTTP/1.1: 10 of 1,000 announced bytes, then nothing. The 401 comes
        // while the body is still incomplete (no body timeout is involved: its
        // default is 30 s, and the bound here is 20 s).
        let mut s = half_sent(&app, &post_head("/v1/threads", None, 1000), b"{\"title\":\"").await;
        let got = answer(&mut s, Duration::from_secs(20)).await.expect("an answer before the body completed");
        assert!(got.starts_with("HTTP/1.1 401"), "{got}");
        // HTTP/2: a stream whose body never ends.
        let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let (_tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            h2.post(format!("{}/v1/threads", app.base)).body(reqwest::Body::wrap_stream(rx)).send(),
        )
        .await
        .expect("an answer before the body completed")
        .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(thread_count(&app, "alice").await, 0);
    }

    /// A slow body never holds a database connection: with eight bodies stuck half-way, the pool is idle and other requests are served.
    async fn a_slow_body_never_holds_a_database_connection(app) {
        let t = app.create_thread("alice", json!({})).await;
        let path = format!("/v1/threads/{}/messages", t["id"].as_str().unwrap());
        let token = app.token("alice");
        let mut stuck = Vec::new();
        for _ in 0..8 {
            stuck.push(half_sent(&app, &post_head(&path, Some(&token), 1000), b"{\"role\":\"user\",\"content\":\"").await);
        }
        // Give the server every chance to start on them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.wait_for_idle_pool().await;
        for i in 0..20 {
            app.create_message("alice", t["id"].as_str().unwrap(), &format!("m{i}")).await;
        }
        app.wait_for_idle_pool().await;
        drop(stuck);
        let thread = app.get(&format!("/v1/threads/{}", t["id"].as_str().unwrap()), "alice").await.expect(200);
        assert_eq!(thread["message_count"], 20, "the stuck bodies created nothing");
    }
}

/// WEFT_MAX_BODY_BYTES is the limit, counted after decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_configurable_and_counted_after_decoding() {
    const LIMIT: usize = 64 * 1024;
    let app = spawn_app_with(Db::Sqlite, |s| s.body.max_bytes = LIMIT).await;
    let padded = |n: usize| {
        let mut b = br#"{"title":"t"}"#.to_vec();
        b.resize(n, b' ');
        b
    };
    let post = |body: Vec<u8>, coding: Option<&str>| {
        let mut rb = app
            .request(Method::POST, "/v1/threads", Some("alice"))
            .header("content-type", "application/json");
        if let Some(c) = coding {
            rb = rb.header("content-encoding", c);
        }
        app.send(rb.body(body))
    };
    post(padded(LIMIT), None).await.expect(200);
    post(padded(LIMIT), Some("gzip")).await.expect_error(400);
    post(gzip(&padded(LIMIT)), Some("gzip")).await.expect(200);
    let r = post(padded(LIMIT + 1), None).await;
    assert!(r.expect_error(413)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    post(gzip(&padded(LIMIT + 1)), Some("gzip"))
        .await
        .expect_error(413);
    assert_eq!(thread_count(&app, "alice").await, 2);
}

/// A body that is not complete within WEFT_BODY_TIMEOUT_MS of its headers
/// → 408 in the envelope (retryable: no x-should-retry), nothing created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.body.timeout = Duration::from_millis(300);
    })
    .await;
    let token = app.token("alice");
    let mut s = half_sent(
        &app,
        &post_head("/v1/threads", Some(&token), 1000),
        b"{\"title\":\"",
    )
    .await;
    let got = answer(&mut s, Duration::from_secs(20))
        .await
        .expect("an answer");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    let lower = got.to_lowercase();
    assert!(lower.contains("x-request-id:"), "{got}");
    assert!(!lower.contains("x-should-retry"), "{got}");
    let body = &got[got.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap();
    crate::helpers::assert_error_envelope(&v, 408);
    // A complete body within the bound is unaffected.
    app.create_thread("alice", json!({"title": "in time"}))
        .await;
    assert_eq!(thread_count(&app, "alice").await, 1);
}

/// The bodies being read share WEFT_MAX_INFLIGHT_BODY_BYTES: past it a
/// body is answered 503 with Retry-After at once (requests without a body
/// are unaffected), and the budget comes back when a body leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_read_share_a_memory_budget() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.body.max_bytes = 100_000;
        s.body.max_inflight_bytes = 150_000;
    })
    .await;
    let token = app.token("alice");
    // Holds 100,000 bytes of budget (its declared length) while stuck half-way.
    let mut holder = half_sent(
        &app,
        &post_head("/v1/threads", Some(&token), 100_000),
        &[b' '; 50_000],
    )
    .await;
    let mut body = br#"{"title":"second"}"#.to_vec();
    body.resize(60_000, b' ');
    let second = |b: Vec<u8>| {
        app.send(
            app.request(Method::POST, "/v1/threads", Some("alice"))
                .header("content-type", "application/json")
                .body(b),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        // The holder's reservation is made once its headers are handled.
        let r = second(body.clone()).await;
        if r.status.as_u16() == 503 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    refused.expect_error(503);
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(!refused.headers.contains_key("x-should-retry"));
    // A small body still fits beside the holder; reads need no budget.
    app.create_thread("alice", json!({"title": "small"})).await;
    app.get("/v1/threads", "alice").await.expect(200);
    // The holder leaves: its budget comes back.
    holder.shutdown().await.unwrap();
    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = second(body.clone()).await;
        if r.status.as_u16() == 200 {
            break;
        }
        assert_eq!(r.status.as_u16(), 503, "{}", r.text);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let titles: Vec<String> = app
        .list_all("/v1/threads", "alice", "asc", 100)
        .await
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["small", "second"], "the refusals stored nothing");
}
