//! Admin passwords and the JWT secret: strength rules, argon2id hashing and
//! the gate that bounds how many argon2 runs happen at once.
//!
//! Each argon2id run takes ~19 MiB and tens of milliseconds of CPU, so the
//! runs go through [`Argon2Gate`]: at most one per core at a time, a bounded
//! queue behind them, and beyond that 503 with `Retry-After` — memory stays
//! bounded under any number of concurrent logins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

pub const MIN_PASSWORD_LEN: usize = 12;
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The least zxcvbn score (0–4) a password must reach: 3 means "safely
/// unguessable: moderate protection from an offline slow-hash scenario".
pub const MIN_PASSWORD_SCORE: u8 = 3;
/// zxcvbn's matching grows quickly with length; what it cannot judge in the
/// first 100 characters it would not judge better on more.
const STRENGTH_CHECKED_CHARS: usize = 100;

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

/// A username an admin may have: 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
pub fn validate_username(username: &str) -> ApiResult<()> {
    if username.is_empty() {
        return Err(ApiError::validation("username", "must not be empty"));
    }
    if username.len() > 64 {
        return Err(ApiError::validation(
            "username",
            "must be at most 64 characters",
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(ApiError::validation(
            "username",
            "may only contain A-Z, a-z, 0-9, '.', '_', '@' and '-'",
        ));
    }
    Ok(())
}

/// The password rules: 12–1024 characters, and not weak or common by
/// zxcvbn's estimate (taking the username into account).
pub fn validate_password(password: &str, username: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    let checked: String = password.chars().take(STRENGTH_CHECKED_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&checked, &[username, "tollgate", "admin"]);
    if u8::from(estimate.score()) < MIN_PASSWORD_SCORE {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(ApiError::validation(
            "password",
            format!("is too easy to guess{hint}; use a longer passphrase of unrelated words"),
        ));
    }
    Ok(())
}

/// Hash a password with argon2id (default parameters: 19 MiB, 2 passes) and a
/// random salt, as a PHC string. Blocking and slow: go through [`Argon2Gate`].
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2: {e}")))
}

/// Check a password against a stored PHC string (`false` on any mismatch or
/// an unparseable hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the username does not exist, so that an
/// unknown user takes as long to refuse as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("tollgate-dummy-password").unwrap_or_default())
}

/// At most `permits` argon2 runs at once, at most `queue` more waiting; the
/// rest are refused at once with 503 + `Retry-After`.
#[derive(Debug)]
pub struct Argon2Gate {
    semaphore: Semaphore,
    permits: usize,
    queue: usize,
    /// Runs waiting or running.
    admitted: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
}

impl Default for Argon2Gate {
    /// One run per core, four queued per core.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, cores * 4)
    }
}

struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Argon2Gate {
    pub fn new(permits: usize, queue: usize) -> Self {
        let permits = permits.max(1);
        Self {
            semaphore: Semaphore::new(permits),
            permits,
            queue,
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
        }
    }

    /// The most runs that were ever in progress at once.
    pub fn peak_running(&self) -> usize {
        self.peak_running.load(Ordering::Acquire)
    }

    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Run `f` on a blocking thread once a permit is free; 503 when the queue
    /// is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _admitted = Admitted(&self.admitted);
        if before >= self.permits + self.queue {
            return Err(ApiError::Busy(
                "too many password checks in progress; try again in a second".into(),
            ));
        }
        let _permit = self
            .semaphore
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the argon2 gate is closed"))?;
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_running.fetch_max(now, Ordering::AcqRel);
        let _running = Admitted(&self.running);
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::internal(format!("argon2 task: {e}")))
    }

    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move || hash_password(&password)).await?
    }

    pub async fn verify(&self, password: String, phc: String) -> ApiResult<bool> {
        self.run(move || verify_password(&password, &phc)).await
    }
}

/// A random password of `len` base62 characters (≈ 5.95 bits each).
pub fn random_password(len: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    Ok(out)
}

/// A generated JWT secret: 32 random bytes, hex.
pub fn generate_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn weak_and_short_passwords_are_refused() {
        for weak in [
            "change-me",
            "password1234",
            "aaaaaaaaaaaaaaaa",
            "123456789012",
            "qwertyuiopasdf",
            "alice-alice-alice",
            "Password2024!",
        ] {
            assert!(validate_password(weak, "alice").is_err(), "{weak}");
        }
        assert!(validate_password(&"x".repeat(1025), "a").is_err());
        for strong in [
            "correct-horse-battery-staple",
            "vU8#kq2!Lm9zTq",
            "plum tangent oyster 41",
        ] {
            assert!(validate_password(strong, "alice").is_ok(), "{strong}");
        }
        let generated = random_password(20).expect("rng");
        assert!(validate_password(&generated, "admin").is_ok());
    }

    #[test]
    fn placeholder_and_short_secrets_are_refused() {
        assert!(weak_secret_reason("change-me").is_some());
        assert!(weak_secret_reason(&"a".repeat(40)).is_some());
        assert!(weak_secret_reason("change-me-change-me-change-me-change-me").is_some());
        assert!(weak_secret_reason("0123456789abcdef0123456789abcdef").is_some());
        assert!(weak_secret_reason(&generate_secret().expect("rng")).is_none());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gate_bounds_runs_and_refuses_beyond_its_queue() {
        let gate = std::sync::Arc::new(Argon2Gate::new(2, 3));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let g = gate.clone();
            tasks.push(tokio::spawn(async move {
                g.run(|| std::thread::sleep(std::time::Duration::from_millis(200)))
                    .await
            }));
        }
        let mut ok = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(()) => ok += 1,
                Err(ApiError::Busy(_)) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!((2..=5).contains(&ok), "{ok} ran");
        assert_eq!(ok + busy, 20);
        assert!(gate.peak_running() <= 2, "{}", gate.peak_running());
    }
}
