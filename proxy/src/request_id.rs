//! Request ids: 32 lower-case hex digits, as the UUID v4 (`simple`) ids
//! they replace, at a fraction of the cost (no RNG call and no formatting
//! machinery per request).
//!
//! Each thread draws 128 random bits once: a 64-bit prefix and a 64-bit
//! key. Its n-th id is the prefix followed by `mix(key + n × φ)`, where
//! `mix` is the SplitMix64 finalizer, a bijection: one thread never repeats
//! an id within 2^64 ids, and two threads share a prefix with probability
//! 2^-64. Ids are unique, not secret: nothing may rely on them being
//! unguessable (nothing does: they only correlate logs).

use std::cell::Cell;

use http::HeaderValue;

const HEX: &[u8; 16] = b"0123456789abcdef";
/// 2^64 / φ, SplitMix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// (prefix, key, counter)
    static STATE: Cell<(u64, u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64, u64) {
    let (prefix, key) = uuid::Uuid::new_v4().as_u64_pair();
    (prefix, key, 0)
}

/// SplitMix64's output function (a bijection of u64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn push_hex(out: &mut [u8], v: u64) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The digits of a new request id.
fn digits() -> [u8; 32] {
    let (prefix, key, n) = STATE.with(|s| {
        let (p, k, n) = s.get();
        s.set((p, k, n.wrapping_add(1)));
        (p, k, n)
    });
    let mut buf = [0u8; 32];
    push_hex(&mut buf[..16], prefix);
    push_hex(&mut buf[16..], mix(key.wrapping_add(n.wrapping_mul(GAMMA))));
    buf
}

/// A request's id, made once: the same bytes are its text (logs, usage,
/// spans) and its `X-Request-Id` value, to the upstream and in the answer
/// (a shared buffer: no copy or check per use).
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl Default for RequestId {
    /// No id yet (a request answered before it had one).
    fn default() -> Self {
        Self(HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// A new id.
    pub fn generate() -> Self {
        match HeaderValue::from_bytes(&digits()) {
            Ok(v) => Self(v),
            // Hex digits are always a header value.
            Err(_) => Self::default(),
        }
    }

    /// A client's id, kept as sent (`None` if it is no header value).
    pub fn kept(v: &HeaderValue) -> Self {
        Self(v.clone())
    }

    pub fn as_str(&self) -> &str {
        // Kept ids were checked to be text (`edge::sane_request_id`).
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header value (shares the bytes).
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn new() -> String {
        RequestId::generate().as_str().to_string()
    }

    #[test]
    fn a_request_id_is_the_same_text_and_header_value() {
        let id = RequestId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.header().as_bytes(), id.as_str().as_bytes());
        assert_ne!(id.as_str(), RequestId::generate().as_str());
        assert!(RequestId::default().is_empty());
        let kept = RequestId::kept(&HeaderValue::from_static("abc-1"));
        assert_eq!(kept.as_str(), "abc-1");
    }

    #[test]
    fn looks_like_the_uuid_ids_it_replaces() {
        let id = new();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }

    #[test]
    fn ids_do_not_repeat_within_and_across_threads() {
        let mut seen: HashSet<String> = (0..100_000).map(|_| new()).collect();
        assert_eq!(seen.len(), 100_000);
        let others: Vec<Vec<String>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| new()).collect::<Vec<_>>()))
            .map(|h| h.join().expect("thread"))
            .collect();
        for id in others.into_iter().flatten() {
            assert!(seen.insert(id), "repeated id");
        }
    }

    #[test]
    fn consecutive_ids_differ_in_many_digits() {
        // Not a counter in disguise: the mixed half changes in most digits.
        let a = new();
        let b = new();
        assert_eq!(a[..16], b[..16], "same thread, same prefix");
        let differ = a[16..]
            .bytes()
            .zip(b[16..].bytes())
            .filter(|(x, y)| x != y)
            .count();
        assert!(differ >= 8, "{a} {b}");
    }

    #[test]
    fn mix_is_a_bijection_on_a_sample() {
        let outs: HashSet<u64> = (0..100_000u64)
            .map(|n| mix(n.wrapping_mul(GAMMA)))
            .collect();
        assert_eq!(outs.len(), 100_000);
    }
}
