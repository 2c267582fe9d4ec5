//! How strong a secret from the environment must be (the admin API's JWT
//! secret, `admin.jwt_secret_env`): one rule, read when the admin starts
//! and when a reload names another variable (every role), so a config the
//! admin could not start with is never accepted by a running process.

/// zxcvbn's matching grows quickly with length; what it cannot judge in the
/// first 100 characters it would not judge better on more.
pub const STRENGTH_CHECKED_CHARS: usize = 100;

/// The shortest JWT secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Values that appear in templates and tutorials: never a real secret.
const PLACEHOLDERS: [&str; 12] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "your-secret",
    "yoursecret",
    "secret",
    "password",
    "example",
    "placeholder",
    "xxxxxxxx",
];

/// The least estimated guesses (log10) a JWT secret must need: 10^25 ≈ 2^83,
/// far beyond any word, pattern or keyboard walk — only random values pass.
pub const MIN_SECRET_GUESSES_LOG10: f64 = 25.0;
/// zxcvbn counts guesses in a `u64` that saturates near 10^19.3; longer
/// secrets are judged in chunks short enough never to saturate.
const SECRET_CHUNK_CHARS: usize = 16;
/// A whole-value estimate at or above this saturated `u64` (no repeat or
/// pattern spanning the value made it cheap).
const SATURATED_GUESSES_LOG10: f64 = 19.0;
const SECRET_HINT: &str = "set a random value (e.g. `openssl rand -base64 48`)";

/// Why a JWT secret from the environment is refused, or `None` if it is fine.
///
/// At least 32 bytes, no placeholder text, and random: zxcvbn must estimate
/// at least 10^25 guesses. A value that decodes (base64 standard/url-safe,
/// padded or not, or hex) to UTF-8 text is judged on that text too, so
/// encoding a guessable phrase does not make it a secret.
pub fn weak_secret_reason(secret: &str) -> Option<String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "is {} bytes long; it must be at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 48`)",
            secret.len()
        ));
    }
    if let Some(reason) = guessable_reason(secret) {
        return Some(reason);
    }
    for decoded in decoded_texts(secret) {
        if let Some(reason) = guessable_reason(&decoded) {
            return Some(format!("is encoded text that {reason}"));
        }
    }
    None
}

fn guessable_reason(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if let Some(p) = PLACEHOLDERS.iter().find(|p| lower.contains(*p)) {
        return Some(format!("contains the placeholder {p:?}; {SECRET_HINT}"));
    }
    if secret_guesses_log10(text) < MIN_SECRET_GUESSES_LOG10 {
        return Some(format!(
            "is guessable (words, patterns or repeats); {SECRET_HINT}"
        ));
    }
    None
}

/// zxcvbn's estimate of the guesses (log10) to find `text`, without the
/// `u64` ceiling: the whole value must saturate the estimate (no repeat or
/// pattern across it), and then the chunks' estimates add up.
pub fn secret_guesses_log10(text: &str) -> f64 {
    const HINTS: [&str; 3] = ["tollgate", "jwt", "admin"];
    let checked: Vec<char> = text.chars().take(STRENGTH_CHECKED_CHARS).collect();
    let whole: String = checked.iter().collect();
    let whole_log10 = zxcvbn::zxcvbn(&whole, &HINTS).guesses_log10();
    if whole_log10 < SATURATED_GUESSES_LOG10 {
        return whole_log10;
    }
    checked
        .chunks(SECRET_CHUNK_CHARS)
        .map(|c| {
            let chunk: String = c.iter().collect();
            zxcvbn::zxcvbn(&chunk, &HINTS).guesses_log10()
        })
        .sum()
}

/// The UTF-8 texts `secret` decodes to as base64 (any common alphabet and
/// padding) or hex.
fn decoded_texts(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let trimmed = secret.trim();
    let mut bytes: Vec<Vec<u8>> = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .filter_map(|e| e.decode(trimmed).ok())
        .collect();
    bytes.extend(hex::decode(trimmed).ok());
    let mut texts: Vec<String> = bytes
        .into_iter()
        .filter_map(|b| String::from_utf8(b).ok())
        .collect();
    texts.dedup();
    texts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_and_short_secrets_are_refused() {
        assert!(weak_secret_reason("change-me").is_some());
        assert!(weak_secret_reason(&"a".repeat(40)).is_some());
        assert!(weak_secret_reason("change-me-change-me-change-me-change-me").is_some());
        assert!(weak_secret_reason("0123456789abcdef0123456789abcdef").is_some());
        // What `openssl rand -base64 48` gives.
        assert!(weak_secret_reason(
            "3q2+7wpI9aXkT0vLmB8sNc4RfYh1Ue6GzDjK5oWtPbQxA2nVyEiJ7MuHs0Lr9CgF"
        )
        .is_none());
        assert!(weak_secret_reason("q8Jf3kLz0PmX7vB2nR5tW9yC4hD6gS1aE0uI").is_none());
    }

    /// Guessable values an attacker tries first, some long and "strong as a
    /// password", some encoded.
    pub(crate) fn guessable_secrets() -> Vec<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        vec![
            "Summer2026!Summer2026!Summer2026".into(),
            "tollgate-jwt-key-tollgate-jwt-key!".into(),
            "qwertyuiopasdfghjklzxcvbnm123456".into(),
            "1q2w3e4r5t6y7u8i9o0p1q2w3e4r5t6y".into(),
            "correcthorsebatterystaple1234567".into(),
            b64.encode("12345678901234567890123456789012"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode("correcthorsebatterystaple1234567"),
            hex::encode("Summer2026!Summer2026!Summer2026"),
            b64.encode("Summer2026!Summer2026!Summer2026!Summer2026!Summer2026!"),
        ]
    }

    /// What `openssl rand -base64 32|48` and `-hex 32` print, from the OS RNG.
    pub(crate) fn random_secrets() -> Vec<String> {
        use base64::Engine;
        let mut out = Vec::new();
        for _ in 0..8 {
            for n in [32usize, 48] {
                let mut bytes = vec![0u8; n];
                getrandom::fill(&mut bytes).expect("rng");
                out.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
                out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
                out.push(hex::encode(&bytes));
            }
        }
        out
    }

    #[test]
    fn guessable_secrets_are_refused_and_random_ones_pass() {
        for weak in guessable_secrets() {
            assert!(weak_secret_reason(&weak).is_some(), "accepted {weak:?}");
        }
        for strong in random_secrets() {
            assert_eq!(weak_secret_reason(&strong), None, "{strong:?}");
        }
    }
}
