//! Header bytes (issue 9 item 7): every header Weft interprets —
//! `Idempotency-Key`, `x-request-id`, `Authorization`, `Content-Type`,
//! `Content-Encoding` — is read as bytes and refused or replaced by rule,
//! never silently dropped for holding a byte that is not visible ASCII.

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::json;

use crate::both_databases;
use crate::helpers::TestApp;

/// Header lines, in order, as raw bytes.
type Headers = Vec<(&'static str, Vec<u8>)>;

/// What the rule says for a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refused with this status; nothing created.
    Refused(u16),
    /// Served (200, one thread created) with a generated x-request-id.
    ReplacedRequestId,
}

both_databases! {
    /// A table over every interpreted header with Latin-1, UTF-8 and repeated values: each is refused or replaced by its rule, and refusals create nothing.
    async fn every_interpreted_header_is_read_as_bytes_by_rule(app) {
        let token = app.token("alice");
        let bearer = |tail: &[u8]| [format!("Bearer {token}").as_bytes(), tail].concat();
        let cases: Vec<(&str, Headers, Expect)> = vec![
            ("Idempotency-Key, Latin-1 é", vec![("idempotency-key", b"cl\xe9".to_vec())], Expect::Refused(400)),
            ("Idempotency-Key, UTF-8 é", vec![("idempotency-key", "clé".as_bytes().to_vec())], Expect::Refused(400)),
            ("Idempotency-Key, obs-text only", vec![("idempotency-key", b"\xff\xfe".to_vec())], Expect::Refused(400)),
            ("Idempotency-Key, twice", vec![("idempotency-key", b"a".to_vec()), ("idempotency-key", b"b".to_vec())], Expect::Refused(400)),
            ("Idempotency-Key, twice the same", vec![("idempotency-key", b"a".to_vec()), ("idempotency-key", b"a".to_vec())], Expect::Refused(400)),
            ("Authorization, Latin-1 after the token", vec![("authorization", bearer(b"\xe9"))], Expect::Refused(401)),
            ("Authorization, Latin-1 in the scheme", vec![("authorization", [b"B\xe9arer ".as_slice(), token.as_bytes()].concat())], Expect::Refused(401)),
            ("Authorization, UTF-8 token", vec![("authorization", "Bearer tökén".as_bytes().to_vec())], Expect::Refused(401)),
            ("Authorization, twice (a good token first)", vec![("authorization", bearer(b"")), ("authorization", b"Bearer other".to_vec())], Expect::Refused(401)),
            ("Authorization, twice the same good token", vec![("authorization", bearer(b"")), ("authorization", bearer(b""))], Expect::Refused(401)),
            ("Content-Type, Latin-1", vec![("content-type", b"application/json\xe9".to_vec())], Expect::Refused(415)),
            ("Content-Type, UTF-8", vec![("content-type", "application/jsön".as_bytes().to_vec())], Expect::Refused(415)),
            ("Content-Type, twice", vec![("content-type", b"application/json".to_vec()), ("content-type", b"text/plain".to_vec())], Expect::Refused(415)),
            ("Content-Encoding, Latin-1", vec![("content-encoding", b"gzip\xe9".to_vec())], Expect::Refused(415)),
            ("Content-Encoding, Latin-1 identity", vec![("content-encoding", b"identit\xe9".to_vec())], Expect::Refused(415)),
            ("x-request-id, Latin-1", vec![("x-request-id", b"r\xe9q".to_vec())], Expect::ReplacedRequestId),
            ("x-request-id, UTF-8", vec![("x-request-id", "réq".as_bytes().to_vec())], Expect::ReplacedRequestId),
            ("x-request-id, twice", vec![("x-request-id", b"a".to_vec()), ("x-request-id", b"b".to_vec())], Expect::ReplacedRequestId),
        ];
        let mut created = 0;
        for (name, headers, expect) in cases {
            let has_auth = headers.iter().any(|(h, _)| *h == "authorization");
            let has_ct = headers.iter().any(|(h, _)| *h == "content-type");
            let mut rb = app.request(Method::POST, "/v1/threads", if has_auth { None } else { Some("alice") });
            if !has_ct {
                rb = rb.header("content-type", "application/json");
            }
            for (h, v) in &headers {
                rb = rb.header(*h, HeaderValue::from_bytes(v).unwrap());
            }
            let r = app.send(rb.body(json!({"title": name}).to_string())).await;
            match expect {
                Expect::Refused(status) => {
                    assert_eq!(r.status.as_u16(), status, "{name}: {}", r.text);
                    r.expect_error(status);
                }
                Expect::ReplacedRequestId => {
                    r.expect(200);
                    created += 1;
                    let rid = r.headers["x-request-id"].to_str().expect("visible ASCII");
                    assert!(rid.starts_with("req_"), "{name}: {rid}");
                }
            }
            // Retrying a refused request is refused again: nothing was recorded.
            assert_eq!(thread_titles(&app).await.len(), created, "{name}");
        }
    }
}

async fn thread_titles(app: &TestApp) -> Vec<String> {
    app.list_all("/v1/threads", "alice", "asc", 100)
        .await
        .iter()
        .map(|t| t["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}
