//! Idempotency keys, request fingerprints and the responses replayed for them.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// How long a recorded response is replayed, in seconds (24 h).
pub const REPLAY_WINDOW_SECS: i64 = 24 * 60 * 60;

/// How long idempotency records are kept before the server deletes them
/// (`WEFT_IDEMPOTENCY_RETENTION`, API.md "Configuration"). Never shorter
/// than the replay window ([`REPLAY_WINDOW_SECS`]): a record is never
/// deleted while it could still be replayed (API.md "Safety guarantees").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Retention(i64);

/// A retention shorter than the replay window was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "idempotency records must be kept at least 24h: a response is replayed for 24 h \
     (API.md \"Safety guarantees\") and a record must not be deleted while it could \
     still be replayed (got {got_secs} s)"
)]
pub struct RetentionTooShort {
    /// The retention asked for, in seconds.
    pub got_secs: u64,
}

impl Retention {
    /// The default: exactly the replay window, 24 h.
    pub const DEFAULT: Retention = Retention(REPLAY_WINDOW_SECS);

    /// A retention of `secs` seconds.
    ///
    /// # Errors
    /// [`RetentionTooShort`] below [`REPLAY_WINDOW_SECS`].
    pub fn from_secs(secs: u64) -> Result<Self, RetentionTooShort> {
        match i64::try_from(secs) {
            Ok(s) if s >= REPLAY_WINDOW_SECS => Ok(Self(s)),
            Ok(_) => Err(RetentionTooShort { got_secs: secs }),
            // Longer than any clock can count: keep records for as long as that allows.
            Err(_) => Ok(Self(i64::MAX)),
        }
    }

    /// The retention in seconds.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// At `now`, records created strictly before this instant are past
    /// their retention and may be deleted. None of them can still be
    /// replayed: replay needs `created_at >= now - 24 h`, and this is at
    /// or before that.
    pub fn expired_before(self, now: Timestamp) -> Timestamp {
        now.minus_seconds(self.0)
    }
}

/// An idempotency key broke its syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters ('!' to '~')")]
pub struct IdempotencyKeyError;

/// A client's `Idempotency-Key`: 1–255 characters from `!` to `~`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a header value.
    ///
    /// # Errors
    /// [`IdempotencyKeyError`] when empty, longer than 255 or holding any
    /// character outside `!`..=`~`.
    pub fn parse(s: &str) -> Result<Self, IdempotencyKeyError> {
        let ok = (1..=255).contains(&s.len()) && s.bytes().all(|b| (b'!'..=b'~').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdempotencyKeyError)
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests "the same" for idempotency: method, path and the
/// body as a JSON value (key order and white space do not matter), hashed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    /// Fingerprints a request. `body` is `None` for an empty body.
    pub fn new(method: &str, path: &str, body: Option<&Value>) -> Self {
        let mut canon = String::new();
        canon.push_str(method);
        canon.push('\n');
        canon.push_str(path);
        canon.push('\n');
        if let Some(b) = body {
            canonical(b, &mut canon);
        }
        Self(hex::encode(Sha256::digest(canon.as_bytes())))
    }

    /// Rebuilds a fingerprint an adapter stored.
    pub fn from_stored(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes `v` with object keys sorted and numbers in one form (an integral
/// float is written as the integer), independently of serde_json's features.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(k) {
                    canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.push_str(&format!("{}", f as i64));
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

/// The response of a successful create, recorded for replay: the body
/// exactly as first sent. Only successes are recorded (API.md, "Safety
/// guarantees"), so no status is kept: which status a success has is the
/// inbound adapter's business, not the domain's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The body (JSON text).
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn keys_allow_visible_ascii_only() {
        assert!(IdempotencyKey::parse("abc-123_!~").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
        assert!(IdempotencyKey::parse("tab\t").is_err());
    }

    #[test]
    fn key_order_and_white_space_do_not_change_the_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"x": [1, 2], "y": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"y":null,"x":[1,2]},"a":1}"#).unwrap();
        assert_eq!(
            RequestFingerprint::new("POST", "/v1/threads", Some(&a)),
            RequestFingerprint::new("POST", "/v1/threads", Some(&b))
        );
    }

    #[test]
    fn path_body_and_method_all_count() {
        let body = json!({"a": 1});
        let base = RequestFingerprint::new("POST", "/v1/threads", Some(&body));
        assert_ne!(
            base,
            RequestFingerprint::new("POST", "/v1/threads/x/messages", Some(&body))
        );
        assert_ne!(
            base,
            RequestFingerprint::new("POST", "/v1/threads", Some(&json!({"a": 2})))
        );
        assert_ne!(base, RequestFingerprint::new("POST", "/v1/threads", None));
        assert_ne!(
            base,
            RequestFingerprint::new("PUT", "/v1/threads", Some(&body))
        );
    }

    #[test]
    fn a_retention_below_the_replay_window_is_refused() {
        assert_eq!(Retention::from_secs(86_400).unwrap(), Retention::DEFAULT);
        assert_eq!(
            Retention::from_secs(86_399),
            Err(RetentionTooShort { got_secs: 86_399 })
        );
        assert!(Retention::from_secs(90 * 60)
            .unwrap_err()
            .to_string()
            .contains("at least 24h"));
        assert_eq!(Retention::from_secs(u64::MAX).unwrap().secs(), i64::MAX);
    }

    proptest! {
        /// A record past its retention can never be replayed any more: the
        /// replay check (`created_at >= now - window`) and the expiry
        /// (`created_at < expired_before(now)`) never both hold.
        #[test]
        fn no_record_is_expired_while_it_could_be_replayed(
            extra in 0u64..10_000_000,
            now in 0i64..4_000_000_000,
            created_at in 0i64..4_000_000_000,
        ) {
            let retention = Retention::from_secs(86_400 + extra).unwrap();
            let now = Timestamp::from_unix_seconds(now);
            let replayable = created_at >= now.minus_seconds(REPLAY_WINDOW_SECS).unix_seconds();
            let expired = created_at < retention.expired_before(now).unix_seconds();
            prop_assert!(!(replayable && expired));
        }

        #[test]
        fn keys_parse_iff_visible_ascii(s in ".{0,300}") {
            let ok = !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| (33..=126).contains(&b));
            prop_assert_eq!(IdempotencyKey::parse(&s).is_ok(), ok);
        }
    }
}
