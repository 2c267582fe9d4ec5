//! Property tests (issue #9, item 5) of what `tollgate-core` parses and
//! computes: the config parser, the API key format and the token-bucket
//! arithmetic. Each property states what it checks; the case counts keep the
//! whole file to a few seconds.

use std::time::Duration;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tollgate_core::config::{self as tg_config, ConfigErrors};
use tollgate_core::keys::{self, KeyFormatError};
use tollgate_core::limits::{self, check_bucket, decide, Limit, Policy};

/// `cases` cases, no regression files written next to the sources (failing
/// cases worth keeping become plain tests).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// --- config ------------------------------------------------------------------

const PRODUCTION_YAML: &str = include_str!("../../config/examples/production.yaml");

/// The shipped configs, by the name errors carry.
fn shipped() -> [(&'static str, &'static str); 2] {
    [
        ("tollgate.yaml", tg_config::DEFAULT_YAML),
        ("production.yaml", PRODUCTION_YAML),
    ]
}

/// The lines of `src` as YAML parsers count them: `\n`, `\r\n` and `\r` end a
/// line, and so (YAML 1.1, libyaml) do NEL, LS and PS.
fn yaml_lines(src: &str) -> Vec<Vec<char>> {
    let mut lines = vec![Vec::new()];
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(Vec::new());
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines.push(Vec::new()),
            _ => lines.last_mut().expect("never empty").push(c),
        }
    }
    lines
}

/// Run the parser `tollgate check-config` uses on `src` (it must not panic)
/// and check that every error is positioned inside the text (1-based line
/// among the text's lines, 1-based column at most one past that line's end),
/// names the file and says something. `Ok(true)` if the text is valid.
fn parses(src: &str) -> Result<bool, TestCaseError> {
    let file = "props.yaml";
    match tg_config::parse(src, file) {
        Ok(_) => Ok(true),
        Err(ConfigErrors(errors)) => {
            prop_assert!(!errors.is_empty(), "an Err without any error");
            let lines = yaml_lines(src);
            for e in &errors {
                prop_assert_eq!(&e.file, file);
                prop_assert!(!e.message.is_empty(), "empty message: {:?}", e);
                prop_assert!(
                    e.line >= 1 && e.line <= lines.len(),
                    "line {} outside 1..={}: {:?} for {:?}",
                    e.line,
                    lines.len(),
                    e,
                    src
                );
                let width = lines[e.line - 1].len();
                prop_assert!(
                    e.column >= 1 && e.column <= width + 1,
                    "column {} outside 1..={} of line {}: {:?} for {:?}",
                    e.column,
                    width + 1,
                    e.line,
                    e,
                    src
                );
                let shown = e.to_string();
                let head = format!("{}:{}:{}: ", file, e.line, e.column);
                prop_assert!(shown.starts_with(&head), "{}", shown);
            }
            Ok(false)
        }
    }
}

