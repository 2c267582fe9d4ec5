//! Holding a WebSocket handshake's client half open until the upstream
//! answers: a workaround for a race in Pingora 0.9.1's HTTP/1 duplex loop
//! (cloudflare/pingora#946, fix proposed in PR #947, unmerged).
//!
//! For an upgrade request without a body, Pingora queues the request's
//! end-of-body task at once; if its upstream half reads the `101` first and
//! takes that end task afterwards, it counts the tunnel as finished
//! ("either side done") and tears it down right after the `101`. Pingora
//! only queues that task when the request header declares no body, so a
//! WebSocket handshake on a `websocket` route is made to declare one that
//! never ends on its own ([`hold_open`], `Transfer-Encoding: chunked`,
//! before Pingora first looks at the body): no end task exists before the
//! `101`, after which Pingora reads the client's bytes as the tunnel's
//! (close-delimited). The upstream still gets a body-less GET
//! ([`release`], `Content-Length: 0`, which Pingora switches to the
//! tunnel on the upgrade). If the upstream refuses the upgrade, its answer
//! is sent whole with `Connection: close` and the client's half is ended
//! right after ([`Hold::Refused`] then [`Hold::Ended`]).

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// Where a held handshake stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Not held: not a WebSocket handshake, or one that declared a body.
    #[default]
    No,
    /// Held open until the upstream answers the handshake.
    Waiting,
    /// The upstream switched protocols: the held half is the tunnel.
    Upgraded,
    /// The upstream refused the upgrade; its answer is on its way.
    Refused,
    /// The refusal was sent whole; the client's half is being ended (the
    /// error that ends it is not a failure of the request).
    Ended,
}

impl Hold {
    /// The state once the upstream's response header `status` is known
    /// (an interim `1xx` other than `101` decides nothing).
    pub fn answered(self, status: StatusCode) -> Self {
        match self {
            Hold::Waiting if status == StatusCode::SWITCHING_PROTOCOLS => Hold::Upgraded,
            Hold::Waiting if status.is_informational() => Hold::Waiting,
            Hold::Waiting => Hold::Refused,
            other => other,
        }
    }
}

/// Make the (downstream) handshake `req` declare a body that never ends on
/// its own; `false` (untouched) when it declares its own framing.
pub fn hold_open(req: &mut RequestHeader) -> Result<bool> {
    if req.headers.contains_key(CONTENT_LENGTH) || req.headers.contains_key(TRANSFER_ENCODING) {
        return Ok(false);
    }
    req.insert_header(TRANSFER_ENCODING, "chunked")?;
    Ok(true)
}

/// The upstream copy of a held handshake: no body.
pub fn release(upstream: &mut RequestHeader) -> Result<()> {
    upstream.remove_header(&TRANSFER_ENCODING);
    // Without it Pingora would frame the (held) body as chunked again.
    upstream.insert_header(CONTENT_LENGTH, "0")?;
    Ok(())
}

/// Whether a refusal's header is the whole answer (no body follows).
pub fn bodiless(resp: &ResponseHeader) -> bool {
    matches!(
        resp.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    ) || resp
        .headers
        .get(CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/ws", None).expect("req");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn only_a_bodiless_handshake_is_held_and_the_upstream_gets_no_body() {
        let mut r = get(&[("Upgrade", "websocket")]);
        assert!(hold_open(&mut r).expect("hold"));
        assert_eq!(
            r.headers.get(TRANSFER_ENCODING).map(|v| v.as_bytes()),
            Some(&b"chunked"[..])
        );
        release(&mut r).expect("release");
        assert!(r.headers.get(TRANSFER_ENCODING).is_none());
        assert_eq!(
            r.headers.get(CONTENT_LENGTH).map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        for framing in [("Content-Length", "3"), ("Transfer-Encoding", "chunked")] {
            let mut r = get(&[framing]);
            assert!(!hold_open(&mut r).expect("hold"));
            assert_eq!(r.headers.len(), 1, "{framing:?} untouched");
        }
    }

    #[test]
    fn a_held_handshake_is_upgraded_or_refused_once() {
        let w = Hold::Waiting;
        assert_eq!(w.answered(StatusCode::SWITCHING_PROTOCOLS), Hold::Upgraded);
        assert_eq!(w.answered(StatusCode::BAD_REQUEST), Hold::Refused);
        assert_eq!(w.answered(StatusCode::OK), Hold::Refused);
        assert_eq!(w.answered(StatusCode::CONTINUE), Hold::Waiting);
        assert_eq!(Hold::No.answered(StatusCode::BAD_REQUEST), Hold::No);
        assert_eq!(
            Hold::Ended.answered(StatusCode::SWITCHING_PROTOCOLS),
            Hold::Ended
        );
    }

    #[test]
    fn only_an_empty_refusal_is_whole_with_its_header() {
        let resp = |status: u16, cl: Option<&str>| {
            let mut r = ResponseHeader::build(status, None).expect("resp");
            if let Some(cl) = cl {
                r.insert_header("Content-Length", cl).expect("cl");
            }
            r
        };
        assert!(bodiless(&resp(400, Some("0"))));
        assert!(bodiless(&resp(204, None)));
        assert!(bodiless(&resp(304, None)));
        assert!(!bodiless(&resp(400, Some("7"))));
        assert!(!bodiless(&resp(400, None)));
    }
}
