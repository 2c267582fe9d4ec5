use proptest::prelude::*;

use super::*;
use crate::edge::MAX_HEADER_FIELDS;

fn get(fields: usize) -> String {
    let lines: String = (0..fields).map(|i| format!("x-h{i}: v\r\n")).collect();
    format!("GET / HTTP/1.1\r\nHost: t\r\n{lines}\r\n")
}

/// A POST whose body is `lines` CRLF-separated lines (as Content-Length).
fn post(lines: usize) -> String {
    let body = "a: b\r\n".repeat(lines);
    format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The same body as chunks of one line each, an extension and a trailer.
fn chunked(lines: usize) -> String {
    let chunks: String = (0..lines).map(|_| "6;x=y\r\na: b\r\n\r\n").collect();
    format!(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\nx-t: 1\r\n\r\n"
    )
}

/// Feed `bytes` in pieces cut at `cuts`; where a refusal starts (its byte
/// offset in `bytes`).
fn feed_cut(bytes: &[u8], cuts: &[usize]) -> Result<(), (usize, Over)> {
    let mut s = RequestScan::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        s.feed(&bytes[at..end]).map_err(|(i, o)| (at + i, o))?;
        at = end;
    }
    Ok(())
}

#[test]
fn pipelined_bodies_are_skipped_and_each_header_is_counted() {
    let max = MAX_HEADER_FIELDS - 1; // Host is one
    for first in [post(300), chunked(300), get(max)] {
        let fine = format!("{first}{}{first}", get(max));
        assert_eq!(feed_cut(fine.as_bytes(), &[]), Ok(()));
        let over = format!("{first}{}", get(max + 1));
        let at = over.len() - format!("x-h{max}: v\r\n\r\n").len();
        assert_eq!(
            feed_cut(over.as_bytes(), &[]),
            Err((at, Over::Fields)),
            "the follow-up's 257th field"
        );
        // Byte by byte, the same.
        let cuts: Vec<usize> = (0..over.len()).collect();
        assert_eq!(feed_cut(over.as_bytes(), &cuts), Err((at, Over::Fields)));
    }
}

#[test]
fn a_body_in_the_same_read_is_never_counted() {
    let bytes = format!("{}{}", post(5000), get(3));
    assert_eq!(feed_cut(bytes.as_bytes(), &[]), Ok(()));
    // A body larger than the parser's header buffer, in pieces.
    let body = "x\n".repeat(1 << 20);
    let big = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}{}",
        body.len(),
        get(3)
    );
    assert_eq!(feed_cut(big.as_bytes(), &[100, 70_000, 1_500_000]), Ok(()));
}

#[test]
fn framing_that_cannot_be_followed_stops_the_scan() {
    let over = get(MAX_HEADER_FIELDS + 5);
    for first in [
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_string(),
        "CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_string(),
        // Bad chunk sizes, a missing CRLF after data, a bare LF trailer end.
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n".to_string(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n".to_string(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n".to_string(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n".to_string(),
    ] {
        let bytes = format!("{first}{over}");
        assert_eq!(feed_cut(bytes.as_bytes(), &[]), Ok(()), "{first:?}");
    }
}

#[test]
fn chunked_bodies_follow_the_parsers_grammar() {
    let tail = get(MAX_HEADER_FIELDS); // one over: seen only if followed
    let cases = [
        "0\r\n\r\n",
        "0;ext\r\n\r\n",
        "A \t;e=\"1;2\"\r\n0123456789\r\n0\r\n\r\n",
        "ffff\r\n",
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let mut bytes =
            format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes();
        if i == 3 {
            bytes.extend(std::iter::repeat_n(b'\n', 0xffff));
            bytes.extend_from_slice(b"\r\n0\r\nt: 1\r\nu: 2\r\n\r\n");
        }
        bytes.extend_from_slice(tail.as_bytes());
        assert!(
            matches!(feed_cut(&bytes, &[]), Err((_, Over::Fields))),
            "{body:?}"
        );
    }
}

proptest! {
    /// Split across reads at any points, pipelined requests give the same
    /// answer as one read: the follow-up refused at its own 257th field, or
    /// nothing refused.
    #[test]
    fn any_split_gives_the_same_answer(
        cuts in proptest::collection::vec(0usize..100_000, 0..6),
        first in 0usize..3,
        lines in 250usize..300,
        over in any::<bool>(),
    ) {
        let first = match first {
            0 => post(lines),
            1 => chunked(lines),
            _ => get(lines.min(MAX_HEADER_FIELDS - 1)),
        };
        let fields = MAX_HEADER_FIELDS - 1 + usize::from(over);
        let bytes = format!("{first}{}{}", post(lines), get(fields));
        let whole = feed_cut(bytes.as_bytes(), &[]);
        prop_assert_eq!(whole.is_err(), over);
        prop_assert_eq!(feed_cut(bytes.as_bytes(), &cuts), whole);
    }
}

#[test]
fn the_start_of_a_pipelined_header_is_seen() {
    let mut scan = RequestScan::new();
    assert!(!scan.header_begun());
    scan.feed(get(1).as_bytes()).expect("whole request");
    assert!(!scan.header_begun(), "a whole request leaves nothing begun");
    // Empty lines before a request are skipped by the parser: not begun.
    scan.feed(b"\r\n").expect("empty line");
    assert!(!scan.header_begun());
    scan.feed(b"GET / HT").expect("part of a request line");
    assert!(scan.header_begun());
    scan.feed(b"TP/1.1\r\nHost: t\r\n\r\n").expect("its end");
    assert!(!scan.header_begun());
    // A body being skipped is not a header.
    scan.feed(post(3).as_bytes().split_at(60).0)
        .expect("part of a post");
    assert!(!scan.header_begun());
}
