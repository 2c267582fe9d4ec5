//! The API key format.
//!
//! A key is `tg_` + 32 base62 characters of secret (≈190 bits from the OS
//! CSPRNG) + 6 base62 characters of CRC-32 checksum over the secret. The
//! checksum lets the proxy refuse typos and garbage without any lookup, and the
//! fixed prefix makes leaked keys easy to recognise (secret scanners). Only the
//! SHA-256 of the full key is ever stored.

use sha2::{Digest, Sha256};

mod carried;
mod redact;
pub use carried::carries_key;
pub use redact::{recorded_method, redact_keys, REDACTED, REDACTED_METHOD};

pub const PREFIX: &str = "tg_";
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + SECRET_LEN + CHECKSUM_LEN;
/// How many leading characters of a key listings show (`tg_` + 8).
pub const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 8;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a full key: what the database stores and the proxy looks up.
pub type KeyHash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("API key does not start with \"tg_\"")]
    Prefix,
    #[error("API key has the wrong length")]
    Length,
    #[error("API key contains characters outside [0-9A-Za-z]")]
    Charset,
    #[error("API key checksum does not match")]
    Checksum,
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(pub(crate) String);

impl RandomError {
    /// The OS generator failed with `why`.
    pub fn new(why: String) -> Self {
        Self(why)
    }
}

/// A freshly generated key. The plain text exists only until it is shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    pub plain: String,
    pub hash: KeyHash,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKey({}…)", display_prefix(&self.plain))
    }
}

impl NewKey {
    pub fn display_prefix(&self) -> String {
        display_prefix(&self.plain)
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Generate a new key from the OS CSPRNG.
pub fn generate() -> Result<NewKey, RandomError> {
    let mut secret = String::with_capacity(SECRET_LEN);
    let mut buf = [0u8; 64];
    while secret.len() < SECRET_LEN {
        getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
        // Rejection sampling keeps every character uniform: 248 = 4 × 62.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if secret.len() == SECRET_LEN {
                break;
            }
            secret.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    let plain = format!("{PREFIX}{secret}{}", checksum(&secret));
    let hash = hash(&plain);
    Ok(NewKey { plain, hash })
}

fn checksum(secret: &str) -> String {
    let mut n = u64::from(crc32fast::hash(secret.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Check a key's shape and checksum without any lookup.
pub fn validate(key: &str) -> Result<(), KeyFormatError> {
    let rest = key.strip_prefix(PREFIX).ok_or(KeyFormatError::Prefix)?;
    if key.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Charset);
    }
    let (secret, sum) = rest.split_at(SECRET_LEN);
    if checksum(secret) != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// Validate and hash in one step: what the proxy does with a presented key.
pub fn parse(key: &str) -> Result<KeyHash, KeyFormatError> {
    validate(key)?;
    Ok(hash(key))
}

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `value` (a header value) carries a Tollgate key anywhere: `tg_`
/// and a well-formed key with a valid checksum, whatever surrounds it (any
/// scheme, whitespace, list member, cookie, a longer token). What the proxy
/// must never forward, on any route.
pub fn contains_key(value: &[u8]) -> bool {
    value.windows(KEY_LEN).any(|w| {
        w.starts_with(PREFIX.as_bytes())
            && std::str::from_utf8(w).is_ok_and(|k| validate(k).is_ok())
    })
}

/// Whether `value` holds something shaped like a key once case is ignored
/// (`tg_`, then 38 letters or digits): a lower-cased key. HTTP lower-cases
/// host names and header names, and a lower-cased key fails its checksum,
/// so [`contains_key`] cannot see it there (black-box round 15: such a key
/// could be recovered offline from its case variants).
pub fn key_shaped(value: &[u8]) -> bool {
    value.len() >= KEY_LEN
        && value.windows(KEY_LEN).any(|w| {
            w[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
                && w[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric)
        })
}

/// The short, non-secret prefix listings show.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// A key's or plan's scopes; `None` lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// Route names or `*` patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Upper-case HTTP methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

impl Scopes {
    /// No list at all: the same as no scopes.
    pub fn is_open(&self) -> bool {
        self.routes.is_none() && self.methods.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_validate_and_differ() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert_ne!(a.plain, b.plain);
        assert_eq!(a.plain.len(), KEY_LEN);
        assert!(a.plain.starts_with("tg_"));
        assert_eq!(validate(&a.plain), Ok(()));
        assert_eq!(parse(&a.plain), Ok(a.hash));
        assert_eq!(a.display_prefix().len(), DISPLAY_PREFIX_LEN);
        assert!(!format!("{a:?}").contains(&a.plain));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let k = generate().expect("rng").plain;
        assert_eq!(validate("xx_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(validate("tg_short"), Err(KeyFormatError::Length));
        assert_eq!(validate(&format!("{k}a")), Err(KeyFormatError::Length));
        let mut bad = k.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(
            validate(&String::from_utf8(bad).expect("ascii")),
            Err(KeyFormatError::Charset)
        );
        // Change one secret character: the checksum no longer matches.
        let mut typo = k.into_bytes();
        typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            validate(&String::from_utf8(typo).expect("ascii")),
            Err(KeyFormatError::Checksum)
        );
        // 41 bytes, mostly non-ASCII: refused without panicking on a char boundary.
        assert_eq!(
            validate("tg_ééééééééééééééééééé"),
            Err(KeyFormatError::Charset)
        );
    }

    proptest::proptest! {
        #[test]
        fn keys_are_found_wherever_they_are_embedded(
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let k = generate().expect("rng").plain;
            let mut v = before.clone();
            v.extend_from_slice(k.as_bytes());
            v.extend_from_slice(&after);
            proptest::prop_assert!(contains_key(&v));
            proptest::prop_assert!(carries_key(&v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = carries_key(&v);
        }
    }

    #[test]
    fn characters_are_roughly_uniform() {
        let mut counts = [0u32; 62];
        for _ in 0..400 {
            let k = generate().expect("rng").plain;
            for b in k[3..35].bytes() {
                let i = ALPHABET.iter().position(|&a| a == b).expect("alphabet");
                counts[i] += 1;
            }
        }
        // 12 800 draws, 206 expected per symbol.
        assert!(
            counts.iter().all(|&c| (120..300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_key_in_any_case_is_key_shaped() {
        let k = generate().expect("rng").plain;
        for v in [
            k.clone(),
            k.to_ascii_lowercase(),
            format!("x.{}.y", k.to_ascii_uppercase()),
        ] {
            assert!(key_shaped(v.as_bytes()), "{v}");
        }
        for v in [
            "api.example.com",
            "tg_short",
            &k[..KEY_LEN - 1],
            "x-api-key",
        ] {
            assert!(!key_shaped(v.as_bytes()), "{v}");
        }
    }
}
