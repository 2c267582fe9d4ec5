//! The scalar checker kit: text, numbers, flags, durations, choices,
//! addresses and sizes, each reporting a problem at its field.

use super::*;

/// `Some` only for a scalar that is present and not null: an option that is
/// omitted, empty or `~` takes its default.
pub(super) fn given(s: &Option<Scalar>) -> Option<&Scalar> {
    match s {
        None | Some(Scalar::Null) => None,
        Some(s) => Some(s),
    }
}

/// What a long header timeout does (`proxy.` and `admin.header_timeout`).
pub(super) const SLOW_HEADER: &str =
    "a client sending its header slowly (slowloris) holds its connection that long";

/// An RFC 9110 token (`tchar`): header field names and methods.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validator<'_> {
    /// Text of an optional field.
    pub(super) fn text(&self, s: &Option<Scalar>) -> Option<String> {
        given(s).and_then(Scalar::text)
    }

    /// Text of a required field.
    pub(super) fn required_text(&mut self, path: &str, s: &Option<Scalar>) -> Option<String> {
        let t = self.text(s);
        if t.is_none() {
            self.missing(path, "");
        }
        t
    }

    /// Text that must not be empty.
    pub(super) fn non_empty(&mut self, path: &str, s: &Option<Scalar>) -> Option<String> {
        let t = self.required_text(path, s)?;
        if t.trim().is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        Some(t)
    }

    /// A whole number in `min..=max`.
    pub(super) fn number(&mut self, path: &str, s: &Scalar, min: u64, max: u64) -> Option<u64> {
        let n = match s {
            Scalar::Int(i) => *i,
            other => {
                self.error(path, format!("expected a whole number, got {other}"));
                return None;
            }
        };
        if let Err(message) = rules::in_range(n, min, max) {
            self.error(path, message);
            return None;
        }
        u64::try_from(n).ok()
    }

    /// An optional whole number in `min..=max`, `default` if omitted.
    pub(super) fn number_or(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        match given(s) {
            Some(s) => self.number(path, s, min, max).unwrap_or(default),
            None => default,
        }
    }

    /// [`Self::number_or`] for a count held as `T` (`usize`, `u32`):
    /// `min..=max` (which `T` holds), `default` if omitted.
    pub(super) fn count_or<T>(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        min: u64,
        max: u64,
        default: T,
    ) -> T
    where
        T: Copy + TryFrom<u64>,
        u64: TryFrom<T>,
    {
        let wide = u64::try_from(default).unwrap_or(u64::MAX);
        T::try_from(self.number_or(path, s, min, max, wide)).unwrap_or(default)
    }

    pub(super) fn flag_or(&mut self, path: &str, s: &Option<Scalar>, default: bool) -> bool {
        match given(s) {
            None => default,
            Some(Scalar::Bool(b)) => *b,
            Some(other) => {
                self.error(path, format!("expected true or false, got {other}"));
                default
            }
        }
    }

    /// A duration of at least `min`.
    pub(super) fn duration(&mut self, path: &str, s: &Scalar, min: Duration) -> Option<Duration> {
        let text = s.text().unwrap_or_default();
        match duration::parse(&text) {
            Ok(d) if d < min => {
                if min == Duration::from_millis(1) {
                    self.error(path, format!("must be at least 1ms, got {text:?}"));
                } else {
                    self.error(
                        path,
                        format!("must be at least {}, got {text:?}", duration::format(min)),
                    );
                }
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// An optional duration in `min..=max`, `default` if omitted: a longer
    /// value is refused (`default` is used), saying what it would do
    /// (`why`). Every duration setting has a maximum, so that a typo (`60h`
    /// for `60s`) or a huge number cannot silently stop the work it paces
    /// (background periods: black-box round 12) or turn a deadline off
    /// (timeouts, the grace period: round 13; ranges in `config::bounds`).
    pub(super) fn duration_within(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        (min, max): (Duration, Duration),
        default: Duration,
        why: &str,
    ) -> Duration {
        let Some(s) = given(s) else {
            return default;
        };
        match self.duration(path, s, min) {
            Some(d) if d > max => {
                let text = s.text().unwrap_or_default();
                self.error(
                    path,
                    format!(
                        "must be at most {}, got {text:?} ({why})",
                        duration::format(max)
                    ),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// One of a fixed set of words.
    pub(super) fn choice_or<T: Copy>(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = given(s) else {
            return default;
        };
        let text = s.text().unwrap_or_default();
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return *v;
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        self.error(path, format!("expected {expected}, got {s}"));
        default
    }

    pub(super) fn addr(&mut self, path: &str, s: &Scalar) -> Option<SocketAddr> {
        let text = s.text().unwrap_or_default();
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let hint = match text.rsplit_once(':') {
                    Some((host, _))
                        if host.chars().any(|c| c.is_ascii_alphabetic())
                            && !host.contains(['[', ':']) =>
                    {
                        " (host names are not accepted here: use an IP address such as 127.0.0.1 or 0.0.0.0)"
                    }
                    _ => "",
                };
                self.error(
                    path,
                    format!(
                        "invalid address {s}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080{hint}"
                    ),
                );
                None
            }
        }
    }

    pub(super) fn addr_or(&mut self, path: &str, s: &Option<Scalar>, default: &str) -> SocketAddr {
        let fallback = default
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        match given(s) {
            Some(s) => self.addr(path, s).unwrap_or(fallback),
            None => fallback,
        }
    }

    /// A size in bytes: a whole number, or with `KiB`/`MiB`/`GiB` (`KB`/`MB`/`GB`,
    /// `k`/`m`/`g` mean the same), within `min..=max`.
    pub(super) fn byte_size(
        &mut self,
        path: &str,
        s: &Scalar,
        min: usize,
        max: usize,
    ) -> Option<usize> {
        let text = s.text().unwrap_or_default();
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => 1024 * 1024,
            "g" | "gb" | "gib" => 1024 * 1024 * 1024,
            _ => 0,
        };
        let n = digits
            .parse::<usize>()
            .ok()
            .filter(|_| factor > 0)
            .and_then(|n| n.checked_mul(factor));
        match n {
            None => {
                self.error(
                    path,
                    format!("expected a size such as 32768, 32KiB or 1MiB, got {s}"),
                );
                None
            }
            Some(n) if n < min || n > max => {
                self.error(
                    path,
                    format!("must be between {min} and {max} bytes, got {text:?}"),
                );
                None
            }
            Some(n) => Some(n),
        }
    }
}
