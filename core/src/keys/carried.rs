//! Whether a header value carries a Tollgate key in any form an upstream
//! could read it back from: literally (any scheme, list member, cookie,
//! inside a longer token), base64-encoded (standard or URL-safe alphabet,
//! padded or not, at any offset: `Basic` credentials, a cookie holding
//! `base64(key)`), percent-encoded (`tg%5F…`, one level, any escapes), or
//! base64 with percent-encoded characters (`%2B`, `%2F`, `%3D`).
//!
//! This runs on every header of every forwarded request, so each step is a
//! linear scan with a cheap pre-filter, and nothing is allocated unless the
//! pre-filter matches:
//! - literal: a window of [`KEY_LEN`] bytes is only validated when it
//!   starts with `tg_`;
//! - base64: only a run of base64 characters long enough to hold a key
//!   (55) is looked at, and only decoded when it holds one of the three
//!   renderings of `tg_` (one per alignment of the key in the decoded
//!   bytes: `dGdf`, `RnX`, `0Z1`); then it is decoded at each of the four
//!   character offsets and scanned for a key;
//! - percent: only a value holding a `%XX` escape is decoded (once) and
//!   scanned again, literally and for base64.
//!
//! The rule is the literal check's: any syntactically valid key (prefix,
//! length, alphabet, checksum), not only the key presented.

use super::{KEY_LEN, PREFIX};

/// The shortest base64 run that can hold a whole key: 41 bytes are 328
/// bits, 55 characters of 6 bits.
const MIN_B64_RUN: usize = (KEY_LEN * 8).div_ceil(6);

/// `tg_` in base64, as 6-bit values, for the key starting 0, 1 or 2 bytes
/// into a 3-byte group (`dGdf`, `RnX`, `0Z1`): the characters that depend on
/// the prefix alone.
const NEEDLES: [&[u8]; 3] = [&[29, 6, 29, 31], &[17, 39, 23], &[52, 25, 53]];

const NOT_B64: u8 = 0xff;

