//! What the proxy checks about a request before routing it: its size, its
//! HTTP/1 framing, its path (made canonical), who the client is, and the
//! request id. Plain functions over the parsed header, tested without sockets.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use pingora::http::RequestHeader;
use tollgate_core::config::EdgeConfig;
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
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
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
mod tests {
    use super::*;

    #[test]
    fn standard_methods_in_another_case_are_refused() {
        for m in ["post", "Get", "delete", "pAtCh", "head"] {
            assert!(miscased_method(m), "{m}");
        }
        for m in ["GET", "POST", "PURGE", "purge", "MKCOL", "get2"] {
            assert!(!miscased_method(m), "{m}");
        }
    }
    use tollgate_core::path::PathPolicy;

    fn req(method: &str, target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target, None).expect("request");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    fn reason(r: Result<impl std::fmt::Debug, Refusal>) -> (u16, String, bool) {
        let e = r.expect_err("refused");
        let body: serde_json::Value = serde_json::from_slice(&e.answer.body).expect("json");
        (
            e.answer.status,
            body["reason"].as_str().unwrap_or_default().to_string(),
            e.close,
        )
    }

    #[test]
    fn framing() {
        let cfg = EdgeConfig::default();
        let r = req(
            "POST",
            b"/a",
            &[
                ("host", "x"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
        );
        assert_eq!(
            reason(inspect(&r, None, None, &cfg)),
            (400, "content-length-and-transfer-encoding".into(), true)
        );
        for cl in [
            vec!["5", "5"],
            vec!["5, 5"],
            vec!["-1"],
            vec![""],
            vec!["0x5"],
        ] {
            let mut h = vec![("host", "x")];
            h.extend(cl.iter().map(|v| ("content-length", *v)));
            let r = req("POST", b"/a", &h);
            assert_eq!(
                reason(inspect(&r, None, None, &cfg)),
                (400, "bad-content-length".into(), true),
                "{cl:?}"
            );
        }
        let r = req("GET", b"/a", &[]);
        assert_eq!(
            reason(inspect(&r, None, None, &cfg)),
            (400, "missing-host".into(), true)
        );
        let r = req("GET", b"/a", &[("host", "a"), ("host", "b")]);
        assert_eq!(
            reason(inspect(&r, None, None, &cfg)),
            (400, "duplicate-host".into(), true)
        );
        // Absolute form brings its own host (and still needs a Host header).
        let r = req("GET", b"http://api.example/a/%73", &[]);
        assert_eq!(
            inspect(&r, None, None, &cfg).err().map(|r| r.reason),
            Some("missing-host")
        );
        for bad in ["x, evil.com", "x y", "a\"b<script>", ""] {
            let r = req("GET", b"/a", &[("host", bad)]);
            assert_eq!(
                inspect(&r, None, None, &cfg).err().map(|r| r.reason),
                Some("bad-host"),
                "{bad:?}"
            );
        }
        let r = req(
            "GET",
            b"http://api.example/a/%73",
            &[("host", "api.example")],
        );
        let i = inspect(&r, None, None, &cfg).expect("absolute form");
        assert_eq!(i.host, Some(HeaderValue::from_static("api.example")));
        assert_eq!(i.canonical.path, "/a/s");
    }

    #[test]
    fn the_forwarded_host_is_the_host_in_lower_case() {
        let cfg = EdgeConfig::default();
        for (sent, want) in [
            ("API.Example:8080", Some("api.example:8080")),
            ("api.example", Some("api.example")),
        ] {
            let r = req("GET", b"/a", &[("host", sent)]);
            let i = inspect(&r, None, None, &cfg).expect("inbound");
            assert_eq!(
                i.host.as_ref().map(|v| v.to_str().expect("text")),
                want,
                "{sent}"
            );
        }
    }

    #[test]
    fn transfer_encoding_is_chunked_only() {
        let cfg = EdgeConfig::default();
        for te in ["chunked", "Chunked", " CHUNKED\t"] {
            let r = req("POST", b"/a", &[("host", "x"), ("transfer-encoding", te)]);
            assert!(inspect(&r, None, None, &cfg).is_ok(), "{te:?}");
            let raw = format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                inspect(&r, Some(raw.as_bytes()), None, &cfg).is_ok(),
                "{te:?}"
            );
        }
        for te in [
            "gzip, chunked",
            "x, chunked",
            "chunked, chunked",
            "identity",
            "gzip",
            "",
            "chunked;q=1",
        ] {
            let r = req("POST", b"/a", &[("host", "x"), ("transfer-encoding", te)]);
            assert_eq!(
                reason(inspect(&r, None, None, &cfg)),
                (400, "bad-transfer-encoding".into(), true),
                "{te:?}"
            );
            let raw = format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(
                reason(inspect(&r, Some(raw.as_bytes()), None, &cfg)),
                (400, "bad-transfer-encoding".into(), true),
                "{te:?}"
            );
        }
        // Two lines, even both `chunked`, as Pingora may have joined them.
        let r = req(
            "POST",
            b"/a",
            &[("host", "x"), ("transfer-encoding", "chunked")],
        );
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            reason(inspect(&r, Some(raw), None, &cfg)),
            (400, "bad-transfer-encoding".into(), true)
        );
    }

