//! Property tests (issue #9, item 5) of the API key format: any string is
//! accepted only in the key's shape, every generated key validates, a
//! single changed character is refused, and the key hash is deterministic.

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tollgate_core::keys::{self, KeyFormatError};

use crate::common::config;

const ALPHANUMERIC: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What `validate` must answer for a string, from the format's rules alone,
/// except the checksum (`None`: shape fine, only the checksum decides).
fn expected_shape(s: &str) -> Option<KeyFormatError> {
    if !s.starts_with(keys::PREFIX) {
        Some(KeyFormatError::Prefix)
    } else if s.len() != keys::KEY_LEN {
        Some(KeyFormatError::Length)
    } else if !s[keys::PREFIX.len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric())
    {
        Some(KeyFormatError::Charset)
    } else {
        None
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Any string: no panic, the error the format's rules call for, and
    /// `parse` agrees with `validate` and hashes what it accepts.
    #[test]
    fn key_any_string(s in prop_oneof![
        any::<String>(),
        "tg_[0-9A-Za-z]{38}",
        "tg_[0-9A-Za-z]{30,45}",
        "tg_[ -~]{38}",
        "tg_\\PC{30,40}",
    ]) {
        let v = keys::validate(&s);
        match expected_shape(&s) {
            Some(e) => prop_assert_eq!(v, Err(e)),
            None => prop_assert!(
                matches!(v, Ok(()) | Err(KeyFormatError::Checksum)),
                "{:?}", v
            ),
        }
        prop_assert_eq!(keys::parse(&s), v.map(|()| keys::hash(&s)));
    }

    /// Every generated key has the format and validates; `parse` gives its
    /// hash.
    #[test]
    fn key_generated_validates(_case in 0..1u8) {
        let k = keys::generate().expect("rng");
        prop_assert_eq!(k.plain.len(), keys::KEY_LEN);
        prop_assert!(k.plain.starts_with(keys::PREFIX));
        prop_assert!(k.plain[3..].chars().all(|c| ALPHANUMERIC.contains(c)));
        prop_assert_eq!(expected_shape(&k.plain), None);
        prop_assert_eq!(keys::validate(&k.plain), Ok(()));
        prop_assert_eq!(keys::parse(&k.plain), Ok(k.hash));
        prop_assert_eq!(k.display_prefix(), &k.plain[..keys::DISPLAY_PREFIX_LEN]);
    }

    /// Any single-character change of a valid key is refused, with the error
    /// its kind calls for: the prefix, the length (a multi-byte character),
    /// the charset, or, for another letter or digit, the checksum (CRC-32
    /// catches every error confined to 32 bits, so no typo slips through).
    #[test]
    fn key_single_change_is_refused(
        at in 0..keys::KEY_LEN,
        replacement in prop_oneof![
            3 => prop::sample::select(ALPHANUMERIC.chars().collect::<Vec<_>>()),
            1 => any::<char>(),
        ],
    ) {
        let k = keys::generate().expect("rng").plain;
        let original = k.as_bytes()[at] as char;
        prop_assume!(replacement != original);
        let mut changed: String = k.chars().take(at).collect();
        changed.push(replacement);
        changed.extend(k.chars().skip(at + 1));
        let expected = if at < keys::PREFIX.len() {
            KeyFormatError::Prefix
        } else if !replacement.is_ascii() {
            KeyFormatError::Length
        } else if !replacement.is_ascii_alphanumeric() {
            KeyFormatError::Charset
        } else {
            KeyFormatError::Checksum
        };
        prop_assert_eq!(keys::validate(&changed), Err(expected), "{} -> {}", k, changed);
        prop_assert!(keys::parse(&changed).is_err());
    }

    /// Hashing is deterministic, is SHA-256 of the key's bytes, and tells
    /// different keys apart.
    #[test]
    fn key_hash_is_deterministic(a in any::<String>(), b in any::<String>()) {
        let h = keys::hash(&a);
        prop_assert_eq!(h, keys::hash(&a.clone()));
        let want: [u8; 32] = Sha256::digest(a.as_bytes()).into();
        prop_assert_eq!(h, want);
        prop_assert_eq!(h == keys::hash(&b), a == b);
    }
}
