//! API.md "Safety guarantees": clients that disconnect mid-request leave
//! no half-written data, no leaked connection, no idle-in-transaction backend.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::every_topology;
use crate::helpers::TestApp;

async fn raw(app: &TestApp, bytes: Vec<u8>, linger: Duration) {
    let addr = app.next_base().trim_start_matches("http://").to_owned();
    if let Ok(mut s) = TcpStream::connect(addr).await {
        let _ = s.write_all(&bytes).await;
        tokio::time::sleep(linger).await;
        // Dropped here: the client is gone, whatever the server was doing.
    }
}

every_topology! {
    /// Clients disconnecting at random points, in a bounded loop: afterwards the pool is idle and the counts are exact.
    async fn clients_disconnecting_mid_request_leave_everything_consistent(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let token = app.token("alice");
        let started = std::time::Instant::now();
        for i in 0..60u64 {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            // 1. A reqwest client that gives up after a few milliseconds.
            let impatient = reqwest::Client::builder()
                .timeout(Duration::from_millis(1 + (i * 7) % 25))
                .build()
                .unwrap();
            let mut batch = Vec::new();
            // Several at once, so some queue for the database and are dropped while waiting.
            for j in 0..8 {
                let (c, base, token, id) = (impatient.clone(), app.next_base().to_owned(), token.clone(), id.clone());
                batch.push(tokio::spawn(async move {
                    let _ = match j % 4 {
                        0 => c.post(format!("{base}/v1/threads/{id}/messages")).bearer_auth(&token).json(&json!({"role": "user", "content": format!("c{i}")})).send().await,
                        1 => c.get(format!("{base}/v1/threads/{id}/messages?limit=100")).bearer_auth(&token).send().await,
                        // Heavy enough (≈1 MB to parse and write) to be dropped mid-handler.
                        2 => {
                            let msgs: Vec<serde_json::Value> = (0..32).map(|k| json!({"role": "user", "content": format!("{k}{}", "z".repeat(30_000))})).collect();
                            c.post(format!("{base}/v1/threads")).bearer_auth(&token).json(&json!({"messages": msgs})).send().await
                        }
                        _ => c.post(format!("{base}/v1/threads/{id}/auto_rename")).bearer_auth(&token).send().await,
                    };
                }));
            }
            // 2. A request whose body never finishes arriving.
            let partial = format!(
                "POST /v1/threads/{id}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"role\":\"user\",\"content\":\"par"
            );
            raw(&app, partial.into_bytes(), Duration::from_millis(i % 5)).await;
            // 3. A complete request whose client leaves before the answer.
            let body = format!("{{\"role\":\"user\",\"content\":\"gone{i}\"}}");
            let whole = format!(
                "POST /v1/threads/{id}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            raw(&app, whole.into_bytes(), Duration::from_millis(i % 3)).await;
            for b in batch {
                let _ = b.await;
            }
        }
        app.wait_for_idle_pool().await;
        let cancelled = app.metric("weft_http_requests_cancelled_total ").await.unwrap_or(0.0);
        assert!(cancelled > 0.0, "dropped requests are counted as cancelled");
        // A backend whose connection the server just closed may take a moment
        // to notice; a leak is one that stays.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = app.idle_in_transaction().await;
            if n == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{n} backends left idle in transaction");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Invariants: every thread's count equals its listed messages.
        let threads = app.list_all("/v1/threads", "alice", "asc", 100).await;
        for th in threads {
            let tid = th["id"].as_str().unwrap();
            let msgs = app.list_all(&format!("/v1/threads/{tid}/messages"), "alice", "asc", 100).await;
            let fresh = app.get(&format!("/v1/threads/{tid}"), "alice").await.expect(200);
            assert_eq!(fresh["message_count"].as_u64().unwrap() as usize, msgs.len(), "thread {tid}");
            // Threads are created whole: with all initial messages or not at all.
            if tid != id {
                assert_eq!(msgs.len(), 32, "thread {tid} created whole");
            }
        }
        // The server still serves normally.
        app.create_message("alice", &id, "after the storm").await;
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}

/// Shutdown while a slow use case runs, with a shutdown bound shorter than
/// the use case: the request is dropped (and counted as cancelled), yet the
/// use case runs to its commit before the pool closes (the shield), so the
/// restarted server sees its write.
async fn a_use_case_outlives_its_dropped_request(db: crate::helpers::Db) {
    let (started, release) = (gate(), gate());
    let mut app = crate::helpers::spawn_app_full(
        db,
        |s| s.shutdown_timeout = Duration::from_secs(1),
        std::sync::Arc::new(GatedTitles {
            started: started.clone(),
            release: release.clone(),
            title: "slow title",
        }),
    )
    .await;
    let t = app
        .create_thread(
            "alice",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let in_flight = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/threads/{id}/auto_rename"),
            Some("alice"),
        )
        .send();
    // The generator is held until the request has been cut: the use case is
    // then surely outliving its request, and the shield's own wait (another
    // shutdown bound) leaves it ample time to commit.
    let in_flight = tokio::spawn(async move {
        let reply = in_flight.await;
        release.notify_one();
        reply
    });
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the use case reached the title generator");
    app.stop().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the connection was cut at the shutdown bound"
    );
    assert_eq!(app.cancelled_count(), 1, "the dropped request is counted");
    app.restart().await;
    let got = app
        .get(&format!("/v1/threads/{id}"), "alice")
        .await
        .expect(200);
    assert_eq!(
        got["title"], "slow title",
        "the shielded use case committed"
    );
    app.wait_for_idle_pool().await;
}

mod a_use_case_outlives_its_dropped_request {
    crate::topology_tests!(super::a_use_case_outlives_its_dropped_request);
}

/// A title generator that says when it started and then waits to be
/// released, so a test can cut a request while its use case is surely
/// running, without guessing at timings.
struct GatedTitles {
    started: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
    title: &'static str,
}

/// A one-shot signal (`notify_one` keeps a permit, so no wake-up is missed).
fn gate() -> std::sync::Arc<tokio::sync::Notify> {
    std::sync::Arc::new(tokio::sync::Notify::new())
}

#[async_trait::async_trait]
impl weft_ports::TitleGenerator for GatedTitles {
    async fn generate(
        &self,
        _first_user_text: &str,
    ) -> Result<weft_domain::Title, weft_ports::TitleError> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(weft_domain::Title::parse(self.title).expect("valid title"))
    }
}

