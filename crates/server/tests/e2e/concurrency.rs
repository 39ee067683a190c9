//! API.md "Safety guarantees": concurrent writers never lose updates.

use std::time::Duration;

use serde_json::json;

use crate::every_topology;
use crate::helpers::TestApp;

every_topology! {
    /// 200 concurrent creates on one thread: message_count = successes = what the list shows.
    async fn two_hundred_concurrent_creates_keep_the_count_exact(app) {
        let t = app.create_thread("alice", json!({})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let token = app.token("alice");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (client, base, token, id) = (app.client.clone(), app.next_base().to_owned(), token.clone(), id.clone());
                tokio::spawn(async move {
                    let r = client
                        .post(format!("{base}/v1/threads/{id}/messages"))
                        .bearer_auth(token)
                        .json(&json!({"role": "user", "content": format!("m{i}")}))
                        .send()
                        .await
                        .expect("sent");
                    r.status().as_u16()
                })
            })
            .collect();
        let statuses = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
            .await
            .expect("200 creates finish in time");
        let statuses: Vec<u16> = statuses.into_iter().map(|s| s.unwrap()).collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "only 200 or 503: {statuses:?}");
        assert!(ok >= 150, "most creates succeed ({ok}/200)");
        let thread = app.get(&format!("/v1/threads/{id}"), "alice").await.expect(200);
        assert_eq!(thread["message_count"].as_u64().unwrap() as usize, ok);
        let listed = app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "asc", 100).await;
        assert_eq!(listed.len(), ok);
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