/// Text made of what YAML is made of: indicators, quotes, breaks, digits,
/// the config's own keys and a few troublemakers (tabs, BOM, NUL, non-ASCII).
fn yamlish() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just(":".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("\n  ".to_string()),
        Just("\r\n".to_string()),
        Just("\r".to_string()),
        Just("\t".to_string()),
        Just(" ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(", ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("? ".to_string()),
        Just("|\n".to_string()),
        Just(">-\n".to_string()),
        Just("---\n".to_string()),
        Just("...\n".to_string()),
        Just("<<: ".to_string()),
        Just("\u{feff}".to_string()),
        Just("\u{0}".to_string()),
        Just("é".to_string()),
        Just("\u{1F600}".to_string()),
        Just("\u{2028}".to_string()),
        Just("\u{85}".to_string()),
        prop::sample::select(vec![
            "proxy",
            "admin",
            "storage",
            "limiter",
            "log",
            "usage",
            "plans",
            "upstreams",
            "routes",
            "listen",
            "threads",
            "limits",
            "name",
            "rate",
            "per",
            "burst",
            "cost",
            "targets",
            "match",
            "path_prefix",
            "methods",
            "upstream",
            "auth",
            "api_key",
            "none",
            "default_plan",
            "backend",
            "redis",
            "local",
            "1s",
            "20ms",
            "1d",
            "0",
            "-1",
            "1e400",
            ".inf",
            "~",
            "null",
            "true",
            "99999999999999999999999",
        ])
        .prop_map(str::to_string),
        "[a-z0-9_./:-]{1,8}",
    ];
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

/// A random scalar or a value of the wrong type, as written in YAML.
fn random_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a: b }".to_string()),
        Just("\"\"".to_string()),
        Just("true".to_string()),
        Just("0".to_string()),
        Just("-7".to_string()),
        Just("1.5".to_string()),
        Just("18446744073709551616".to_string()),
        Just(".nan".to_string()),
        Just("1x".to_string()),
        Just("\"unterminated".to_string()),
        Just("&anchor".to_string()),
        Just("*nowhere".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{1,6}(ms|s|m|h|d|x)?",
        "[a-zA-Z0-9_./:@-]{0,12}",
        "\"[ -~]{0,12}\"",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Replace what follows the line's first `: ` (or the whole line).
    Value(usize, String),
    /// Change the line's indentation.
    Indent(usize, usize),
    Insert(usize, String),
    Truncate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<prop::sample::Index>();
    prop_oneof![
        i.clone()
            .prop_map(|i| Mutation::Delete(i.index(usize::MAX))),
        i.clone()
            .prop_map(|i| Mutation::Duplicate(i.index(usize::MAX))),
        (i.clone(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Swap(a.index(usize::MAX), b.index(usize::MAX))),
        (i.clone(), random_value()).prop_map(|(i, v)| Mutation::Value(i.index(usize::MAX), v)),
        (i.clone(), 0..7usize).prop_map(|(i, n)| Mutation::Indent(i.index(usize::MAX), n)),
        (i.clone(), yamlish()).prop_map(|(i, s)| Mutation::Insert(i.index(usize::MAX), s)),
        (i, any::<prop::sample::Index>())
            .prop_map(|(i, c)| Mutation::Truncate(i.index(usize::MAX), c.index(usize::MAX))),
    ]
}

fn apply(src: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match m {
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Swap(a, b) => lines.swap(a % n, b % n),
            Mutation::Value(i, v) => {
                let l = &mut lines[i % n];
                match l.find(": ") {
                    Some(at) => l.replace_range(at + 2.., v),
                    None => *l = v.clone(),
                }
            }
            Mutation::Indent(i, k) => {
                let l = &mut lines[i % n];
                *l = format!("{}{}", " ".repeat(*k), l.trim_start());
            }
            Mutation::Insert(i, s) => lines.insert(i % (n + 1), s.clone()),
            Mutation::Truncate(i, c) => {
                let l = &mut lines[i % n];
                let keep = c % (l.chars().count() + 1);
                *l = l.chars().take(keep).collect();
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[test]
fn shipped_configs_are_valid() {
    // The mutation properties below start from valid files: if these broke,
    // every mutant would be "invalid" for a reason unrelated to the mutation.
    for (name, src) in shipped() {
        if let Err(e) = tg_config::parse(src, name) {
            panic!("{name}: {e}");
        }
        // `apply` with no mutation changes nothing that matters.
        assert!(tg_config::parse(&apply(src, &[]), name).is_ok(), "{name}");
    }
}

#[test]
fn end_of_text_errors_are_inside_the_text() {
    // Found by `config_any_text`: libyaml reports the end of a text without a
    // final line break at column 1 of the line after the last, a line the
    // file does not have ("{" gave 2:1). It is now the end of the last line.
    for (src, line, column) in [("{", 1, 2), ("[#", 1, 3), ("proxy:\n  a: [1,", 2, 9)] {
        let e = tg_config::parse(src, "x.yaml").expect_err("invalid");
        assert_eq!((e.0[0].line, e.0[0].column), (line, column), "{src:?}: {e}");
    }
    // With a final line break, the end of the text is on a line of its own.
    let e = tg_config::parse("{\n", "x.yaml").expect_err("invalid");
    assert_eq!((e.0[0].line, e.0[0].column), (2, 1), "{e}");
}

#[test]
fn position_check_is_not_vacuous() {
    // A known error lands where it should, and positions past the text's end
    // would be caught by the same checks.
    let src = "proxy:\n  threads: many\n";
    let e = tg_config::parse(src, "x.yaml").expect_err("invalid");
    assert_eq!((e.0[0].line, e.0[0].column), (2, 12));
    assert_eq!(yaml_lines(src).len(), 3);
    assert!(parses("proxy:\n  threads: 2\n").expect("positions fine"));
    assert!(!parses(src).expect("positions fine"));
    assert_eq!(yaml_lines("a\r\nb\rc\u{2028}d").len(), 4);
}

proptest! {
    #![proptest_config(config(512))]

    /// Any text at all: no panic; `Ok`, or errors positioned inside the text.
    #[test]
    fn config_any_text(src in any::<String>()) {
        parses(&src)?;
    }

    /// Any bytes, as the lossy UTF-8 a file read would give.
    #[test]
    fn config_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        parses(&String::from_utf8_lossy(&bytes))?;
    }

}

proptest! {
    #![proptest_config(config(160))]

    /// YAML-looking text, which gets much further into the parser.
    #[test]
    fn config_yamlish_text(src in yamlish()) {
        parses(&src)?;
    }

    /// The shipped configs with lines deleted, duplicated, swapped,
    /// re-indented, truncated, inserted, or values replaced by random scalars
    /// and wrong types: no panic, and every error is positioned.
    #[test]
    fn config_mutated_shipped_files(
        which in 0..2usize,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let (_, src) = shipped()[which];
        parses(&apply(src, &mutations))?;
    }

}

proptest! {
    #![proptest_config(config(128))]

    /// A bad value for a numeric field of a shipped file is reported, and at
    /// the line it is written on.
    #[test]
    fn config_bad_number_is_reported_on_its_line(
        which in 0..2usize,
        field in prop::sample::select(vec![
            "threads", "rate", "burst", "auth_failures_per_second", "retention_days",
        ]),
        nth in any::<prop::sample::Index>(),
        bad in prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("1.5".to_string()),
            Just("true".to_string()),
            Just("[1]".to_string()),
            Just("{ a: 1 }".to_string()),
            Just("184467440737095516160".to_string()),
            "[a-z]{1,8}",
            (i64::MIN..0).prop_map(|n| n.to_string()),
        ],
    ) {
        let (_, src) = shipped()[which];
        // Every `field: <number>` (block or flow style) in the file.
        let needle = format!("{field}: ");
        let skip = needle.len();
        let spots: Vec<(usize, usize)> = src
            .lines()
            .enumerate()
            .flat_map(|(i, l)| {
                l.match_indices(&needle)
                    .filter(|(at, _)| {
                        let before = l[..*at].chars().last();
                        matches!(before, None | Some(' ' | '{'))
                            && l[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit())
                    })
                    .map(move |(at, _)| (i, at + skip))
                    .collect::<Vec<_>>()
            })
            .collect();
        prop_assume!(!spots.is_empty());
        let (line, at) = spots[nth.index(spots.len())];
        let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
        let l = &mut lines[line];
        let end = l[at..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(l.len(), |e| at + e);
        l.replace_range(at..end, &bad);
        let mutated = lines.join("\n") + "\n";
        prop_assert!(!parses(&mutated)?, "{}: {} accepted:\n{}", field, bad, mutated);
        let errors = tg_config::parse(&mutated, "props.yaml").expect_err("checked above");
        prop_assert!(
            errors.0.iter().any(|e| e.line == line + 1),
            "no error on line {} for {} = {}: {}",
            line + 1,
            field,
            bad,
            errors
        );
    }
}

// --- keys ----------------------------------------------------------------------

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

// --- token buckets -------------------------------------------------------------

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// The longest span core's arithmetic works with (as the Redis script does):
/// slower policies are clamped to it. 2^50 µs, 35.7 years.
const MAX_SPAN_NS: u64 = (1 << 50) * 1_000;

/// A bucket's parameters as the arithmetic uses them: emission interval `t`
/// (ns), capacity in tokens, and the cost of a request (`burst + 1` for a
/// request that never fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effective {
    t: u64,
    burst: u64,
    cost: u64,
}

fn effective(l: &Limit) -> Effective {
    let t = l.emission_interval_ns().min(MAX_SPAN_NS);
    let burst = l.burst().min(MAX_SPAN_NS / t);
    let cost = if l.cost() > l.burst() {
        burst + 1
    } else {
        l.cost().min(burst)
    };
    Effective { t, burst, cost }
}

/// A plain token bucket, in exact integer "token × T" units: `level` ns worth
/// of tokens (`capacity` = burst × T), refilled one ns per ns. The reference
/// the GCRA arithmetic must equal.
#[derive(Debug, Clone)]
struct Model {
    level: u128,
    last: u64,
}

impl Model {
    fn full(e: Effective) -> Self {
        Model {
            level: u128::from(e.burst) * u128::from(e.t),
            last: 0,
        }
    }

    fn refill(&mut self, e: Effective, now: u64) {
        let cap = u128::from(e.burst) * u128::from(e.t);
        self.level = (self.level + u128::from(now.saturating_sub(self.last))).min(cap);
        self.last = self.last.max(now);
    }

    fn tokens(&self, e: Effective) -> u64 {
        u64::try_from(self.level / u128::from(e.t)).expect("≤ burst")
    }

    /// Whether a request fits now (after `refill`).
    fn fits(&self, e: Effective, cost: u64) -> bool {
        cost <= e.burst && self.level >= u128::from(cost) * u128::from(e.t)
    }

    fn take(&mut self, e: Effective, cost: u64) {
        self.level -= u128::from(cost) * u128::from(e.t);
    }

    /// ns until a request of `cost` fits.
    fn wait(&self, e: Effective, cost: u64) -> u64 {
        let need = u128::from(cost) * u128::from(e.t);
        u64::try_from(need.saturating_sub(self.level)).expect("fits")
    }
}

/// Policies: everyday ones (a per of ms to days, burst around the rate,
/// costs around 1) and absurd ones (a per of centuries or more, bursts of
/// millions), where overflow would show.
fn policy() -> impl Strategy<Value = (u64, Duration, u64)> {
    prop_oneof![
        4 => (
            1..=1_000u64,
            prop_oneof![
                (1..=2_000u64).prop_map(Duration::from_millis),
                (1..=86_400u64).prop_map(Duration::from_secs),
            ],
            1..=200u64,
        ),
        1 => (
            1..=10u64,
            prop_oneof![
                (1..=100_000u64).prop_map(|d| Duration::from_secs(d * 86_400)),
                Just(Duration::from_millis(u64::MAX)),
            ],
            prop_oneof![1..=20u64, 1_000..=2_000_000u64, Just(u64::MAX)],
        ),
    ]
}

fn limit_with(rate: u64, per: Duration, burst: u64, cost: u64) -> Limit {
    Limit {
        name: "l".into(),
        rate,
        per,
        burst: Some(burst),
        cost: Some(cost),
        quota: None,
        scope: Default::default(),
    }
}

/// One request: time since the previous one, and its cost.
fn requests(max_gap: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(0u64), 4 => 0..=max_gap, 1 => any::<u64>().prop_map(|g| g >> 2)],
            prop_oneof![6 => Just(1u64), 3 => 1..=8u64, 1 => 1..=300u64],
        ),
        1..120,
    )
}