/// An HTTP/2 client resets its stream while the use case runs: the server
/// drops the request (counted in the cancelled-requests metric), yet the use
/// case, shielded in its own task, runs to its commit, and afterwards the
/// pool is idle with nothing left in a transaction.
async fn an_http2_stream_reset_cancels_the_request_but_not_its_use_case(db: crate::helpers::Db) {
    let (started, release) = (gate(), gate());
    let app = crate::helpers::spawn_app_full(
        db,
        |_| {},
        std::sync::Arc::new(GatedTitles {
            started: started.clone(),
            release: release.clone(),
            title: "h2 title",
        }),
    )
    .await;
    let t = app
        .create_thread(
            "alice",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    let id = t["id"].as_str().unwrap().to_owned();

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let call = h2
        .post(format!("{}/v1/threads/{id}/auto_rename", app.base))
        .bearer_auth(app.token("alice"))
        .send();
    let call = tokio::spawn(call);
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the use case reached the title generator");
    // Dropping the in-flight response future resets the HTTP/2 stream while
    // the use case is held inside the generator.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.cancelled_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reset request was never counted as cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.cancelled_count(), 1);

    // Only now may the use case go on: it still commits its title.
    release.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = app
            .get(&format!("/v1/threads/{id}"), "alice")
            .await
            .expect(200);
        if got["title"] == "h2 title" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the use case of the reset request never committed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_for_idle_pool().await;
    if db.is_postgres() {
        assert_eq!(app.idle_in_transaction().await, 0);
    }
}

mod an_http2_stream_reset_cancels_the_request_but_not_its_use_case {
    crate::topology_tests!(super::an_http2_stream_reset_cancels_the_request_but_not_its_use_case);
}
