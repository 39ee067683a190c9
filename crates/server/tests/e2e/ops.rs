//! API.md "Operations": health, readiness, metrics, OpenAPI, docs, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::every_topology;
use crate::helpers::{spawn_app, Db, TestApp};

/// The server's bare address (what a browser opens first) answers and
/// points to the documentation, instead of a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_points_to_the_docs() {
    let app = spawn_app(Db::Sqlite).await;
    let root = app
        .send(app.client.get(format!("{}/", app.base)))
        .await
        .expect(200);
    assert_eq!(root["docs"], "/docs");
    assert_eq!(root["openapi"], "/openapi.json");
    assert!(
        root["message"].as_str().unwrap().contains("/docs"),
        "{root}"
    );
    let text = app
        .send(app.client.get(format!("{}/metrics", app.base)))
        .await
        .text;
    assert!(
        text.contains(r#"weft_http_requests_total{method="GET",route="/",status="200"} 1"#),
        "{text}"
    );
}

/// The Swagger "Authorize" dialog shows the bearer scheme's description: it
/// tells a user how to get a token and holds no note meant for developers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorize_dialog_says_how_to_get_a_token() {
    let app = spawn_app(Db::Sqlite).await;
    let doc = app
        .send(app.client.get(format!("{}/openapi.json", app.base)))
        .await
        .expect(200);
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in schemes.values() {
        let text = scheme["description"].as_str().unwrap_or_default();
        assert!(text.contains("weft token --user"), "{text}");
        for internal in ["extractor", "check_bearer", "poem", "handler"] {
            assert!(!text.contains(internal), "{internal:?} in {text}");
        }
    }
}

every_topology! {
    /// healthz and readyz answer 200 once migrations are applied.
    async fn health_and_readiness_answer_ok(app) {
        for base in &app.bases {
            let r = app.send(app.client.get(format!("{base}/healthz"))).await;
            r.expect(200);
            let r = app.send(app.client.get(format!("{base}/readyz"))).await;
            r.expect(200);
        }
    }

    /// /metrics names requests by route template and status, latency, pool, transactions and cancellations.
    async fn metrics_cover_http_pool_and_transactions(app) {
        let t = app.create_thread("alice", json!({})).await;
        app.get(&format!("/v1/threads/{}", t["id"].as_str().unwrap()), "alice").await.expect(200);
        app.get("/v1/threads/thread_00000000000000000000000000000000", "alice").await.expect_error(404);
        // Summed over the instances: requests alternate between them.
        let text = app.metrics_text().await;
        for needle in [
            r#"weft_http_requests_total{method="POST",route="/v1/threads",status="200"} 1"#,
            r#"weft_http_requests_total{method="GET",route="/v1/threads/{thread_id}",status="200"} 1"#,
            r#"weft_http_requests_total{method="GET",route="/v1/threads/{thread_id}",status="404"} 1"#,
            "weft_http_request_duration_seconds_bucket",
            "weft_db_pool_connections",
            "weft_db_pool_idle_connections",
            "weft_db_pool_waiting",
            r#"weft_transactions_total{mode="read_write",outcome="committed"}"#,
            r#"weft_transactions_total{mode="read_only","#,
            "weft_http_requests_cancelled_total",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!text.contains("thread_0"), "no ids in labels");
    }

    /// /openapi.json documents every /v1 operation and the bearer scheme.
    async fn the_openapi_document_lists_every_operation(app) {
        let doc = app.send(app.client.get(format!("{}/openapi.json", app.base))).await.expect(200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/v1/threads", vec!["get", "post"]),
            ("/v1/threads/{thread_id}", vec!["get", "post", "delete"]),
            ("/v1/threads/{thread_id}/auto_rename", vec!["post"]),
            ("/v1/threads/{thread_id}/messages", vec!["get", "post"]),
            ("/v1/threads/{thread_id}/messages/{message_id}", vec!["get", "post", "delete"]),
        ] {
            let p = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
            for m in methods {
                assert!(p.get(m).is_some(), "{m} {path} missing");
            }
        }
        assert!(doc["components"]["securitySchemes"].as_object().is_some_and(|s| !s.is_empty()));
        // Image parts, in and out, as discriminated unions (issue 9 item 3).
        let schemas = &doc["components"]["schemas"];
        let content_in = &schemas["CreateMessageBody"]["properties"]["content"]["oneOf"];
        assert_eq!(content_in[0]["type"], "string", "{content_in}");
        assert_eq!(content_in[1]["items"]["$ref"], "#/components/schemas/ContentPartInputDoc");
        for (union, kinds) in [("ContentPartInputDoc", ["text", "image_url", "image_file"]), ("ContentPartObject", ["text", "image_url", "image_file"])] {
            let mapping = &schemas[union]["discriminator"]["mapping"];
            for kind in kinds {
                assert!(mapping.get(kind).is_some(), "{union} lacks {kind}: {}", schemas[union]);
            }
        }
        assert_eq!(schemas["ImageUrlInput"]["properties"]["url"]["maxLength"], 8192);
        assert_eq!(schemas["ImageFileInput"]["properties"]["file_id"]["maxLength"], 128);
        // The body and retry rules (issue 9 items 4–7): 408/413/415, the hints, the key.
        let create = &doc["paths"]["/v1/threads/{thread_id}/messages"]["post"];
        for status in ["400", "401", "408", "409", "413", "415", "503"] {
            assert!(create["responses"].get(status).is_some(), "{status} undocumented");
        }
        assert!(create["responses"]["409"]["headers"].get("x-should-retry").is_some());
        assert!(create["responses"]["503"]["headers"].get("Retry-After").is_some());
        assert!(create["responses"]["408"].get("headers").is_none_or(|h| h.get("x-should-retry").is_none()));
        let key = create["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").expect("Idempotency-Key documented");
        assert_eq!(key["in"], "header");
        assert_eq!(key["schema"]["maxLength"], 255);
        let docs = app.send(app.client.get(format!("{}/docs/", app.base))).await;
        assert_eq!(docs.status.as_u16(), 200);
        assert!(docs.text.to_lowercase().contains("swagger"));
    }
}

