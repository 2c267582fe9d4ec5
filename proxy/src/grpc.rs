//! gRPC: recognising a gRPC request, and the proxy's own answers to it as a
//! gRPC status instead of problem+json.
//!
//! A gRPC client reads the outcome of a call from `grpc-status` and
//! `grpc-message`, not from the HTTP status: a refused call is answered
//! HTTP 200 with `content-type: application/grpc` and the status in the
//! headers of an empty response ("Trailers-Only"). The problem's detail
//! becomes `grpc-message`, percent-encoded as the gRPC spec asks;
//! `Retry-After`, `RateLimit` and `RateLimit-Policy` stay.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::answer::Answer;

/// gRPC status codes the proxy answers with.
pub mod code {
    pub const INTERNAL: u8 = 13;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const UNAUTHENTICATED: u8 = 16;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNAVAILABLE: u8 = 14;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const UNKNOWN: u8 = 2;
}

/// Whether a request's `content-type` is `application/grpc` or
/// `application/grpc+…` / `application/grpc;…`.
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    const GRPC: &[u8] = b"application/grpc";
    ct.len() >= GRPC.len()
        && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The gRPC status for an HTTP status the proxy answers with (the gRPC
/// spec's mapping, but 429 is RESOURCE_EXHAUSTED: the caller's quota, not an
/// unavailable server; a timeout is DEADLINE_EXCEEDED).
pub fn status_for(http: u16) -> u8 {
    match http {
        400 | 431 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 | 405 => code::UNIMPLEMENTED,
        408 | 504 => code::DEADLINE_EXCEEDED,
        413 | 429 => code::RESOURCE_EXHAUSTED,
        502 | 503 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// What `grpc-message` may carry unescaped: printable ASCII but `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encode a `grpc-message` (UTF-8 bytes outside 0x20–0x7E and `%`).
pub fn encode_message(message: &str) -> String {
    utf8_percent_encode(message, GRPC_MESSAGE).to_string()
}

/// Headers of a proxy answer a gRPC client keeps.
const KEPT: [&str; 3] = ["retry-after", "ratelimit", "ratelimit-policy"];

/// `a` as a gRPC Trailers-Only response: HTTP 200, `grpc-status` from the
/// HTTP status, `grpc-message` from the problem's detail (or title).
pub fn answer(a: Answer) -> Answer {
    let message = problem_message(&a.body).unwrap_or_else(|| {
        http::StatusCode::from_u16(a.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("refused")
            .to_string()
    });
    let mut headers: Vec<(&'static str, String)> = vec![
        ("Content-Type", "application/grpc".to_string()),
        ("grpc-status", status_for(a.status).to_string()),
        ("grpc-message", encode_message(&message)),
    ];
    headers.extend(a.headers.into_iter().filter(|(n, _)| {
        KEPT.iter().any(|k| n.eq_ignore_ascii_case(k)) || n.eq_ignore_ascii_case("connection")
    }));
    Answer {
        status: 200,
        headers,
        body: Vec::new(),
        reason: a.reason,
    }
}

/// `detail` (else `title`) of a problem+json body.
fn problem_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let pick = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
    pick("detail").or_else(|| pick("title"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer;

    #[test]
    fn grpc_content_types_are_recognised() {
        for yes in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC+json",
            b"application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(Some(yes)), "{yes:?}");
        }
        for no in [
            &b"application/grpc-web"[..],
            b"application/grpcx",
            b"application/json",
            b"application/grp",
            b"",
            b"\xff\xfe",
        ] {
            assert!(!is_grpc(Some(no)), "{no:?}");
        }
        assert!(!is_grpc(None));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("plain text: ok"), "plain text: ok");
        assert_eq!(encode_message("100% of quota"), "100%25 of quota");
        assert_eq!(encode_message("line\nbreak"), "line%0Abreak");
        assert_eq!(encode_message("café"), "caf%C3%A9");
    }

    #[test]
    fn refusals_become_grpc_status_with_rate_limit_headers_kept() {
        let a = answer(answer::missing_key("x-api-key"));
        assert_eq!(a.status, 200);
        assert_eq!(a.header("grpc-status"), Some("16"));
        assert_eq!(a.header("content-type"), Some("application/grpc"));
        assert!(a.body.is_empty());
        assert_eq!(a.reason, "missing-api-key");
        let msg = a.header("grpc-message").expect("message");
        assert!(msg.contains("x-api-key"), "{msg}");
        assert!(msg.bytes().all(|b| (0x20..=0x7e).contains(&b)));

        assert_eq!(
            answer(answer::forbidden_key("disabled")).header("grpc-status"),
            Some("7")
        );
        let limited =
            answer(answer::concurrency_exceeded(2).with_header("Retry-After", "1".into()));
        assert_eq!(limited.header("grpc-status"), Some("8"));
        assert_eq!(limited.header("retry-after"), Some("1"));
        assert_eq!(
            answer(answer::not_found()).header("grpc-status"),
            Some("12")
        );
        assert_eq!(
            answer(answer::upstream_failed(504)).header("grpc-status"),
            Some("4")
        );
        assert_eq!(
            answer(answer::upstream_failed(502)).header("grpc-status"),
            Some("14")
        );
        assert_eq!(status_for(418), code::UNKNOWN);
    }
}
