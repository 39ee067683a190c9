//! Every request header Weft interprets, read as bytes and refused or
//! replaced by rule — never silently dropped because it is not visible
//! ASCII (issue 9 item 7; API.md "Errors", "Safety guarantees"):
//!
//! | header | rule | otherwise |
//! |---|---|---|
//! | `x-request-id` | exactly one, 1–128 of `A–Z a–z 0–9 - _ . :` | a generated id replaces it |
//! | `Idempotency-Key` | at most one, 1–255 bytes `!`..=`~` | `400`, nothing runs |
//! | `Content-Type` | at most one, visible ASCII, JSON (absent = JSON) | `415` |
//! | `Content-Encoding` | at most one coding: `identity`, `gzip`, `x-gzip` (any case) | `415` |
//! | `Content-Length` | at most one, decimal digits | (hyper refuses a bad one first) |
//! | `Authorization` | `Bearer <visible ASCII>` (poem's typed header, `auth.rs`) | `401` |
//!
//! Functions here look at headers only; none reads the body.

use poem::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use poem::http::{HeaderMap, HeaderName};
use poem::Request;
use poem_openapi::registry::{MetaParamIn, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use weft_domain::{IdempotencyKey, RequestId};

use crate::error::ApiError;

/// The request-id header, on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a `Content-Type` value names JSON (`application/json` or any
/// `application/*+json`), parameters ignored.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// How a request body is encoded on the wire (API.md, the 415 row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No `Content-Encoding`, or `identity`.
    Identity,
    /// `gzip` or `x-gzip`: decoded, the size limit counted after decoding.
    Gzip,
}

/// Whether every byte is visible ASCII or a space/tab (RFC 9110 field-value
/// characters without obs-text): the only header values Weft interprets.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The one value of `name`, as text; `Ok(None)` when absent.
///
/// # Errors
/// `Err(())` when the header is repeated or holds a byte that is not
/// visible ASCII (the caller decides what that means).
fn single_ascii(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() || !is_plain_ascii(first.as_bytes()) {
        return Err(());
    }
    // invariant: checked above to be ASCII, hence UTF-8.
    Ok(Some(String::from_utf8_lossy(first.as_bytes()).into_owned()))
}

/// The request id of API.md "Errors": the client's own if it sent exactly
/// one sane `x-request-id`, else a freshly generated one.
pub fn request_id(headers: &HeaderMap) -> RequestId {
    single_ascii(headers, &REQUEST_ID)
        .ok()
        .flatten()
        .and_then(|v| RequestId::parse(&v).ok())
        .unwrap_or_else(|| RequestId::from_uuid(uuid::Uuid::now_v7()))
}

/// Refuses a body whose `Content-Type` is not JSON (a missing one is read
/// as JSON), is repeated, or holds bytes that are not visible ASCII.
///
/// # Errors
/// `415` naming the type when it is printable.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match single_ascii(headers, &CONTENT_TYPE) {
        Ok(None) => Ok(()),
        Ok(Some(ct)) if is_json_content_type(&ct) => Ok(()),
        Ok(Some(ct)) => Err(ApiError::unsupported_media_type(Some(&ct))),
        Err(()) => Err(ApiError::unsupported_media_type(None)),
    }
}

/// The body's coding: exactly one of `identity`, `gzip`, `x-gzip` (any
/// case, surrounding white space ignored), or none.
///
/// # Errors
/// `415` for any other coding, a list (`gzip, identity`), a repeated
/// header, an empty value, or bytes that are not visible ASCII.
pub fn content_coding(headers: &HeaderMap) -> Result<Coding, ApiError> {
    match single_ascii(headers, &CONTENT_ENCODING) {
        Ok(None) => Ok(Coding::Identity),
        Ok(Some(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            _ => Err(ApiError::unsupported_encoding(Some(&v))),
        },
        Err(()) => Err(ApiError::unsupported_encoding(None)),
    }
}

/// The declared `Content-Length`, when there is exactly one valid one
/// (hyper has already refused conflicting or malformed lengths on HTTP/1).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    single_ascii(headers, &CONTENT_LENGTH)
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok())
}

