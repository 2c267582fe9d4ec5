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

pub use tollgate_core::secret_strength::{
    secret_guesses_log10, weak_secret_reason, MIN_SECRET_BYTES, MIN_SECRET_GUESSES_LOG10,
    STRENGTH_CHECKED_CHARS,
};

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

    #[test]
    fn generated_secrets_are_strong() {
        assert!(weak_secret_reason(&generate_secret().expect("rng")).is_none());
    }
}
