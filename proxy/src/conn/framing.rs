//! The request stream of one HTTP/1 connection, followed byte by byte
//! across reads and pipelined requests: each request header is scanned
//! against the parser's limits from its own first byte ([`HeaderScan`]),
//! and the body after it is skipped by its framing (`Content-Length`, or
//! `Transfer-Encoding: chunked` with its chunk sizes and trailers), so a
//! body is never counted as header fields (black-box round 14).
//!
//! The chunked grammar is Pingora's (httparse's chunk-size line, CRLF after
//! each chunk's data, trailer lines ending in CRLF): where a body cannot be
//! followed ([`Body::Unknown`], or bytes Pingora's body reader refuses and
//! closes the connection on), the scan stops for the rest of the connection
//! and Pingora's own limits apply (a bare `400`), never a false `431`.

use super::fields::{Body, HeaderScan, Over};

/// Where the request stream is.
#[derive(Debug, Clone)]
enum State {
    Header(HeaderScan),
    /// Body bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Not followed any more.
    Off,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// The chunk-size line (httparse's `parse_chunk_size`).
    Size {
        size: u64,
        digits: u8,
        in_size: bool,
        in_ext: bool,
        cr: bool,
    },
    /// Data bytes still to come.
    Data(u64),
    /// The CRLF after the data: `\r` seen.
    DataEnd { cr: bool },
    /// After the last chunk: bytes of the closing `\r\n\r\n` matched (2: the
    /// last chunk-size line's own CRLF).
    Trailers(u8),
}

impl Chunk {
    const SIZE: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        in_size: true,
        in_ext: false,
        cr: false,
    };
}

/// The request stream of a connection (see the module).
#[derive(Debug, Clone)]
pub struct RequestScan {
    state: State,
}

impl Default for RequestScan {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestScan {
    /// A connection whose next byte starts a request.
    pub fn new() -> Self {
        Self {
            state: State::Header(HeaderScan::new()),
        }
    }

    /// Part of a request header has been followed and not its end: bytes
    /// of the next request arrived (with an earlier one's, when pipelined).
    pub fn header_begun(&self) -> bool {
        matches!(&self.state, State::Header(h) if h.begun())
    }

    /// Follow `bytes`, the next bytes read. `Err((at, over))`: a request
    /// header went over a parser limit at `bytes[at]`; what comes before
    /// may pass (earlier requests), the rest must not reach the parser.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), (usize, Over)> {
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            let used = match &mut self.state {
                State::Off => return Ok(()),
                State::Header(h) => match h.feed(rest) {
                    Err((at, over)) => return Err((i + at, over)),
                    Ok(None) => rest.len(),
                    Ok(Some((n, body))) => {
                        self.state = match body {
                            Body::Length(0) => State::Header(HeaderScan::new()),
                            Body::Length(n) => State::Length(n),
                            Body::Chunked => State::Chunked(Chunk::SIZE),
                            Body::Unknown => State::Off,
                        };
                        n
                    }
                },
                State::Length(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Header(HeaderScan::new());
                    }
                    n
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Chunked(Chunk::DataEnd { cr: false });
                    }
                    n
                }
                State::Chunked(c) => {
                    self.state = chunk_byte(*c, rest[0]);
                    1
                }
            };
            i += used;
        }
        Ok(())
    }
}

/// The state after byte `b` of a chunked body's framing (not its data).
fn chunk_byte(c: Chunk, b: u8) -> State {
    let next = match c {
        Chunk::Size {
            size,
            digits,
            in_size,
            in_ext,
            cr,
        } => {
            if cr {
                return match (b, size) {
                    (b'\n', 0) => State::Chunked(Chunk::Trailers(2)),
                    (b'\n', size) => State::Chunked(Chunk::Data(size)),
                    _ => State::Off,
                };
            }
            let hex = (b as char).to_digit(16);
            match (b, hex) {
                (_, Some(d)) if in_size => {
                    if digits > 15 {
                        return State::Off;
                    }
                    Chunk::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        in_size,
                        in_ext,
                        cr,
                    }
                }
                (b'\r', _) => Chunk::Size {
                    size,
                    digits,
                    in_size,
                    in_ext,
                    cr: true,
                },
                (b';', _) if !in_ext => Chunk::Size {
                    size,
                    digits,
                    in_size: false,
                    in_ext: true,
                    cr,
                },
                (b' ' | b'\t', _) if !in_ext => Chunk::Size {
                    size,
                    digits,
                    in_size: false,
                    in_ext,
                    cr,
                },
                _ if in_ext => c,
                _ => return State::Off,
            }
        }
        Chunk::DataEnd { cr: false } if b == b'\r' => Chunk::DataEnd { cr: true },
        Chunk::DataEnd { cr: true } if b == b'\n' => Chunk::SIZE,
        Chunk::Trailers(m) if m % 2 == 0 => match b {
            b'\r' => Chunk::Trailers(m + 1),
            b'\n' => return State::Off,
            _ => Chunk::Trailers(0),
        },
        Chunk::Trailers(3) if b == b'\n' => return State::Header(HeaderScan::new()),
        Chunk::Trailers(m) if b == b'\n' => Chunk::Trailers(m + 1),
        _ => return State::Off,
    };
    State::Chunked(next)
}

#[cfg(test)]
mod tests;