/// The `Idempotency-Key` of a create, read as bytes (API.md "Safety
/// guarantees": 1–255 visible ASCII characters, any other key → `400`).
/// Documented in OpenAPI as an optional header parameter.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<'a> ApiExtractor<'a> for IdempotencyKeyHeader {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;

    type ParamType = String;
    type ParamRawType = String;

    fn register(_registry: &mut Registry) {}

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(255),
            pattern: Some("^[!-~]+$".to_owned()),
            ..MetaSchema::new("string")
        })))
    }

    fn param_raw_type(&self) -> Option<&String> {
        None
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut poem::RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let invalid =
            || ApiError::bad_request(weft_domain::idempotency::IdempotencyKeyError.to_string());
        let mut values = req.headers().get_all(param_opts.name).iter();
        let Some(first) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request("Send at most one Idempotency-Key header.").into());
        }
        // A byte outside `!`..=`~` makes the key invalid whatever its encoding.
        let text = std::str::from_utf8(first.as_bytes()).map_err(|_| invalid())?;
        let key = IdempotencyKey::parse(text).map_err(|_| invalid())?;
        Ok(Self(Some(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(""));
    }

    use poem::http::HeaderValue;

    fn map(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append((*k).clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn content_encodings_are_one_known_coding_or_refused() {
        let ce = &CONTENT_ENCODING;
        assert_eq!(content_coding(&map(&[])).unwrap(), Coding::Identity);
        for ok in [&b"identity"[..], b"IDENTITY", b" identity "] {
            assert_eq!(content_coding(&map(&[(ce, ok)])).unwrap(), Coding::Identity);
        }
        for ok in [&b"gzip"[..], b"GZip", b"x-gzip", b"X-GZIP"] {
            assert_eq!(content_coding(&map(&[(ce, ok)])).unwrap(), Coding::Gzip);
        }
        for bad in [
            &b"br"[..],
            b"deflate",
            b"gzip, identity",
            b"gzip,gzip",
            b"",
            b"gzip\xe9",
            b"compress",
        ] {
            let e = content_coding(&map(&[(ce, bad)])).unwrap_err();
            assert_eq!(e.status().as_u16(), 415, "{bad:?}");
        }
        assert_eq!(
            content_coding(&map(&[(ce, b"gzip"), (ce, b"gzip")]))
                .unwrap_err()
                .status()
                .as_u16(),
            415
        );
    }

    #[test]
    fn content_types_with_odd_bytes_or_repeats_are_refused() {
        let ct = &CONTENT_TYPE;
        assert!(check_content_type(&map(&[])).is_ok());
        assert!(check_content_type(&map(&[(ct, b"application/json; charset=utf-8")])).is_ok());
        for bad in [
            &b"application/json\xe9"[..],
            b"text/plain",
            b"application/j\xc3\xa9son",
        ] {
            assert_eq!(
                check_content_type(&map(&[(ct, bad)]))
                    .unwrap_err()
                    .status()
                    .as_u16(),
                415
            );
        }
        let twice = map(&[(ct, b"application/json"), (ct, b"application/json")]);
        assert_eq!(
            check_content_type(&twice).unwrap_err().status().as_u16(),
            415
        );
    }

    #[test]
    fn a_request_id_is_kept_only_when_single_and_sane() {
        let rid = &REQUEST_ID;
        assert_eq!(request_id(&map(&[(rid, b"abc-1")])).as_str(), "abc-1");
        for bad in [&b"r\xe9q"[..], b"has space", b""] {
            let got = request_id(&map(&[(rid, bad)]));
            assert!(got.as_str().starts_with("req_"), "{bad:?} → {got}");
        }
        let twice = request_id(&map(&[(rid, b"a"), (rid, b"b")]));
        assert!(twice.as_str().starts_with("req_"));
    }
}
