//! The service token format: the credential of a service that calls the
//! verify API (`POST /v1/verify` on `verify.listen`).
//!
//! A token is `tgs_` + 43 base62 characters (≈256 bits from the OS CSPRNG).
//! Only its SHA-256 is stored; the plain text is shown once, at creation.
//! It is not an API key (a key never opens the verify API, a token never
//! opens a route).

use sha2::{Digest, Sha256};

use crate::keys::RandomError;

pub const PREFIX: &str = "tgs_";
const SECRET_LEN: usize = 43;
/// A token's full length.
pub const TOKEN_LEN: usize = PREFIX.len() + SECRET_LEN;
/// How many leading characters listings show (`tgs_` + 6).
pub const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 6;
/// The longest token name.
pub const MAX_NAME: usize = 200;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a full token.
pub type TokenHash = [u8; 32];

/// A freshly generated token: the plain text exists only until shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    pub plain: String,
    pub hash: TokenHash,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewToken({}…)", self.display_prefix())
    }
}

impl NewToken {
    pub fn display_prefix(&self) -> String {
        self.plain.chars().take(DISPLAY_PREFIX_LEN).collect()
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Generate a token from the OS CSPRNG.
pub fn generate() -> Result<NewToken, RandomError> {
    let mut secret = String::with_capacity(SECRET_LEN);
    let mut buf = [0u8; 64];
    while secret.len() < SECRET_LEN {
        getrandom::fill(&mut buf).map_err(|e| RandomError::new(e.to_string()))?;
        // Rejection sampling keeps every character uniform: 248 = 4 × 62.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if secret.len() == SECRET_LEN {
                break;
            }
            secret.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    let plain = format!("{PREFIX}{secret}");
    let hash = hash(&plain);
    Ok(NewToken { plain, hash })
}

/// The hash of a presented token, if it has a token's shape (no lookup
/// otherwise).
pub fn parse(token: &str) -> Option<TokenHash> {
    let rest = token.strip_prefix(PREFIX)?;
    (token.len() == TOKEN_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| hash(token))
}

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A token name: 1 to [`MAX_NAME`] characters, no control characters,
/// trimmed.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("at most {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a.plain, b.plain);
        assert_eq!(a.plain.len(), TOKEN_LEN);
        assert_eq!(parse(&a.plain), Some(a.hash));
        assert_eq!(a.display_prefix().len(), DISPLAY_PREFIX_LEN);
        assert!(!format!("{a:?}").contains(&a.plain));
    }

    #[test]
    fn malformed_tokens_are_not_looked_up() {
        let t = generate().expect("random").plain;
        for bad in [
            "",
            "tgs_",
            &t[..t.len() - 1],
            &format!("{t}x"),
            &t.replacen("tgs_", "tg_x", 1),
            &format!("tgs_{}", "é".repeat(21)),
            &format!("tgs_{}-", &t[4..t.len() - 1]),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(check_name("  billing svc ").as_deref(), Ok("billing svc"));
        assert!(check_name(" ").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
    }
}
