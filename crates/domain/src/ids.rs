//! Identifiers: parsed, never trusted.
//!
//! Thread and message ids are a prefix plus the 32 lowercase hex digits of a
//! UUIDv7, so they sort (as strings, as bytes, in every database collation
//! that compares ASCII bytewise) in creation order. The domain never mints
//! one from a clock or a random source: the id-source port does, through
//! [`ThreadId::from_uuid`] and [`MessageId::from_uuid`].

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use crate::text::check_text;

/// An id failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not of the form `<prefix><32 lowercase hex digits>`.
    #[error("'{value}' is not a valid {kind} id")]
    Malformed {
        /// `thread` or `message`.
        kind: &'static str,
        /// The offending input, truncated for the message.
        value: String,
    },
    /// A user id broke its rules.
    #[error("user id must be 1 to 128 characters without NUL")]
    User,
    /// A request id broke its rules.
    #[error("request id must be 1 to 128 characters of A-Z a-z 0-9 - _ . :")]
    Request,
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_prefixed(kind: &'static str, prefix: &str, s: &str) -> Result<String, IdError> {
    let malformed = || IdError::Malformed {
        kind,
        value: truncated(s),
    };
    let hex = s.strip_prefix(prefix).ok_or_else(malformed)?;
    let ok = hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(malformed())
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id received from outside (a path, a cursor, a row).
            ///
            /// # Errors
            /// [`IdError::Malformed`] unless `s` is the prefix followed by
            /// exactly 32 lowercase hex digits.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                parse_prefixed($kind, $prefix, s).map(Self)
            }

            /// Builds the id of a freshly minted UUID. A UUIDv7 makes ids sort
            /// in creation order; the id source guarantees that.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(format!("{}{}", $prefix, uuid.simple()))
            }

            /// The id as the API shows it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The 128-bit value of the id's hex digits: ids compare as
            /// their values do, so an id source can mint one above it.
            pub fn value(&self) -> u128 {
                // invariant: `parse` and `from_uuid` only build a prefix
                // followed by exactly 32 hex digits, which always fit.
                u128::from_str_radix(&self.0[$prefix.len()..], 16).unwrap_or(0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A thread's id: `thread_` and 32 hex digits, sorting in creation order.
    ThreadId,
    "thread_",
    "thread"
);
prefixed_id!(
    /// A message's id: `msg_` and 32 hex digits, sorting in creation order.
    MessageId,
    "msg_",
    "message"
);

/// The owner of threads and messages: the verified token's `sub`, 1–128
/// characters. Only the HTTP layer builds one, from a verified token; it is
/// never read from a request body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    /// Parses a user id.
    ///
    /// # Errors
    /// [`IdError::User`] when empty, longer than 128 characters or holding U+0000.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_text("user id", s, 1, 128).map_err(|_| IdError::User)?;
        Ok(Self(s.to_owned()))
    }

    /// The user id as the token carried it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request's correlation id: 1–128 characters of `A–Z a–z 0–9 - _ . :`,
/// safe to echo in a header and to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Parses a client-supplied request id.
    ///
    /// # Errors
    /// [`IdError::Request`] when the value breaks the character or length rule.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Request)
        }
    }

    /// A request id for a freshly generated UUID (when the client sent none).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(format!("req_{}", uuid.simple()))
    }

    /// The id as sent in `x-request-id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_thread_id_round_trips_through_parse() {
        let id = ThreadId::from_uuid(Uuid::from_u128(0x0193_f1a2_b3c4_d5e6_f708_192a_3b4c_5d6e));
        assert_eq!(id.as_str(), "thread_0193f1a2b3c4d5e6f708192a3b4c5d6e");
        assert_eq!(ThreadId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn ids_of_the_wrong_kind_or_shape_are_refused() {
        for bad in [
            "",
            "thread_",
            "msg_0193f1a2b3c4d5e6f708192a3b4c5d6e",
            "thread_0193F1A2B3C4D5E6F708192A3B4C5D6E",
            "thread_0193f1a2b3c4d5e6f708192a3b4c5d6",
            "thread_0193f1a2b3c4d5e6f708192a3b4c5d6e0",
            "thread_0193f1a2-3c4d5e6f708192a3b4c5d6e",
        ] {
            assert!(ThreadId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(MessageId::parse("thread_0193f1a2b3c4d5e6f708192a3b4c5d6e").is_err());
    }

    #[test]
    fn user_ids_are_one_to_128_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"u".repeat(128)).is_ok());
        assert!(UserId::parse(&"u".repeat(129)).is_err());
        assert!(UserId::parse("a\0b").is_err());
    }

    #[test]
    fn request_ids_allow_only_the_safe_alphabet() {
        assert!(RequestId::parse("abc-DEF_0.9:x").is_ok());
        assert!(RequestId::parse("has space").is_err());
        assert!(RequestId::parse("nl\n").is_err());
        assert!(RequestId::parse(&"r".repeat(129)).is_err());
        assert!(RequestId::parse("").is_err());
    }

    proptest! {
        #[test]
        fn ids_sort_like_the_uuids_they_wrap(a: u128, b: u128) {
            let (ia, ib) = (MessageId::from_uuid(Uuid::from_u128(a)), MessageId::from_uuid(Uuid::from_u128(b)));
            prop_assert_eq!(a.cmp(&b), ia.cmp(&ib));
        }

        #[test]
        fn every_minted_id_parses_back(a: u128) {
            let id = ThreadId::from_uuid(Uuid::from_u128(a));
            prop_assert_eq!(ThreadId::parse(id.as_str()), Ok(id));
        }

        #[test]
        fn arbitrary_strings_never_panic_the_parsers(s in ".*") {
            let _ = ThreadId::parse(&s);
            let _ = MessageId::parse(&s);
            let _ = UserId::parse(&s);
            let _ = RequestId::parse(&s);
        }
    }
}