/// The 6-bit value of a base64 character (both alphabets), else [`NOT_B64`].
const B64: [u8; 256] = {
    let mut t = [NOT_B64; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
};

/// Whether `value` (a header value) carries a valid Tollgate key in any of
/// the forms above. What the proxy must never forward, on any route.
pub fn carries_key(value: &[u8]) -> bool {
    if super::contains_key(value) || base64_carries_key(value) {
        return true;
    }
    match percent_decoded(value) {
        Some(d) => super::contains_key(&d) || base64_carries_key(&d),
        None => false,
    }
}

/// Whether a base64 run in `value` decodes to bytes holding a key.
fn base64_carries_key(value: &[u8]) -> bool {
    value
        .split(|b| B64[usize::from(*b)] == NOT_B64)
        .filter(|run| run.len() >= MIN_B64_RUN)
        .any(|run| {
            let sextets: smallvec::SmallVec<[u8; 128]> =
                run.iter().map(|b| B64[usize::from(*b)]).collect();
            NEEDLES
                .iter()
                .any(|n| sextets.windows(n.len()).any(|w| w == *n))
                && (0..4).any(|offset| super::contains_key(&decode(&sextets[offset..])))
        })
}

/// Base64 6-bit values to bytes; trailing bits that make no byte are dropped.
fn decode(sextets: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &s in sextets {
        acc = (acc << 6) | u32::from(s);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `value` with its `%XX` escapes decoded (others kept as sent), or `None`
/// when it has no escape at all.
fn percent_decoded(value: &[u8]) -> Option<Vec<u8>> {
    match std::borrow::Cow::from(percent_encoding::percent_decode(value)) {
        std::borrow::Cow::Owned(decoded) => Some(decoded),
        std::borrow::Cow::Borrowed(_) => None,
    }
}

/// The prefix is what the needles are built from.
const _: () = assert!(PREFIX.len() == 3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    fn pct(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn the_needles_are_the_prefix_in_base64_at_each_alignment() {
        for (lead, needle) in [("", NEEDLES[0]), ("x", NEEDLES[1]), ("xy", NEEDLES[2])] {
            let enc = STANDARD.encode(format!("{lead}{PREFIX}AAAA"));
            let sextets: Vec<u8> = enc.bytes().map(|b| B64[usize::from(b)]).collect();
            assert!(sextets.windows(needle.len()).any(|w| w == needle), "{enc}");
        }
    }

    #[test]
    fn a_key_is_found_in_any_form_of_a_header_value() {
        let k = generate().expect("rng").plain;
        let mut forms = vec![
            format!("Bearer {k}"),
            format!("Bearer\t{k}"),
            format!("Bearer x, Bearer {k}"),
            k.clone(),
            format!("Basic {k}"),
            format!("Token {k}"),
            format!("token={k}; other=1"),
            format!("x-api-key={k}"),
            format!("prefix{k}suffix"),
            format!("Basic {}", STANDARD.encode(format!("{k}:"))),
            format!("Basic {}", URL_SAFE_NO_PAD.encode(format!("u:{k}"))),
            // Round 14 (black-box): outside `Authorization` too.
            format!("s={}", STANDARD.encode(&k)),
            format!(
                "s={}; x=1",
                URL_SAFE_NO_PAD.encode(format!("{{\"k\":\"{k}\"}}"))
            ),
            // Glued to other base64 characters (any character offset).
            format!("abc{}", STANDARD.encode(format!("zz{k}"))),
            format!("tg%5F{}", &k[3..]),
            format!("tg%5f{}", &k[3..]),
            pct(&k),
            format!("s={}", STANDARD.encode(&k).replace('=', "%3D")),
        ];
        for lead in ["", "u", "us", "use", "user:"] {
            forms.push(format!("Basic {}", STANDARD.encode(format!("{lead}{k}"))));
        }
        // A base64 rendering holding `+` and `/`, percent-encoded.
        let plus = STANDARD.encode([&b"\xfb\xff"[..], k.as_bytes()].concat());
        assert!(plus.starts_with("+/"), "{plus}");
        forms.push(plus.replace('+', "%2B").replace('/', "%2F"));
        for v in &forms {
            assert!(carries_key(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn values_without_a_valid_key_are_not_flagged() {
        let k = generate().expect("rng").plain;
        let mut typo = k.clone().into_bytes();
        typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        let long = "dGdf".repeat(100);
        for v in [
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0Z18ifQ.sig".to_string(),
            format!("Bearer {typo}"),
            format!("Basic {}", STANDARD.encode(format!("user:{typo}"))),
            format!("s={}", pct(&typo)),
            format!("Bearer {}", &k[..KEY_LEN - 1]),
            format!("Bearer {}", k.to_uppercase()),
            format!("Basic {}", STANDARD.encode("user:password")),
            String::new(),
            "tg_".to_string(),
            "%".to_string(),
            "%5".to_string(),
            "a%zz%5F".to_string(),
            long,
            // Double encoding is one level too deep for an upstream to
            // read it as the key.
            pct(&pct(&k)),
        ] {
            assert!(!carries_key(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn odd_bytes_around_a_key_are_no_obstacle() {
        let k = generate().expect("rng").plain;
        let mut raw = vec![0xff, 0xfe, b' '];
        raw.extend_from_slice(k.as_bytes());
        raw.push(0x80);
        assert!(carries_key(&raw));
        let mut raw = vec![0xff, b'%'];
        raw.extend_from_slice(pct(&k).as_bytes());
        raw.push(b'%');
        assert!(carries_key(&raw));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decoded(b"abc"), None);
        assert_eq!(percent_decoded(b"a%zz"), None);
        assert_eq!(percent_decoded(b"%41%4a%"), Some(b"AJ%".to_vec()));
        assert_eq!(decode(&[29, 6, 29, 31]), b"tg_".to_vec());
    }
}
