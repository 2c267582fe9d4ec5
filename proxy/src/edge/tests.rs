//! Unit tests of [`super`]: the edge checks without sockets.

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
    for (connection, refused) in [("host", true), ("x-forwarded-for", true), ("close", false)] {
        let r = req("GET", b"/a", &[("host", "x"), ("connection", connection)]);
        assert_eq!(
            inspect(&r, None, None, &cfg)
                .err()
                .map(|r| (r.reason, r.close)),
            refused.then_some(("bad-connection", true)),
            "{connection}"
        );
    }
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
    let raw =
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
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
    let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Content-Length: 1\r\n\r\n";
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
