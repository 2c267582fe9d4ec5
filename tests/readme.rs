//! The README's Quick start stays true: the lines `tollgate dev` prints are
//! exactly the ones the README shows (ports mapped back to the defaults, `…`
//! standing for a password or the secret part of a key).

use std::time::{Duration, Instant};

use crate::common::Dev;

/// The fenced block that follows "`tollgate dev` prints:" in README.md.
fn readme_dev_block() -> Vec<String> {
    let readme = include_str!("../README.md");
    let after = readme
        .split_once("`tollgate dev` prints:")
        .expect("README has a \"`tollgate dev` prints:\" block")
        .1;
    let mut lines = after.lines().skip_while(|l| !l.starts_with("```"));
    assert!(lines.next().is_some(), "the block opens with ```");
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// `pattern` with each `…` standing for one or more characters.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = parts.split_first().expect("split yields one part");
    let Some(mut line) = line.strip_prefix(first) else {
        return false;
    };
    if rest.is_empty() {
        return line.is_empty();
    }
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        // The wildcard before `part` takes at least one character.
        let Some(after_one) = line.chars().next().map(|c| &line[c.len_utf8()..]) else {
            return false;
        };
        if last {
            return after_one.ends_with(part);
        }
        let Some(at) = after_one.find(part) else {
            return false;
        };
        line = &after_one[at + part.len()..];
    }
    unreachable!("the last part returns")
}

#[test]
fn the_pattern_matcher_can_fail() {
    assert!(matches("demo key: tg_…", "demo key: tg_abc"));
    assert!(!matches("demo key: tg_…", "demo key: tg_"));
    assert!(!matches("demo key: tg_…", "demo key: xx_abc"));
    assert!(matches("a …/x", "a b/x"));
    assert!(!matches("a …/x", "a b/y"));
    assert!(!matches(
        "proxy: http://127.0.0.1:8080",
        "proxy: http://127.0.0.1:8081"
    ));
}

#[test]
fn dev_prints_what_the_readme_quick_start_shows() {
    let expected = readme_dev_block();
    assert!(expected.len() >= 5, "README block: {expected:?}");
    let dev = Dev::start(&[], &[]);
    let p = &dev.ports;
    // Map the test's free ports back to the defaults the README shows.
    let printed = || -> Vec<String> {
        dev.lines()
            .into_iter()
            .map(|l| {
                l.replace(&format!(":{}", p.proxy), ":8080")
                    .replace(&format!(":{}", p.admin), ":8081")
                    .replace(&format!(":{}", p.metrics), ":9091")
                    .replace(&format!(":{}", p.upstream), ":3001")
            })
            .collect()
    };
    let start = Instant::now();
    while printed().len() < expected.len() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let printed = printed();
    assert_eq!(
        printed.len(),
        expected.len(),
        "dev printed {printed:#?}, the README shows {expected:#?}"
    );
    for (line, pattern) in printed.iter().zip(&expected) {
        assert!(
            matches(pattern, line),
            "dev printed {line:?} where the README shows {pattern:?}"
        );
    }
    // The `tg_…` the README shows is a real key of the documented shape.
    let key = dev.line("demo key: ").expect("demo key");
    tollgate_core::keys::validate(&key).expect("the demo key has the key format");
    assert!(printed
        .iter()
        .any(|l| l.contains(&format!("'x-api-key: {key}'"))));
}
