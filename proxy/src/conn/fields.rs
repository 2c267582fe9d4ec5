//! The limits of Pingora's HTTP/1 parser, enforced on the raw bytes before
//! the parser sees them: more than [`MAX_HEADER_FIELDS`] field lines, or a
//! header still unfinished after [`PARSER_MAX_HEADER_BYTES`] bytes. Pingora's
//! proxy answers a header its parser gives up on with a bare `400`; the
//! connection edge ([`super::deadline::HeaderDeadline`]) scans each request
//! header as it is read and, one byte before the parser would give up,
//! answers `431` problem+json itself (black-box round 13).
//!
//! A [`HeaderScan`] reads one request header, up to and including the blank
//! line that ends it, and says how the body that follows is framed
//! ([`Body`]); [`super::framing::RequestScan`] skips that body and scans the
//! next request's header from its own first byte.

use crate::edge::{self, Refusal};

use crate::edge::{MAX_HEADER_FIELDS, PARSER_MAX_HEADER_BYTES};

/// The most bytes of a line kept to read its framing (the request line's
/// method, `Content-Length`, `Transfer-Encoding`, `Upgrade`).
const LINE_CAP: usize = 128;

/// How the body after a request header is framed, as Pingora frames it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` bytes (0: no body, as without either header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Not followed: an upgrade or `CONNECT` (what follows may be a tunnel),
    /// or framing Pingora refuses (it closes the connection).
    Unknown,
}

/// Where the scan of one request header is.
#[derive(Debug, Clone, Default)]
pub struct HeaderScan {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The line being read started with `\r` or `\n` (the blank line).
    line_empty: bool,
    /// The request line is in (empty lines before it are skipped, as the
    /// parser skips them).
    request_line: bool,
    /// Field lines started.
    fields: usize,
    /// Bytes of the header so far.
    bytes: usize,
    /// The first [`LINE_CAP`] bytes of the line being read.
    line: Vec<u8>,
    /// The line is longer than [`LINE_CAP`].
    line_cut: bool,
    /// `Content-Length` lines, and the value of the last one.
    lengths: u8,
    length: Option<u64>,
    /// `Transfer-Encoding` lines.
    codings: u8,
    /// The body's framing cannot be followed.
    unknown: bool,
}

/// Which limit a header went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Fields,
    Bytes,
}

impl Over {
    /// The answer: 431 `header-too-large` (`max_header_bytes` is the
    /// configured limit the answer names for [`Over::Bytes`]).
    pub fn refusal(self, max_header_bytes: usize) -> Refusal {
        match self {
            Over::Fields => edge::too_many_fields(),
            Over::Bytes => edge::too_large(max_header_bytes),
        }
    }
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

impl HeaderScan {
    /// A scan of the header that starts with the next byte read.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Bytes of a request line or a field line have arrived (empty lines
    /// before a request, which the parser skips, do not count).
    pub fn begun(&self) -> bool {
        self.request_line || (!self.at_line_start && !self.line_empty)
    }

    /// Count `bytes`, the next bytes read. `Ok(Some((n, body)))`: the header
    /// ended with the `n`th byte (its blank line included) and `body`
    /// follows. `Err((at, over))` as soon as they start the field line after
    /// the [`MAX_HEADER_FIELDS`]th, or take the header past
    /// [`PARSER_MAX_HEADER_BYTES`]: the parser must not see `bytes[at..]`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<(usize, Body)>, (usize, Over)> {
        let mut i = 0;
        while i < bytes.len() {
            if self.at_line_start {
                self.at_line_start = false;
                self.line.clear();
                self.line_cut = false;
                self.line_empty = matches!(bytes[i], b'\r' | b'\n');
                if self.request_line && !self.line_empty {
                    self.fields += 1;
                    if self.fields > MAX_HEADER_FIELDS {
                        return Err((i, Over::Fields));
                    }
                }
            }
            let (end, line_ends) = match memchr::memchr(b'\n', &bytes[i..]) {
                Some(j) => (i + j + 1, true),
                None => (bytes.len(), false),
            };
            let room = PARSER_MAX_HEADER_BYTES - self.bytes;
            if end - i > room {
                return Err((i + room, Over::Bytes));
            }
            self.bytes += end - i;
            let keep = (LINE_CAP - self.line.len()).min(end - i);
            self.line.extend_from_slice(&bytes[i..i + keep]);
            self.line_cut |= keep < end - i;
            i = end;
            if line_ends {
                self.at_line_start = true;
                if let Some(body) = self.line_done() {
                    return Ok(Some((i, body)));
                }
            }
        }
        Ok(None)
    }

