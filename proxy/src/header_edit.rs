//! The proxy's header edits, made on the plain `http::HeaderMap`.
//!
//! Pingora's `insert_header` parses and copies the name it is given and
//! keeps a second map with each name's spelling as received; together
//! these were a sixth of a forwarded request's instructions. The request
//! and response headers the proxy edits are taken out of Pingora's wrapper
//! once, edited with names built at compile time, and put back without the
//! spelling map. Header names are case-insensitive (RFC 9110 §5.1): on
//! HTTP/1.1 they go out in Pingora's canonical spelling (`Content-Type`,
//! else lower case); HTTP/2 sends lower case anyway.
//!
//! What the wrapper holds besides the headers is put back as it was: the
//! request target as sent (non-UTF-8 bytes), HTTP/2's end-of-stream flag
//! and a response's own reason phrase.

use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// Edit `req`'s headers in place. The request is whole again afterwards,
/// also when `edit` fails.
pub fn request<R>(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<R>,
) -> Result<R> {
    // The target as sent when it is not the URI's (non-UTF-8 bytes kept
    // verbatim): rare, and copied only then.
    let raw = match req.uri.path_and_query() {
        Some(pq) if pq.as_str().as_bytes() == req.raw_path() => None,
        _ => Some(req.raw_path().to_vec()),
    };
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    let out = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(raw) = raw {
        req.set_raw_path(&raw)?;
    }
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
    out
}

/// Edit `resp`'s headers in place. The response is whole again afterwards,
/// also when `edit` fails.
pub fn response<R>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<R>,
) -> Result<R> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    let out = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if let Some(reason) = reason {
        resp.set_reason_phrase(Some(&reason))?;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use pingora::{Error, ErrorType};

    const EXTRA: HeaderName = HeaderName::from_static("x-extra");

    fn wire_req(r: &RequestHeader) -> String {
        let mut buf = Vec::new();
        r.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn a_request_keeps_its_headers_method_target_and_version() {
        let mut r = RequestHeader::build("POST", b"/a/b?c=d", None).expect("req");
        r.append_header("X-Mixed-Case", "1").expect("h");
        r.append_header("accept", "*/*").expect("h");
        r.set_version(http::Version::HTTP_11);
        request(&mut r, |h| {
            h.insert(EXTRA, HeaderValue::from_static("yes"));
            h.remove("accept");
            Ok(())
        })
        .expect("edit");
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.raw_path(), b"/a/b?c=d");
        assert_eq!(r.version, http::Version::HTTP_11);
        assert!(!r.has_case(), "the spelling map is gone");
        let wire = wire_req(&r);
        assert!(wire.contains("x-mixed-case: 1\r\n"), "{wire}");
        assert!(wire.contains("x-extra: yes\r\n"), "{wire}");
        assert!(!wire.to_ascii_lowercase().contains("accept"), "{wire}");
    }

    #[test]
    fn a_target_that_is_not_utf8_goes_out_as_sent() {
        let raw = b"/caf\xe9?q=\xff";
        let mut r = RequestHeader::build("GET", raw, None).expect("req");
        request(&mut r, |_| Ok(())).expect("edit");
        assert_eq!(r.raw_path(), raw);
    }

    #[test]
    fn http2_end_of_stream_is_kept() {
        for end in [true, false] {
            let mut r = RequestHeader::build("GET", b"/", None).expect("req");
            r.set_version(http::Version::HTTP_2);
            r.set_send_end_stream(end);
            request(&mut r, |_| Ok(())).expect("edit");
            assert_eq!(r.send_end_stream(), Some(end));
        }
    }

    #[test]
    fn a_failed_edit_leaves_the_request_whole() {
        let mut r = RequestHeader::build("PUT", b"/x", None).expect("req");
        r.append_header("x-kept", "1").expect("h");
        let e = request(&mut r, |h| -> Result<()> {
            h.insert(EXTRA, HeaderValue::from_static("partial"));
            Err(Error::explain(ErrorType::InternalError, "no"))
        });
        assert!(e.is_err());
        assert_eq!(r.method, http::Method::PUT);
        assert_eq!(r.raw_path(), b"/x");
        assert!(r.headers.contains_key("x-kept"));
    }

    #[test]
    fn a_response_keeps_status_headers_and_its_own_reason() {
        let mut resp = ResponseHeader::build(299, None).expect("resp");
        resp.set_reason_phrase(Some("Fine Indeed")).expect("reason");
        resp.append_header("Content-Type", "text/plain").expect("h");
        response(&mut resp, |h| {
            h.insert(EXTRA, HeaderValue::from_static("1"));
            Ok(())
        })
        .expect("edit");
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(resp.get_reason_phrase(), Some("Fine Indeed"));
        assert!(!resp.has_case());
        let mut buf = Vec::new();
        resp.header_to_h1_wire(&mut buf);
        let wire = String::from_utf8(buf).expect("utf-8");
        assert!(wire.contains("Content-Type: text/plain\r\n"), "{wire}");
        assert!(wire.contains("x-extra: 1\r\n"), "{wire}");
    }

    #[test]
    fn a_canonical_reason_stays_the_default() {
        let mut resp = ResponseHeader::build(404, None).expect("resp");
        response(&mut resp, |_| Ok(())).expect("edit");
        assert_eq!(resp.get_reason_phrase(), Some("Not Found"));
    }
}