/// Times stay below 2^62 ns (146 years): the local limiter's clock counts
/// from process start.
const MAX_NOW: u64 = 1 << 62;

fn times(start: u64, gaps: &[(u64, u64)]) -> Vec<u64> {
    let mut now = start;
    gaps.iter()
        .map(|&(gap, _)| {
            now = now.saturating_add(gap).min(MAX_NOW);
            now
        })
        .collect()
}

/// `(now, tokens taken, admitted)` of each request, on one bucket starting
/// full. The tokens taken are the request's cost, clamped with the burst for
/// absurd policies.
fn run_bucket(
    rate: u64,
    per: Duration,
    burst: u64,
    reqs: &[(u64, u64)],
    start: u64,
) -> Vec<(u64, u64, bool)> {
    let mut tat = 0;
    times(start, reqs)
        .into_iter()
        .zip(reqs)
        .map(|(now, &(_, cost))| {
            let l = limit_with(rate, per, burst, cost);
            let c = check_bucket(&l, tat, now);
            if c.allowed {
                tat = c.new_tat;
            }
            (now, effective(&l).cost, c.allowed)
        })
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    /// The bound: for every window [t0, t1] whose ends are request times,
    ///
    ///   Σ cost of admitted requests with t0 ≤ time ≤ t1  ≤  B + ⌊(t1 − t0) / T⌋
    ///
    /// where T = ⌊per / rate⌋ ns (the emission interval) and B = burst: the
    /// bucket holds at most B tokens at t0 (the "start-of-window full
    /// bucket") and earns one per T after. As T ≤ per / rate, this is at most
    /// B + rate × (t1 − t0) / per rounded down plus the truncation, and
    /// exactly B + ⌊rate × (t1 − t0) / per⌋ when rate divides per; that form
    /// is checked too. For absurd policies (B × T beyond 2^50 µs) B and T are
    /// the clamped values, as in the Redis script.
    #[test]
    fn bucket_admits_at_most_burst_plus_rate_times_window(
        (rate, per, burst) in policy(),
        reqs in requests(5 * S),
        start in prop_oneof![Just(1u64), 1..MAX_NOW / 2],
    ) {
        let e = effective(&limit_with(rate, per, burst, 1));
        let run = run_bucket(rate, per, burst, &reqs, start);
        let per_ns = per.as_nanos();
        let exact = per_ns % u128::from(rate) == 0 && e.t < MAX_SPAN_NS;
        for i in 0..run.len() {
            let t0 = run[i].0;
            let mut admitted = 0u128;
            for &(t1, cost, ok) in &run[i..] {
                if ok {
                    admitted += u128::from(cost);
                }
                let bound = u128::from(e.burst) + u128::from((t1 - t0) / e.t);
                prop_assert!(
                    admitted <= bound,
                    "[{}, {}]: admitted {} > {} (T {}, B {})", t0, t1, admitted, bound, e.t, e.burst
                );
                if exact {
                    let by_rate = u128::from(burst)
                        + u128::from(rate) * u128::from(t1 - t0) / per_ns;
                    prop_assert!(admitted <= by_rate, "{} > {}", admitted, by_rate);
                }
            }
        }
    }

    /// GCRA is exactly a token bucket: every decision, `remaining`,
    /// `retry_after` and `reset` equal a plain token-bucket model's; a refusal
    /// leaves the stored TAT as it was (takes nothing); and a refused request
    /// is admitted once its `retry_after` has passed (and not 1 ns before).
    #[test]
    fn bucket_equals_token_bucket_model(
        (rate, per, burst) in policy(),
        reqs in requests(3 * S),
        start in prop_oneof![Just(1u64), 1..MAX_NOW / 2],
    ) {
        let mut tat = 0u64;
        let base = limit_with(rate, per, burst, 1);
        let e0 = effective(&base);
        let mut model = Model::full(e0);
        model.last = start;
        let (mut admitted, mut refused) = (0, 0);
        for (now, &(_, cost)) in times(start, &reqs).into_iter().zip(&reqs) {
            let l = limit_with(rate, per, burst, cost);
            let e = effective(&l);
            model.refill(e, now);
            let c = check_bucket(&l, tat, now);
            let fits = model.fits(e, e.cost);
            prop_assert_eq!(c.allowed, fits, "now {}, cost {}, {:?}, {:?}", now, cost, e, model);
            if fits {
                admitted += 1;
                model.take(e, e.cost);
                prop_assert_eq!(c.remaining, model.tokens(e));
                prop_assert_eq!(c.retry_after_ns, 0);
                prop_assert!(c.new_tat >= now);
                tat = c.new_tat;
            } else {
                refused += 1;
                prop_assert_eq!(c.new_tat, tat, "a refusal takes nothing");
                prop_assert_eq!(c.remaining, model.tokens(e));
                if e.cost > e.burst {
                    prop_assert_eq!(c.retry_after_ns, u64::MAX);
                } else {
                    prop_assert_eq!(c.retry_after_ns, model.wait(e, e.cost));
                    prop_assert!(c.retry_after_ns > 0);
                    let later = now + c.retry_after_ns;
                    prop_assert!(check_bucket(&l, tat, later).allowed, "not admitted after retry_after");
                    prop_assert!(!check_bucket(&l, tat, later - 1).allowed, "retry_after longer than needed");
                }
            }
            // Reset: the bucket is full again after `reset_ns`, not before.
            let full = u128::from(e.burst) * u128::from(e.t);
            prop_assert_eq!(
                u128::from(c.reset_ns),
                full - model.level,
                "reset of {:?} at {}", c, now
            );
        }
        prop_assert_eq!(admitted + refused, reqs.len());
    }

    /// A whole request against several limits (`decide`): admitted only if
    /// each limit alone would admit it; a refusal returns no new TATs and
    /// reports every bucket as it stays (a non-violated one shows the tokens
    /// it has now, not minus the request); `Retry-After` is the longest wait
    /// of the violated limits, and waiting that long admits the request.
    #[test]
    fn decide_is_all_or_nothing(
        policies in prop::collection::vec((policy(), 1..=5u64), 1..4),
        reqs in requests(2 * S),
    ) {
        let limits: Vec<Limit> = policies
            .iter()
            .enumerate()
            .map(|(i, &((rate, per, burst), cost))| Limit {
                name: format!("l{i}"),
                rate,
                per,
                burst: Some(burst),
                cost: Some(cost),
                quota: None,
                scope: Default::default(),
            })
            .collect();
        let prepared: Vec<Policy> = limits.iter().map(Policy::new).collect();
        let refs: Vec<&Policy> = prepared.iter().collect();
        let mut tats = vec![0u64; limits.len()];
        let mut models: Vec<Model> = limits.iter().map(|l| Model::full(effective(l))).collect();
        for (now, _) in times(1, &reqs).into_iter().zip(&reqs) {
            let (d, new) = decide(&refs, &tats, now);
            for (m, l) in models.iter_mut().zip(&limits) {
                m.refill(effective(l), now);
            }
            let each: Vec<bool> = limits
                .iter()
                .zip(&models)
                .map(|(l, m)| m.fits(effective(l), effective(l).cost))
                .collect();
            prop_assert_eq!(d.allowed, each.iter().all(|&b| b));
            prop_assert_eq!(d.limits.len(), limits.len());
            for ((s, l), &fit) in d.limits.iter().zip(&limits).zip(&each) {
                prop_assert_eq!(&*s.name, l.name.as_str());
                prop_assert_eq!(s.quota, l.rate);
                prop_assert_eq!(s.violated, !fit);
            }
            match new {
                Some(new) => {
                    prop_assert!(d.allowed);
                    for ((m, l), s) in models.iter_mut().zip(&limits).zip(&d.limits) {
                        let e = effective(l);
                        m.take(e, e.cost);
                        prop_assert_eq!(s.remaining, m.tokens(e));
                    }
                    tats = new.to_vec();
                }
                None => {
                    prop_assert!(!d.allowed);
                    for ((m, l), s) in models.iter().zip(&limits).zip(&d.limits) {
                        prop_assert_eq!(s.remaining, m.tokens(effective(l)), "{:?}", s);
                    }
                    let retry = d.retry_after_secs();
                    let never = limits.iter().any(|l| l.cost() > l.burst());
                    let expected = limits
                        .iter()
                        .zip(&models)
                        .zip(&each)
                        .filter(|(_, &fit)| !fit)
                        .map(|((l, m), _)| {
                            let e = effective(l);
                            if e.cost > e.burst { limits::NEVER }
                            else { limits::ceil_secs(m.wait(e, e.cost)) }
                        })
                        .max()
                        .expect("a violated limit");
                    prop_assert_eq!(retry, expected);
                    if !never {
                        let later = now.saturating_add(retry.saturating_mul(S));
                        if later < MAX_NOW {
                            let (d2, _) = decide(&refs, &tats, later);
                            prop_assert!(d2.allowed, "refused again after Retry-After {}s", retry);
                        }
                    }
                }
            }
        }
    }
}