/// Graceful shutdown lets an in-flight request finish, then stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let mut app = spawn_app(Db::Sqlite).await;
    let t = app.create_thread("alice", json!({})).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let (client, base, token) = (app.client.clone(), app.base.clone(), app.token("alice"));
    let in_flight = tokio::spawn({
        let (client, base, token, id) = (client.clone(), base.clone(), token.clone(), id.clone());
        async move {
            let msgs: Vec<serde_json::Value> = (0..32)
                .map(|i| json!({"role": "user", "content": format!("m{i}")}))
                .collect();
            let _ = id;
            client
                .post(format!("{base}/v1/threads"))
                .bearer_auth(token)
                .json(&json!({"messages": msgs}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.stop().await;
    if let Ok(Ok(r)) = in_flight.await {
        assert_eq!(
            r.status().as_u16(),
            200,
            "an in-flight request that was accepted completes"
        );
    }
    let after = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(after.is_err(), "no longer accepting");
    let _ = (client, token);
}

#[allow(dead_code)]
fn _uses(_: &TestApp) {}

/// When the database goes away, /readyz and the API answer 503 in the
/// envelope, with no driver text, and /healthz stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_without_internals() {
    use sqlx::Connection;
    let app = spawn_app(Db::Postgres).await;
    app.create_thread("alice", json!({})).await;
    let url = app.pg_url.clone().expect("postgres url");
    let (server, name) = url.rsplit_once('/').expect("url with a database");
    let name = name.split('?').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    let _ = admin.close().await;

    let r = app
        .send(app.client.get(format!("{}/readyz", app.base)))
        .await;
    r.expect_error(503);
    for _ in 0..3 {
        let r = app.get("/v1/threads", "alice").await;
        let body = r.expect_error(503);
        let msg = body["error"]["message"].as_str().unwrap().to_lowercase();
        for leak in [
            "sqlx",
            "database \"",
            "select",
            "connection",
            "error returned",
        ] {
            assert!(!msg.contains(leak), "internals leaked: {msg}");
        }
    }
    app.send(app.client.get(format!("{}/healthz", app.base)))
        .await
        .expect(200);
}
