//! API.md "Authentication": HS256 with the server's secret, exp required,
//! sub 1–128 characters; everything else → 401 invalid_api_key.

use std::time::{SystemTime, UNIX_EPOCH};

use base64_shim::b64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::every_topology;
use crate::helpers::TestApp;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Minimal unpadded base64url, to forge an `alg: none` token by hand.
mod base64_shim {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn b64(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

async fn status_with(app: &TestApp, auth: Option<String>) -> (u16, Value) {
    let mut rb = app.request(Method::GET, "/v1/threads", None);
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    let r = app.send(rb).await;
    let status = r.status.as_u16();
    if status == 401 {
        r.expect_error(401);
    }
    (status, r.json())
}

every_topology! {
    /// Every kind of bad token is a 401 with code invalid_api_key.
    async fn bad_tokens_are_refused_with_invalid_api_key(app) {
        let secret = app.secret().to_vec();
        let exp = now() + 3600;
        let none_token = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(json!({"sub": "alice", "exp": exp}).to_string().as_bytes())
        );
        let cases: Vec<(&str, Option<String>)> = vec![
            ("no header", None),
            ("empty header", Some(String::new())),
            ("basic scheme", Some("Basic YWxpY2U6cHc=".into())),
            ("bearer without token", Some("Bearer ".into())),
            ("garbage", Some("Bearer not.a.jwt".into())),
            ("alg none", Some(format!("Bearer {none_token}"))),
            ("other secret", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": "alice", "exp": exp}), &[9u8; 48])))),
            ("HS384", Some(format!("Bearer {}", sign(Algorithm::HS384, &json!({"sub": "alice", "exp": exp}), &secret)))),
            ("HS512", Some(format!("Bearer {}", sign(Algorithm::HS512, &json!({"sub": "alice", "exp": exp}), &secret)))),
            ("expired", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": "alice", "exp": now() - 120}), &secret)))),
            ("no exp", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": "alice"}), &secret)))),
            ("no sub", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"exp": exp}), &secret)))),
            ("empty sub", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": "", "exp": exp}), &secret)))),
            ("sub of 129", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": "u".repeat(129), "exp": exp}), &secret)))),
            ("numeric sub", Some(format!("Bearer {}", sign(Algorithm::HS256, &json!({"sub": 42, "exp": exp}), &secret)))),
        ];
        for (name, auth) in cases {
            let (status, body) = status_with(&app, auth).await;
            assert_eq!(status, 401, "{name}: {body}");
        }
        // The tampered signature of a valid token.
        let mut good = app.token("alice");
        good.pop();
        good.push('A');
        let (status, _) = status_with(&app, Some(format!("Bearer {good}x"))).await;
        assert_eq!(status, 401);
    }

    /// Valid HS256 tokens with a 1- or 128-character sub are accepted, and the sub is the owner.
    async fn valid_tokens_are_accepted(app) {
        let secret = app.secret().to_vec();
        for sub in ["a".to_owned(), "u".repeat(128), "user@example.com".to_owned()] {
            let t = sign(Algorithm::HS256, &json!({"sub": sub, "exp": now() + 60}), &secret);
            let (status, body) = status_with(&app, Some(format!("Bearer {t}"))).await;
            assert_eq!(status, 200, "{sub}: {body}");
        }
        let (status, _) = status_with(&app, Some(format!("Bearer {}", app.token("alice")))).await;
        assert_eq!(status, 200);
    }

    /// Ops endpoints need no token.
    async fn ops_endpoints_need_no_token(app) {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
            let r = app.send(app.client.get(format!("{}{path}", app.base))).await;
            assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.text);
        }
    }
}
