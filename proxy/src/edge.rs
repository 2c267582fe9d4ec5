//! What the proxy checks about a request before routing it: its size, its
//! HTTP/1 framing, its path (made canonical), who the client is, and the
//! request id. Plain functions over the parsed header, tested without sockets.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use pingora::http::RequestHeader;
use tollgate_core::config::EdgeConfig;
use tollgate_core::keys;
use tollgate_core::net::{self, ClientAddress};
use tollgate_core::path::{self, Canonical};

use crate::answer::{self, Answer};
use crate::request_id::RequestId;

/// Why a request is answered before routing, and whether the connection must
/// be closed after the answer (framing errors: the rest of the stream cannot
/// be trusted).
#[derive(Debug)]
pub struct Refusal {
    pub answer: Answer,
    pub close: bool,
    /// The `reason` label of `tollgate_edge_refused_total`.
    pub reason: &'static str,
}

impl Refusal {
    fn keep(reason: &'static str, answer: Answer) -> Self {
        Self {
            answer,
            close: false,
            reason,
        }
    }
    fn close(reason: &'static str, answer: Answer) -> Self {
        Self {
            answer,
            close: true,
            reason,
        }
    }
}

/// How often a framing header came, and its first value.
#[derive(Debug, Default, PartialEq, Eq)]
struct Lines<'a> {
    count: usize,
    first: Option<&'a [u8]>,
}

impl<'a> Lines<'a> {
    fn add(&mut self, v: &'a [u8]) {
        self.count += 1;
        self.first.get_or_insert(v);
    }

    fn of<'h>(values: impl Iterator<Item = &'h http::HeaderValue>) -> Lines<'h> {
        let mut l = Lines::default();
        values.for_each(|v| l.add(v.as_bytes()));
        l
    }
}

/// The `Content-Length` and `Transfer-Encoding` lines of a raw HTTP/1
/// header block, in one pass (Pingora collapses repeated `Content-Length`s
/// and drops it beside `Transfer-Encoding` before the filters run; the raw
/// bytes still tell).
fn raw_framing(raw: &[u8]) -> (Lines<'_>, Lines<'_>) {
    let (mut cl, mut te) = (Lines::default(), Lines::default());
    // Past the request line; each field line found with one SIMD search.
    let Some(mut start) = memchr::memchr(b'\n', raw).map(|i| i + 1) else {
        return (cl, te);
    };
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |i| start + i);
        let line = &raw[start..end];
        if let Some(v) = field_value(line, b"content-length") {
            cl.add(v);
        } else if let Some(v) = field_value(line, b"transfer-encoding") {
            te.add(v);
        }
        start = end + 1;
    }
    (cl, te)
}

/// The value of a field line named `name` (any case), else `None`. A name
/// holds no `:`, so a line of this name has its first colon right after it.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let n = name.len();
    (line.len() > n && line[n] == b':' && line[..n].eq_ignore_ascii_case(name))
        .then(|| &line[n + 1..])
}

