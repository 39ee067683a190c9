//! The few responses hyper writes on its own — `400`, `414`, `431` for a
//! request head it cannot parse, before any request reaches Weft — given
//! the OpenAI envelope and an `x-request-id` like every other error
//! (API.md "Errors").
//!
//! hyper 1.x offers no hook for these (`role::Server::on_error` builds a
//! bodiless head), so they are recognised on their way to the socket: a
//! write that starts with an HTTP/1 status line of 400, 414 or 431, whose
//! head says `content-length: 0` and carries no `x-request-id`. Every
//! response of Weft's own carries `x-request-id` (the edge middleware stamps
//! it) and a JSON body, so none of them can match. The recognised head is
//! swallowed and Weft's response written in its place; hyper closes the
//! connection after it, as it would have.
//!
//! What remains: such a response that shares one write with an earlier,
//! pipelined response is passed through as hyper wrote it (status intact,
//! empty body); on HTTP/2, malformed requests are stream or connection
//! errors (RST_STREAM/GOAWAY), which have no body to give.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use poem::http::StatusCode;
use tokio::io::AsyncWrite;
use uuid::Uuid;
use weft_http::error::ApiError;

/// The replacement being written, if any.
#[derive(Debug, Default)]
pub(super) struct Rewriter {
    pending: Vec<u8>,
    written: usize,
}

impl Rewriter {
    /// If `buf` starts with one of hyper's automatic error responses,
    /// queues Weft's instead and returns how many bytes of `buf` it replaces.
    pub(super) fn intercept(&mut self, buf: &[u8]) -> Option<usize> {
        let head_len = automatic_error_head(buf)?;
        let status = status_of(buf)?;
        self.pending = envelope_response(status);
        self.written = 0;
        tracing::debug!(
            status = status.as_u16(),
            "malformed request head; answered with the error envelope"
        );
        Some(head_len)
    }

    /// Writes what is queued; `Ready(Ok)` once nothing is. `progressed` is
    /// called after each write that moved bytes (the connection's activity
    /// clock; passed in so this module needs nothing of `activity`).
    pub(super) fn poll_drain<T: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut T,
        cx: &mut Context<'_>,
        progressed: impl Fn(),
    ) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let rest = self.pending.get(self.written..).unwrap_or_default();
            match Pin::new(&mut *inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    progressed();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

/// The length of the head when `buf` starts with a response head hyper
/// wrote on its own for a request it could not parse.
fn automatic_error_head(buf: &[u8]) -> Option<usize> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let status = status_of(buf)?;
    if !matches!(status.as_u16(), 400 | 414 | 431) {
        return None;
    }
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = buf.get(..head_len)?.to_ascii_lowercase();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"\r\nx-request-id:") || !has(b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    Some(head_len)
}

fn status_of(buf: &[u8]) -> Option<StatusCode> {
    StatusCode::from_bytes(buf.get(9..12)?).ok()
}

/// A complete HTTP/1.1 response: `status`, the envelope, a fresh request id,
/// and `connection: close` (hyper closes after a parse error).
fn envelope_response(status: StatusCode) -> Vec<u8> {
    let message = match status.as_u16() {
        414 => "The request URI is too long.",
        431 => "The request's header section is too large (at most 64 KiB and 100 fields).",
        _ => "The request is not valid HTTP/1.1: its request line or a header could not be parsed.",
    };
    let body = serde_json::to_string(&ApiError::client(status, message).envelope())
        // invariant: the envelope is strings and options; this fallback is never used.
        .unwrap_or_default();
    // The same form as every other generated id (`req_…`, API.md "Errors").
    let request_id = weft_domain::RequestId::from_uuid(Uuid::now_v7());
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\nx-request-id: {request_id}\r\nx-should-retry: false\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bodiless_error_heads_are_recognised() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        assert_eq!(automatic_error_head(hyper_431), Some(hyper_431.len()));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: abc\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error_head(ours), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"error\":{}}";
        assert_eq!(automatic_error_head(with_body), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error_head(ok), None);
        assert_eq!(automatic_error_head(b"\x00\x00\x12\x04"), None);
        assert_eq!(
            automatic_error_head(b"HTTP/1.1 400 Bad Req"),
            None,
            "incomplete head"
        );
    }

    #[test]
    fn the_replacement_is_the_envelope_with_a_request_id() {
        let mut r = Rewriter::default();
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(r.intercept(hyper_414), Some(hyper_414.len()));
        let text = String::from_utf8(r.pending.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nx-request-id: req_"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("URI"));
    }
}
