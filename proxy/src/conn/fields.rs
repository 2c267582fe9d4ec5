//! The limits of Pingora's HTTP/1 parser, enforced on the raw bytes before
//! the parser sees them: more than [`MAX_HEADER_FIELDS`] field lines, or a
//! header still unfinished after [`PARSER_MAX_HEADER_BYTES`] bytes. Pingora's
//! proxy answers a header its parser gives up on with a bare `400`; the
//! connection edge ([`super::deadline::HeaderDeadline`]) scans each request
//! header as it is read and, one byte before the parser would give up,
//! answers `431` problem+json itself (black-box round 13).
//!
//! The scan ends at the blank line that ends the header (the body is never
//! scanned) and starts again with the next request on the connection.

use crate::edge::{self, Refusal};

use crate::edge::{MAX_HEADER_FIELDS, PARSER_MAX_HEADER_BYTES};

/// Where the scan of one request header is.
#[derive(Debug, Clone, Default)]
pub struct HeaderScan {
    /// The header is over (or is not scanned): nothing more to count.
    ended: bool,
    /// The next byte starts a line.
    at_line_start: bool,
    /// The line being read is empty (`\r\n` or `\n`).
    line_empty: bool,
    /// The request line is in (empty lines before it are skipped, as the
    /// parser skips them).
    request_line: bool,
    /// Field lines started.
    fields: usize,
    /// Bytes of the header so far.
    bytes: usize,
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

impl HeaderScan {
    /// A scan of the header that starts with the next byte read.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Count `bytes`, the next bytes read. `Err` as soon as they start the
    /// field line after the [`MAX_HEADER_FIELDS`]th, or take the header past
    /// [`PARSER_MAX_HEADER_BYTES`]; the parser must not see them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Over> {
        let mut i = 0;
        while !self.ended && i < bytes.len() {
            if self.at_line_start {
                self.at_line_start = false;
                self.line_empty = matches!(bytes[i], b'\r' | b'\n');
                if self.request_line {
                    if self.line_empty {
                        self.ended = true;
                        return Ok(());
                    }
                    self.fields += 1;
                    if self.fields > MAX_HEADER_FIELDS {
                        return Err(Over::Fields);
                    }
                }
            }
            let (end, line_ends) = match memchr::memchr(b'\n', &bytes[i..]) {
                Some(j) => (i + j + 1, true),
                None => (bytes.len(), false),
            };
            self.bytes += end - i;
            if self.bytes > PARSER_MAX_HEADER_BYTES {
                return Err(Over::Bytes);
            }
            if line_ends {
                self.at_line_start = true;
                self.request_line |= !self.line_empty;
            }
            i = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: usize) -> String {
        let lines: String = (0..fields).map(|i| format!("x-h{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\n{lines}\r\n")
    }

    /// Fed whole and one byte at a time.
    fn scan(bytes: &[u8]) -> [Result<(), Over>; 2] {
        let mut bytewise = HeaderScan::new();
        let one = bytes.iter().try_for_each(|b| bytewise.feed(&[*b]));
        [HeaderScan::new().feed(bytes), one]
    }

    #[test]
    fn the_field_after_the_256th_is_refused_at_its_first_byte() {
        let max = MAX_HEADER_FIELDS;
        assert_eq!(scan(header(max).as_bytes()), [Ok(()), Ok(())]);
        assert_eq!(scan(header(max + 1).as_bytes()), [Err(Over::Fields); 2]);
        let fields = header(max);
        let fields = fields.strip_suffix("\r\n").unwrap_or_default();
        let blank = format!("{fields}\r");
        assert_eq!(
            scan(blank.as_bytes()),
            [Ok(()), Ok(())],
            "256, then the end"
        );
        let next = format!("{fields}x");
        assert_eq!(
            scan(next.as_bytes()),
            [Err(Over::Fields); 2],
            "a 257th starts"
        );
        // Bare LF line ends, and empty lines before the request line (the
        // parser skips them) count alike.
        let lf = format!("\r\n\n{}", header(max)).replace("\r\n", "\n");
        assert_eq!(scan(lf.as_bytes()), [Ok(()), Ok(())]);
        let lf = format!("\r\n\n{}", header(max + 1)).replace("\r\n", "\n");
        assert_eq!(scan(lf.as_bytes()), [Err(Over::Fields); 2]);
    }

    #[test]
    fn the_body_is_not_counted() {
        let mut s = HeaderScan::new();
        assert_eq!(s.feed(header(3).as_bytes()), Ok(()));
        let body = "line\n".repeat(1000);
        assert_eq!(s.feed(body.as_bytes()), Ok(()), "after the blank line");
        assert_eq!(s.feed(&vec![b'a'; 2 << 20]), Ok(()));
    }

    #[test]
    fn a_header_past_the_parsers_buffer_is_refused() {
        let mut s = HeaderScan::new();
        let value = "a".repeat(PARSER_MAX_HEADER_BYTES - 64);
        assert_eq!(
            s.feed(format!("GET / HTTP/1.1\r\nx: {value}").as_bytes()),
            Ok(())
        );
        assert_eq!(s.feed(&[b'a'; 64]), Err(Over::Bytes));
        let mut s = HeaderScan::new();
        let fits = format!("GET / HTTP/1.1\r\nx: {value}\r\n\r\n");
        assert_eq!(s.feed(fits.as_bytes()), Ok(()));
        assert_eq!(Over::Fields.refusal(1).answer.status, 431);
        assert_eq!(Over::Bytes.refusal(1).answer.status, 431);
    }
}