/// Whether the `Transfer-Encoding` lines are exactly one `chunked` (any
/// case, surrounding whitespace): any other coding (`gzip, chunked`,
/// `x, chunked`, `identity`) would be dropped or misread on the way to the
/// upstream (RFC 9112 §6.1).
fn only_chunked(te: &Lines<'_>) -> bool {
    te.count == 1
        && te
            .first
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A method carrying a key becomes [`keys::REDACTED_METHOD`] before anything
/// reads it (black-box round 15: it was forwarded, logged and stored);
/// [`inspect`] then refuses it.
pub fn redact_method(req: &mut RequestHeader) {
    let m = keys::recorded_method(req.method.as_str());
    if m != req.method.as_str() {
        if let Ok(m) = http::Method::from_bytes(m.as_bytes()) {
            req.set_method(m);
        }
    }
}

/// Request line plus header fields, counted as on the wire (`name: value\r\n`).
pub fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// RFC 9112 framing rules a smuggling attack relies on a proxy ignoring:
/// `Content-Length` together with `Transfer-Encoding`, several or
/// list-valued `Content-Length`s, a missing, repeated or malformed `Host` on
/// HTTP/1.1.
pub fn check_framing(req: &RequestHeader, raw: Option<&[u8]>) -> Result<(), Refusal> {
    let (cl, te_values) = match raw {
        Some(raw) => raw_framing(raw),
        None => (
            Lines::of(req.headers.get_all(CONTENT_LENGTH).iter()),
            Lines::of(req.headers.get_all(TRANSFER_ENCODING).iter()),
        ),
    };
    let te = req.headers.contains_key(TRANSFER_ENCODING);
    if te && !only_chunked(&te_values) {
        return Err(Refusal::close(
            "bad-transfer-encoding",
            answer::bad_request(
                "bad-transfer-encoding",
                "Transfer-Encoding must be exactly \"chunked\" (no other coding, once)",
            ),
        ));
    }
    if te && cl.count > 0 {
        return Err(Refusal::close(
            "content-length-and-transfer-encoding",
            answer::bad_request(
                "content-length-and-transfer-encoding",
                "a request may not carry both Content-Length and Transfer-Encoding",
            ),
        ));
    }
    if cl.count > 1
        || cl.first.is_some_and(|v| {
            let v = v.trim_ascii();
            v.is_empty() || !v.iter().all(|b| b.is_ascii_digit())
        })
    {
        return Err(Refusal::close(
            "bad-content-length",
            answer::bad_request(
                "bad-content-length",
                "Content-Length must be given once, as one number",
            ),
        ));
    }
    if req.version == Version::HTTP_11 || req.version == Version::HTTP_10 {
        let hosts = req.headers.get_all(HOST).iter().count();
        if hosts > 1 {
            return Err(Refusal::close(
                "duplicate-host",
                answer::bad_request("duplicate-host", "a request may carry one Host header only"),
            ));
        }
        // RFC 9112 §3.2: every HTTP/1.1 request carries Host, absolute-form too.
        if hosts == 0 && req.version == Version::HTTP_11 {
            return Err(Refusal::close(
                "missing-host",
                answer::bad_request(
                    "missing-host",
                    "an HTTP/1.1 request must carry a Host header",
                ),
            ));
        }
        let bad_value = req
            .headers
            .get(HOST)
            .is_some_and(|h| h.to_str().map_or(true, |h| !net::is_host(h)));
        if bad_value {
            return Err(Refusal::close(
                "bad-host",
                answer::bad_request("bad-host", "the Host header must be one host[:port]"),
            ));
        }
    }
    Ok(())
}

/// `Connection` options that would take a header the proxy frames or sets
/// from the forwarded request ([`tollgate_core::headers::connection_problem`]):
/// 400, closed, before the key and limits are looked at.
fn check_connection(req: &RequestHeader) -> Result<(), Refusal> {
    let values = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .map(HeaderValue::as_bytes);
    match tollgate_core::headers::connection_problem(values) {
        None => Ok(()),
        Some(detail) => Err(Refusal::close(
            "bad-connection",
            answer::bad_request("bad-connection", &detail),
        )),
    }
}

/// Everything the edge learned about one request.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub canonical: Canonical,
    pub client: ClientAddress,
    /// The host the client asked for (absolute-form authority, else
    /// `Host`), lower case: the `X-Forwarded-Host` value. A `Host` already
    /// in lower case is the client's own value, shared (no copy).
    pub host: Option<HeaderValue>,
}

/// The request line and header fields within `max` bytes
/// (`proxy.max_header_bytes`), else 431 and the connection is closed: the
/// proxy's rule, and its side listeners'.
pub fn check_size(req: &RequestHeader, raw: Option<&[u8]>, max: usize) -> Result<(), Refusal> {
    let size = raw.map_or_else(|| header_bytes(req), <[u8]>::len);
    if size > max {
        return Err(too_large(max));
    }
    // HTTP/1 is held to the same count by its parser (`unreadable_header`);
    // an HTTP/2 stream's header is decoded whole, so it is counted here
    // (black-box round 13: 1500 fields reached the upstream). The stream
    // was read completely: the connection is kept.
    if req.version == Version::HTTP_2 && req.headers.len() > MAX_HEADER_FIELDS {
        return Err(Refusal::keep(
            "too-many-header-fields",
            answer::too_many_header_fields(MAX_HEADER_FIELDS),
        ));
    }
    Ok(())
}

/// A header over `proxy.max_header_bytes` (`max`): 431, closed.
pub fn too_large(max: usize) -> Refusal {
    Refusal::close("header-too-large", answer::header_too_large(max))
}

/// A header with more than [`MAX_HEADER_FIELDS`] field lines: 431, closed.
pub fn too_many_fields() -> Refusal {
    Refusal::close(
        "too-many-header-fields",
        answer::too_many_header_fields(MAX_HEADER_FIELDS),
    )
}

/// A request header the HTTP/1 parser gave up on (`e`, from Pingora's
/// `read_request`): more field lines than it holds ([`MAX_HEADER_FIELDS`])
/// or more bytes than it reads is 431, other malformed text 400; both close
/// the connection. `None`: the connection failed (nothing to answer).
pub fn unreadable_header(e: &pingora::Error, max_header_bytes: usize) -> Option<Refusal> {
    if e.etype != pingora::ErrorType::InvalidHTTPHeader {
        return None;
    }
    let cause = e.root_cause().to_string();
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
    Some(if cause == "too many headers" {
        too_many_fields()
    } else if context.starts_with("Request header larger than") {
        too_large(max_header_bytes)
    } else {
        Refusal::close(
            "bad-header",
            answer::bad_request("bad-header", "the request header is not valid HTTP/1"),
        )
    })
}

