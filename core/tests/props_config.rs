//! Property tests (issue #9, item 5) of the config parser: any text or
//! bytes, YAML-like text and mutations of the shipped configs give a config
//! or errors positioned inside the text, never a panic; a bad number is
//! reported on its line. Each property states what it checks; the case
//! counts keep the file to a few seconds.

use proptest::prelude::*;
use tollgate_core::config::{self as tg_config, ConfigErrors};

use crate::common::config;

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