/// Regressions found by the properties above (kept as plain tests).
#[test]
fn absurd_policies_never_become_unlimited() {
    // One token per 100 years with a burst of 10: once the stored TAT passed
    // u64::MAX ns (584 years) it saturated, and from then on every request
    // was admitted.
    let l = limit_with(1, Duration::from_secs(36_500 * 86_400), 10, 1);
    let mut tat = 0;
    let admitted = (0..50)
        .filter(|_| {
            let c = check_bucket(&l, tat, S);
            if c.allowed {
                tat = c.new_tat;
            }
            c.allowed
        })
        .count();
    assert!(
        admitted <= 10,
        "{admitted} admitted at one instant, burst 10"
    );
    // One a day, a burst of a million (the Redis test's `huge`): clamped to
    // 2^50 µs worth of tokens, like the script, not unlimited.
    let l = limit_with(1, Duration::from_secs(86_400), 1_000_000, 1);
    let e = effective(&l);
    let c = check_bucket(&l, 0, S);
    assert!(c.allowed);
    assert_eq!(c.remaining, e.burst - 1);
    // A per of u64::MAX ms, burst 2.
    let l = limit_with(1, Duration::from_millis(u64::MAX), 2, 1);
    let mut tat = 0;
    let admitted = (0..10)
        .filter(|_| {
            let c = check_bucket(&l, tat, MS);
            if c.allowed {
                tat = c.new_tat;
            }
            c.allowed
        })
        .count();
    assert!(admitted <= 2, "{admitted}");
}