    #[test]
    fn raw_header_block_shows_what_pingora_collapsed() {
        let cfg = EdgeConfig::default();
        let r = req(
            "POST",
            b"/a",
            &[("host", "x"), ("transfer-encoding", "chunked")],
        );
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            reason(inspect(&r, Some(raw), None, &cfg)),
            (400, "content-length-and-transfer-encoding".into(), true)
        );
        let r = req("POST", b"/a", &[("host", "x"), ("content-length", "5")]);
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert_eq!(
            reason(inspect(&r, Some(raw), None, &cfg)),
            (400, "bad-content-length".into(), true)
        );
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n";
        assert_eq!(
            reason(inspect(&r, Some(raw), None, &cfg)),
            (400, "bad-content-length".into(), true)
        );
        let raw =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Content-Length: 1\r\n\r\n";
        assert!(inspect(&r, Some(raw), None, &cfg).is_ok());
    }

    #[test]
    fn http2_header_fields_are_counted_and_its_host_is_the_authority() {
        let cfg = EdgeConfig::default();
        let h2 = |n: usize| {
            let mut r = RequestHeader::build("GET", b"/a", None).expect("request");
            r.set_version(Version::HTTP_2);
            r.set_uri("http://Api.Example:8443/a".parse().expect("uri"));
            for i in 0..n {
                r.append_header(format!("x-h{i}"), "v").expect("header");
            }
            r
        };
        let i = inspect(&h2(MAX_HEADER_FIELDS), None, None, &cfg).expect("at the cap");
        assert_eq!(i.host, Some(HeaderValue::from_static("api.example:8443")));
        assert_eq!(
            reason(inspect(&h2(MAX_HEADER_FIELDS + 1), None, None, &cfg)),
            (431, String::new(), false)
        );
    }

    #[test]
    fn size_and_path() {
        let cfg = EdgeConfig {
            max_header_bytes: 1024,
            ..EdgeConfig::default()
        };
        let big = "a".repeat(1100);
        let r = req("GET", b"/a", &[("host", "x"), ("x-big", &big)]);
        assert_eq!(reason(inspect(&r, None, None, &cfg)).0, 431);
        let r = req("GET", b"/a/../b", &[("host", "x")]);
        assert_eq!(
            reason(inspect(&r, None, None, &cfg)),
            (400, "dot-segment".into(), false)
        );
        let cfg = EdgeConfig {
            path_policy: PathPolicy::Normalize,
            ..cfg
        };
        let i = inspect(&r, None, None, &cfg).expect("normalized");
        assert_eq!(i.canonical.path, "/b");
    }

    #[test]
    fn raw_framing_counts_each_framing_header_in_one_pass() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-LENGTH:4\r\nX-Content-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (cl, te) = raw_framing(raw);
        assert_eq!(
            (cl.count, cl.first.map(<[u8]>::trim_ascii)),
            (2, Some(&b"3"[..]))
        );
        assert_eq!(te.count, 1);
        assert!(only_chunked(&te));
        let (cl, te) = raw_framing(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((cl.count, te.count), (0, 2));
        assert!(!only_chunked(&te));
        // The request line is not a header, whatever it holds.
        let (cl, _) = raw_framing(b"GET /content-length:1 HTTP/1.1\r\n\r\n");
        assert_eq!(cl.count, 0);
    }

    /// The line-by-line reading the SIMD search replaced: the first colon
    /// ends the name.
    fn raw_framing_reference(raw: &[u8]) -> (usize, Option<Vec<u8>>, usize, Option<Vec<u8>>) {
        let (mut cl, mut te) = (Lines::default(), Lines::default());
        for line in raw.split(|&b| b == b'\n').skip(1) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (n, v) = line.split_at(colon);
            if n.eq_ignore_ascii_case(b"content-length") {
                cl.add(&v[1..]);
            } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
                te.add(&v[1..]);
            }
        }
        (
            cl.count,
            cl.first.map(<[u8]>::to_vec),
            te.count,
            te.first.map(<[u8]>::to_vec),
        )
    }

    proptest::proptest! {
        #[test]
        fn raw_framing_reads_as_the_line_by_line_reference(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("(?i)(content-length|transfer-encoding|x-content-length|host)(:| :|::)[ -~]{0,12}").expect("regex"),
                    proptest::string::string_regex("[ -~]{0,30}").expect("regex"),
                ],
                0..8,
            ),
            crlf in proptest::bool::ANY,
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let raw = format!("POST / HTTP/1.1{eol}{}", lines.join(eol));
            let (cl, te) = raw_framing(raw.as_bytes());
            let got = (cl.count, cl.first.map(<[u8]>::to_vec), te.count, te.first.map(<[u8]>::to_vec));
            proptest::prop_assert_eq!(got, raw_framing_reference(raw.as_bytes()));
        }
    }

    #[test]
    fn request_ids() {
        let r = req("GET", b"/", &[("x-request-id", "abc")]);
        let (id, client) = request_id(&r, true);
        assert_eq!((id.as_str(), client), ("abc", None));
        let (id, client) = request_id(&r, false);
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(client.as_deref(), Some("abc"));
        let r = req("GET", b"/", &[("x-request-id", "a b")]);
        assert_eq!(request_id(&r, false).1, None);
    }
}
