//! API.md "Lists": limit, order, after/before, has_more, cursor errors.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::every_topology;
use crate::helpers::TestApp;

fn ids(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

fn page_ids(page: &Value) -> Vec<String> {
    ids(page["data"].as_array().unwrap())
}

async fn thread_with_messages(app: &TestApp, user: &str, n: usize) -> (String, Vec<String>) {
    let t = app.create_thread(user, json!({})).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let mut created = Vec::new();
    for i in 0..n {
        created.push(
            app.create_message(user, &id, &format!("m{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    (id, created)
}

every_topology! {
    /// 55 messages paged by 10 with after=last_id: each exactly once, in order, both orders.
    async fn paging_55_messages_by_10_yields_each_exactly_once_in_both_orders(app) {
        let (id, created) = thread_with_messages(&app, "alice", 55).await;
        let asc = ids(&app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "asc", 10).await);
        assert_eq!(asc, created);
        let desc = ids(&app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "desc", 10).await);
        let mut reversed = created.clone();
        reversed.reverse();
        assert_eq!(desc, reversed);
    }

    /// 55 threads paged by 10: each exactly once, in both orders; ids sort in creation order.
    async fn paging_55_threads_by_10_yields_each_exactly_once_in_both_orders(app) {
        let mut created = Vec::new();
        for _ in 0..55 {
            created.push(app.create_thread("alice", json!({})).await["id"].as_str().unwrap().to_owned());
        }
        let mut sorted = created.clone();
        sorted.sort();
        assert_eq!(sorted, created, "ids sort in creation order");
        let asc = ids(&app.list_all("/v1/threads", "alice", "asc", 10).await);
        assert_eq!(asc, created);
        let desc = ids(&app.list_all("/v1/threads", "alice", "desc", 10).await);
        assert_eq!(desc.len(), 55);
        assert_eq!(desc.iter().collect::<HashSet<_>>().len(), 55);
        let mut reversed = created;
        reversed.reverse();
        assert_eq!(desc, reversed);
    }

    /// Defaults: 20 newest first; has_more and first/last ids reflect the page.
    async fn lists_default_to_twenty_newest_first(app) {
        let (id, created) = thread_with_messages(&app, "alice", 25).await;
        let page = app.get(&format!("/v1/threads/{id}/messages"), "alice").await.expect(200);
        let got = page_ids(&page);
        let expected: Vec<String> = created.iter().rev().take(20).cloned().collect();
        assert_eq!(got, expected);
        assert_eq!(page["has_more"], true);
        assert_eq!(page["object"], "list");
        assert_eq!(page["first_id"].as_str().unwrap(), expected[0]);
        assert_eq!(page["last_id"].as_str().unwrap(), expected[19]);
    }

    /// before: the limit objects nearest before the cursor, in the chosen order; has_more looks beyond the first.
    async fn before_returns_the_nearest_objects_in_the_chosen_order(app) {
        let (id, c) = thread_with_messages(&app, "alice", 10).await;
        let path = format!("/v1/threads/{id}/messages");
        // asc, before c[6]: nearest 3 before are c[3], c[4], c[5]; more exist before c[3].
        let p = app.get(&format!("{path}?order=asc&limit=3&before={}", c[6]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[3..6].to_vec());
        assert_eq!(p["has_more"], true);
        // asc, before c[3] with limit 3: c[0..3], nothing more before.
        let p = app.get(&format!("{path}?order=asc&limit=3&before={}", c[3]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[0..3].to_vec());
        assert_eq!(p["has_more"], false);
        // desc, before c[6]: "before" in desc order means newer: c[9], c[8], c[7]; none newer.
        let p = app.get(&format!("{path}?order=desc&limit=3&before={}", c[6]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), vec![c[9].clone(), c[8].clone(), c[7].clone()]);
        assert_eq!(p["has_more"], false);
        let p = app.get(&format!("{path}?order=desc&limit=2&before={}", c[6]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), vec![c[8].clone(), c[7].clone()]);
        assert_eq!(p["has_more"], true);
        // after, desc: older than the cursor.
        let p = app.get(&format!("{path}?order=desc&limit=2&after={}", c[2]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), vec![c[1].clone(), c[0].clone()]);
        assert_eq!(p["has_more"], false);
        // after the last object: empty page with null ids.
        let p = app.get(&format!("{path}?order=asc&after={}", c[9]), "alice").await.expect(200);
        assert_eq!(p, json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false}));
    }

    /// Bad query values → 400: limit out of range or not a number, order, malformed cursors.
    async fn bad_list_parameters_are_refused(app) {
        let (id, _) = thread_with_messages(&app, "alice", 2).await;
        let path = format!("/v1/threads/{id}/messages");
        for q in [
            "limit=0".to_owned(),
            "limit=101".to_owned(),
            "limit=-1".to_owned(),
            "limit=abc".to_owned(),
            "limit=1.5".to_owned(),
            "order=sideways".to_owned(),
            "order=ASC".to_owned(),
            "after=msg_nope".to_owned(),
            "before=thread_0193f1a2b3c4d5e6f708192a3b4c5d6e".to_owned(),
        ] {
            let r = app.get(&format!("{path}?{q}"), "alice").await;
            assert_eq!(r.status.as_u16(), 400, "{q} → {}", r.text);
            r.expect_error(400);
        }
        for q in ["limit=1", "limit=100", "order=asc", "order=desc"] {
            app.get(&format!("{path}?{q}"), "alice").await.expect(200);
        }
        app.get("/v1/threads?limit=0", "alice").await.expect_error(400);
        app.get("/v1/threads?after=msg_0193f1a2b3c4d5e6f708192a3b4c5d6e", "alice").await.expect_error(400);
    }

    /// `after` and `before` together select the objects strictly between
    /// them, paged from the `after` side (API.md "Lists"; what the official
    /// SDKs send on page 2 of a `before` list); crossed cursors give an
    /// empty page; each cursor is validated.
    async fn after_and_before_together_page_through_the_window_between_them(app) {
        let (id, c) = thread_with_messages(&app, "alice", 10).await;
        let path = format!("/v1/threads/{id}/messages");
        let p = app.get(&format!("{path}?order=asc&limit=3&after={}&before={}", c[1], c[8]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[2..5].to_vec());
        assert_eq!(p["has_more"], true);
        let p = app.get(&format!("{path}?order=asc&limit=3&after={}&before={}", c[4], c[8]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[5..8].to_vec());
        assert_eq!(p["has_more"], false);
        let p = app.get(&format!("{path}?order=desc&limit=10&after={}&before={}", c[8], c[1]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[2..8].iter().rev().cloned().collect::<Vec<_>>());
        let p = app.get(&format!("{path}?order=asc&after={}&before={}", c[6], c[2]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), Vec::<String>::new(), "crossed cursors");
        app.get(&format!("{path}?after={}&before=msg_0193f1a2b3c4d5e6f708192a3b4c5d6e", c[1]), "alice")
            .await
            .expect_error(400);
    }

    /// A cursor naming an unknown object, or a message of another thread → 400.
    async fn foreign_or_unknown_cursors_are_refused(app) {
        let (a, _) = thread_with_messages(&app, "alice", 2).await;
        let (_, other) = thread_with_messages(&app, "alice", 1).await;
        app.get(&format!("/v1/threads/{a}/messages?after={}", other[0]), "alice").await.expect_error(400);
        app.get(&format!("/v1/threads/{a}/messages?before={}", other[0]), "alice").await.expect_error(400);
        app.get(&format!("/v1/threads/{a}/messages?after=msg_00000000000000000000000000000000"), "alice").await.expect_error(400);
        app.get("/v1/threads?after=thread_00000000000000000000000000000000", "alice").await.expect_error(400);
    }

    /// A cursor naming a deleted object of the same list stays valid.
    async fn a_deleted_cursor_keeps_its_position(app) {
        let (id, c) = thread_with_messages(&app, "alice", 5).await;
        app.delete(&format!("/v1/threads/{id}/messages/{}", c[2]), "alice").await.expect(200);
        let p = app.get(&format!("/v1/threads/{id}/messages?order=asc&after={}", c[2]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[3..].to_vec());
        let p = app.get(&format!("/v1/threads/{id}/messages?order=asc&before={}", c[2]), "alice").await.expect(200);
        assert_eq!(page_ids(&p), c[..2].to_vec());
        // Threads too.
        let t1 = app.create_thread("alice", json!({})).await["id"].as_str().unwrap().to_owned();
        let t2 = app.create_thread("alice", json!({})).await["id"].as_str().unwrap().to_owned();
        app.delete(&format!("/v1/threads/{t1}"), "alice").await.expect(200);
        let p = app.get(&format!("/v1/threads?order=asc&after={t1}"), "alice").await.expect(200);
        assert_eq!(page_ids(&p), vec![t2]);
    }

    /// Paging stays exact while another client creates messages concurrently.
    async fn paging_while_others_create_yields_each_old_object_once(app) {
        let (id, created) = thread_with_messages(&app, "alice", 30).await;
        let writer = {
            let (client, base, token) = (app.client.clone(), app.next_base().to_owned(), app.token("alice"));
            let id = id.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let _ = client
                        .post(format!("{base}/v1/threads/{id}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"role": "user", "content": format!("new{i}")}))
                        .send()
                        .await;
                }
            })
        };
        let seen = ids(&app.list_all(&format!("/v1/threads/{id}/messages"), "alice", "asc", 7).await);
        writer.await.unwrap();
        assert_eq!(seen.len(), seen.iter().collect::<HashSet<_>>().len(), "no duplicates");
        assert_eq!(&seen[..30], &created[..], "every old object, in order");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen);
    }
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}
