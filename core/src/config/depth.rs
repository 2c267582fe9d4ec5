//! A cheap bound on YAML nesting, checked before the text reaches a YAML
//! parser. Parsers take time that grows with the square of the nesting depth
//! (`[[[[…]]]]`: 20,000 levels take seconds, the 8 MiB file cap allows
//! hours), and a reload that stalls keeps key refresh and health checks
//! waiting. Tollgate's schema nests about eight levels; anything past
//! [`MAX_DEPTH`] is refused at once, with its position.

/// Deepest nesting accepted: flow collections, block indentation levels and
/// `- ` entries on one line, counted together.
pub const MAX_DEPTH: usize = 64;

/// Where the text first nests deeper than [`MAX_DEPTH`]: 1-based line and
/// column, or `None` when it stays within the bound.
pub fn too_deep(src: &str) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in src.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if flow == 0 {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut dashes = 0usize;
        let mut leading = flow == 0;
        for (col, c) in body.char_indices() {
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '\'' | '"' if prev == ' ' || "[{,:".contains(prev) => quote = Some(c),
                    '#' if prev == ' ' || prev == '\t' => break,
                    '[' | '{' => flow += 1,
                    ']' | '}' => flow = flow.saturating_sub(1),
                    '-' if leading => dashes += 1,
                    ' ' | '\t' => {}
                    _ => leading = false,
                },
            }
            if !matches!(c, '-' | ' ' | '\t') {
                leading = false;
            }
            prev = c;
            if indents.len() + dashes + flow > MAX_DEPTH {
                return Some((n + 1, indent + col + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configs_pass() {
        let src = "proxy:\n  listen: \"0.0.0.0:8080\"\nplans:\n  free: { limits: [ { name: s, rate: 1, per: 1s } ] }\nroutes:\n  - name: a\n    match: { path_prefix: /a, methods: [GET, POST] }\n    limits:\n      - { name: x, rate: 5, per: 1m }\n";
        assert_eq!(too_deep(src), None);
        // Brackets inside strings and comments do not count.
        let quoted = format!("a: \"{}\" # {}\n", "[".repeat(500), "{".repeat(500));
        assert_eq!(too_deep(&quoted), None);
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_its_position() {
        let src = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let (line, col) = too_deep(&src).expect("refused");
        assert_eq!(line, 1);
        assert!(col <= MAX_DEPTH + 4, "{col}");
        assert!(too_deep(&format!("a: {}{}\n", "[".repeat(40), "]".repeat(40))).is_none());
    }

    #[test]
    fn deep_block_nesting_and_sequences_are_refused() {
        let mut block = String::new();
        for d in 0..100 {
            block.push_str(&" ".repeat(d));
            block.push_str("k:\n");
        }
        assert_eq!(too_deep(&block).map(|p| p.0), Some(MAX_DEPTH + 1));
        let dashes = format!("{}x\n", "- ".repeat(100));
        assert!(too_deep(&dashes).is_some());
        assert!(too_deep(&format!("{}x\n", "- ".repeat(10))).is_none());
    }

    #[test]
    fn closing_brackets_across_lines_are_tracked() {
        let mut src = String::from("a:\n");
        for _ in 0..200 {
            src.push_str("  [1]\n");
        }
        assert_eq!(too_deep(&src), None);
    }
}
