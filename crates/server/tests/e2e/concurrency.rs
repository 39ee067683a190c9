//! API.md "Safety guarantees": concurrent writers never lose updates.

use std::time::Duration;

use serde_json::json;

use crate::every_topology;
use crate::helpers::TestApp;

every_topology! {
    /// 200 concurrent creates on one thread, each retried on 503 as the SDKs
    /// do (same Idempotency-Key, bounded): every create lands exactly once,
    /// and message_count = 200 = what the list shows. A 503 must have
    /// changed nothing (or be replayed by its key), so no retry duplicates.
    async fn two_hundred_concurrent_creates_keep_the_count_exact(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let token = app.token("alice");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (client, base, token, id) = (app.client.clone(), app.next_base().to_owned(), token.clone(), id.clone());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _attempt in 0..30 {
                        let status = client
                            .post(format!("{base}/v1/threads/{id}/messages"))
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("create-{i}"))
                            .json(&json!({"role": "user", "content": format!("m{i}")}))
                            .send()
                            .await
                            .expect("sent")
                            .status()
                            .as_u16();
                        statuses.push(status);
                        if status != 503 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    statuses
                })
            })
            .collect();
        let attempts = tokio::time::timeout(Duration::from_secs(240), futures::future::join_all(tasks))
            .await
            .expect("200 creates finish in time");
        let attempts: Vec<Vec<u16>> = attempts.into_iter().map(|s| s.unwrap()).collect();
        for statuses in &attempts {
            assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "only 200 or 503: {statuses:?}");
            assert_eq!(statuses.last(), Some(&200), "a create succeeds within 30 tries: {statuses:?}");
        }
        let thread = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"].as_u64(), Some(200));
        let listed = app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "asc", 100).await;
        let mut contents: Vec<String> = listed
            .iter()
            .map(|m| m["content"][0]["text"]["value"].as_str().unwrap().to_owned())
            .collect();
        contents.sort();
        let mut expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(contents, expected, "each create exactly once");
        app.wait_for_idle_pool().await;
    }

    /// Concurrent creates and deletes on one thread leave an exact count.
    async fn concurrent_creates_and_deletes_keep_the_count_exact(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let mut victims = Vec::new();
        for i in 0..40 {
            victims.push(app.create_message("alice", &id, &format!("v{i}")).await["id"].as_str().unwrap().to_owned());
        }
        let token = app.token("alice");
        let mut tasks = Vec::new();
        for (i, victim) in victims.into_iter().enumerate() {
            let (client, base, token, id) = (app.client.clone(), app.next_base().to_owned(), token.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let del = client
                    .delete(format!("{base}/v1/threads/{id}/messages/{victim}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("sent")
                    .status()
                    .as_u16();
                let add = client
                    .post(format!("{base}/v1/threads/{id}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"role": "user", "content": format!("n{i}")}))
                    .send()
                    .await
                    .expect("sent")
                    .status()
                    .as_u16();
                (del, add)
            }));
        }
        let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks)).await.expect("in time");
        let (mut deleted, mut added) = (0i64, 0i64);
        for r in results {
            let (d, a) = r.unwrap();
            deleted += i64::from(d == 200);
            added += i64::from(a == 200);
        }
        let thread = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"].as_i64().unwrap(), 40 - deleted + added);
        let listed = app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "desc", 100).await;
        assert_eq!(listed.len() as i64, 40 - deleted + added);
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