    /// A line (in [`Self::line`]) ended; `Some` when it ended the header.
    fn line_done(&mut self) -> Option<Body> {
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.line_empty {
            if !self.request_line {
                return None;
            }
            // `\r` then anything but `\n` is no blank line: the parser
            // refuses the header.
            self.unknown |= !line.is_empty();
            return Some(self.body());
        }
        if !self.request_line {
            self.request_line = true;
            let method = line.split(|b| *b == b' ').next().unwrap_or_default();
            self.unknown |= method.eq_ignore_ascii_case(b"CONNECT");
            return None;
        }
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        let cut = self.line_cut;
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths = self.lengths.saturating_add(1);
            let digits = !value.is_empty() && value.len() <= 19;
            let length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            self.length = length.filter(|_| digits && !cut && value.iter().all(u8::is_ascii_digit));
            self.unknown |= self.length.is_none();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.codings = self.codings.saturating_add(1);
            self.unknown |= cut || !value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.unknown = true;
        }
        None
    }

    /// The framing of the body after this header (RFC 9112 §6.3 for
    /// requests: no length, no body).
    fn body(&self) -> Body {
        match (self.unknown, self.lengths, self.codings) {
            (false, 0, 0) => Body::Length(0),
            (false, 1, 0) => Body::Length(self.length.unwrap_or_default()),
            (false, 0, 1) => Body::Chunked,
            _ => Body::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: usize) -> String {
        let lines: String = (0..fields).map(|i| format!("x-h{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\n{lines}\r\n")
    }

    type Fed = Result<Option<Body>, Over>;

    /// Fed whole and one byte at a time: the body once the header ended.
    fn scan(bytes: &[u8]) -> [Fed; 2] {
        let whole = HeaderScan::new()
            .feed(bytes)
            .map(|r| r.map(|(_, b)| b))
            .map_err(|(_, o)| o);
        let mut bytewise = HeaderScan::new();
        let mut one = Ok(None);
        for b in bytes {
            one = bytewise
                .feed(&[*b])
                .map(|r| r.map(|(_, b)| b))
                .map_err(|(_, o)| o);
            if !matches!(one, Ok(None)) {
                break;
            }
        }
        [whole, one]
    }

    const NONE: Fed = Ok(Some(Body::Length(0)));

    #[test]
    fn the_field_after_the_256th_is_refused_at_its_first_byte() {
        let max = MAX_HEADER_FIELDS;
        assert_eq!(scan(header(max).as_bytes()), [NONE, NONE]);
        assert_eq!(scan(header(max + 1).as_bytes()), [Err(Over::Fields); 2]);
        let fields = header(max);
        let fields = fields.strip_suffix("\r\n").unwrap_or_default();
        let blank = format!("{fields}\r");
        assert_eq!(scan(blank.as_bytes()), [Ok(None); 2], "256, then the end");
        let next = format!("{fields}x");
        assert_eq!(
            scan(next.as_bytes()),
            [Err(Over::Fields); 2],
            "a 257th starts"
        );
        let at = HeaderScan::new().feed(next.as_bytes());
        assert_eq!(at, Err((next.len() - 1, Over::Fields)), "what passes");
        // Bare LF line ends, and empty lines before the request line (the
        // parser skips them) count alike.
        let lf = format!("\r\n\n{}", header(max)).replace("\r\n", "\n");
        assert_eq!(scan(lf.as_bytes()), [NONE, NONE]);
        let lf = format!("\r\n\n{}", header(max + 1)).replace("\r\n", "\n");
        assert_eq!(scan(lf.as_bytes()), [Err(Over::Fields); 2]);
    }

    #[test]
    fn the_header_ends_with_its_blank_line() {
        let h = header(3);
        let mut s = HeaderScan::new();
        let more = format!("{h}line\n");
        assert_eq!(
            s.feed(more.as_bytes()),
            Ok(Some((h.len(), Body::Length(0))))
        );
    }

    #[test]
    fn the_framing_is_read_from_the_header() {
        let framed = |fields: &str| {
            let h = format!("POST /x HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
            let [whole, one] = scan(h.as_bytes());
            assert_eq!(whole, one, "{fields}");
            whole
        };
        let body = |b| Ok(Some(b));
        assert_eq!(framed("Content-Length: 300\r\n"), body(Body::Length(300)));
        assert_eq!(framed("content-length:\t 7 \r\n"), body(Body::Length(7)));
        assert_eq!(
            framed("Transfer-Encoding: Chunked\r\n"),
            body(Body::Chunked)
        );
        for odd in [
            "Content-Length: 1\r\nContent-Length: 1\r\n",
            "Content-Length: 1, 1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n",
            "Upgrade: websocket\r\n",
        ] {
            assert_eq!(framed(odd), body(Body::Unknown), "{odd}");
        }
        let long = format!("Content-Length: {}1\r\n", " ".repeat(LINE_CAP));
        assert_eq!(framed(&long), body(Body::Unknown));
        let connect = "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan(connect.as_bytes())[0], body(Body::Unknown));
        let bad_blank = "GET / HTTP/1.1\r\nHost: a\r\n\rx\n";
        assert_eq!(scan(bad_blank.as_bytes())[0], body(Body::Unknown));
    }

    #[test]
    fn a_header_past_the_parsers_buffer_is_refused() {
        let mut s = HeaderScan::new();
        let value = "a".repeat(PARSER_MAX_HEADER_BYTES - 64);
        let start = format!("GET / HTTP/1.1\r\nx: {value}");
        assert_eq!(s.feed(start.as_bytes()), Ok(None));
        let fit = PARSER_MAX_HEADER_BYTES - start.len();
        assert_eq!(s.feed(&[b'a'; 64]), Err((fit, Over::Bytes)));
        let mut s = HeaderScan::new();
        let fits = format!("GET / HTTP/1.1\r\nx: {value}\r\n\r\n");
        assert_eq!(
            s.feed(fits.as_bytes()),
            Ok(Some((fits.len(), Body::Length(0))))
        );
        assert_eq!(Over::Fields.refusal(1).answer.status, 431);
        assert_eq!(Over::Bytes.refusal(1).answer.status, 431);
    }
}