/// The most header field lines Pingora's HTTP/1 parser takes in one request.
pub const MAX_HEADER_FIELDS: usize = 256;

/// The most bytes of an unfinished request header Pingora's HTTP/1 parser
/// buffers before it gives up (`MAX_HEADER_SIZE`; above every
/// `proxy.max_header_bytes` but the largest, 1 MiB).
pub const PARSER_MAX_HEADER_BYTES: usize = 1_048_575;

/// Size, framing and path checks, and the client address; `peer` is the TCP
/// peer or the PROXY-protocol source.
/// `raw` is the HTTP/1 header block as received (`None` for HTTP/2).
pub fn inspect(
    req: &RequestHeader,
    raw: Option<&[u8]>,
    peer: Option<std::net::IpAddr>,
    cfg: &EdgeConfig,
) -> Result<Inbound, Refusal> {
    check_size(req, raw, cfg.max_header_bytes)?;
    if req.method.as_str() == keys::REDACTED_METHOD {
        return Err(Refusal::close(
            "bad-method",
            answer::bad_request("bad-method", "a method may not carry an API key"),
        ));
    }
    if miscased_method(req.method.as_str()) {
        return Err(Refusal::keep(
            "bad-method",
            answer::bad_request(
                "bad-method",
                "methods are case-sensitive: send the standard method in upper case",
            ),
        ));
    }
    let canonical = path::canonicalize(req.raw_path(), cfg.path_policy).map_err(|e| {
        // A control byte (raw, it breaks the request line itself: RFC 9112
        // §3) closes the connection: what follows it is not trusted to be a
        // request.
        if e == path::PathError::ControlByte {
            Refusal::close(e.reason(), answer::bad_path(e))
        } else {
            Refusal::keep(e.reason(), answer::bad_path(e))
        }
    })?;
    check_framing(req, raw)?;
    check_connection(req)?;
    let peer = peer.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let client = net::resolve_with(peer, &cfg.trusted_proxies, || {
        req.headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    });
    let host = match &canonical.authority {
        Some(a) => HeaderValue::from_str(a).ok(),
        // HTTP/2 names the host in `:authority` (the URI's authority), and
        // a `Host` field only if the client adds one (black-box round 13:
        // h2 requests reached the upstream without `X-Forwarded-Host`).
        None if req.version == Version::HTTP_2 => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .as_ref()
            .and_then(lower_host)
            .or_else(|| req.headers.get(HOST).and_then(lower_host)),
        None => req.headers.get(HOST).and_then(lower_host),
    };
    // A key as the host would reach the upstream lower-cased (Host,
    // `X-Forwarded-Host`), where its checksum no longer tells it.
    if host
        .as_ref()
        .is_some_and(|h| keys::key_shaped(h.as_bytes()))
    {
        return Err(Refusal::close(
            "bad-host",
            answer::bad_request("bad-host", "a host may not carry an API key"),
        ));
    }
    Ok(Inbound {
        canonical,
        client,
        host,
    })
}

/// A `Host` value that is a host, in lower case.
fn lower_host(v: &HeaderValue) -> Option<HeaderValue> {
    let h = v.to_str().ok().filter(|h| net::is_host(h))?;
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        HeaderValue::from_str(&h.to_ascii_lowercase()).ok()
    } else {
        Some(v.clone())
    }
}

/// A standard method spelled in another case (`post`, `Get`). Methods are
/// case-sensitive, so `post` is not `POST` to the router or the scopes, but
/// some upstreams read it as `POST`: refused rather than routed elsewhere.
pub fn miscased_method(method: &str) -> bool {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .iter()
        .any(|s| s.eq_ignore_ascii_case(method) && *s != method)
}

/// A client-sent request id worth keeping: visible ASCII, at most 128 bytes.
pub fn sane_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
        // Round 15 (black-box): an id holding a key would be passed on
        // (`X-Client-Request-Id`), logged and echoed; it is not an id.
        && !tollgate_core::keys::carries_key(v.as_bytes())
}

/// The request id and, when the client's own id is not trusted, that id to
/// pass on as `X-Client-Request-Id`.
pub fn request_id(req: &RequestHeader, peer_trusted: bool) -> (RequestId, Option<String>) {
    let sent = req
        .headers
        .get(crate::forward::names::X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(sane_request_id));
    match sent {
        Some(v) if peer_trusted => (RequestId::kept(v), None),
        other => (
            RequestId::generate(),
            other.and_then(|v| v.to_str().ok()).map(str::to_string),
        ),
    }
}

#[cfg(test)]
mod tests;
