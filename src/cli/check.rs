//! `tollgate check-config FILE`: the YAML (core's validation, every problem
//! with its `FILE:LINE:COLUMN`), then the TLS files it names — the listener's
//! certificate and key (`proxy.tls.*`) and every upstream's `tls.ca_file` —
//! read and parsed as the proxy will, each problem reported at the setting
//! that names the file.
//!
//! Core's position index is private to its validation, so the settings are
//! located here by [`locate`], a small scanner that follows mapping keys
//! through block and flow style (all these settings are mappings from the
//! root); a setting it cannot find is reported at its nearest located parent.

use std::path::Path;
use std::process::ExitCode;

use tollgate_core::config::{self, Config};
use tollgate_proxy::tls;

/// Validate `file`; unless `skip_files`, also the TLS files it names.
pub fn run(file: &Path, skip_files: bool) -> ExitCode {
    let config = match config::load(file) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let problems = if skip_files {
        Vec::new()
    } else {
        // `load` just read it; a file replaced in between only loses positions.
        let src = std::fs::read_to_string(file).unwrap_or_default();
        tls_file_problems(&config, &src, &file.display().to_string())
    };
    if problems.is_empty() {
        println!("{}: {}", file.display(), config.summary());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        ExitCode::FAILURE
    }
}

/// One `FILE:LINE:COLUMN: setting (path): reason` line per unusable TLS file.
pub fn tls_file_problems(config: &Config, src: &str, file: &str) -> Vec<String> {
    let mut found: Vec<(Vec<String>, tls::TlsError)> = Vec::new();
    if let Some(listener) = &config.proxy.tls {
        for e in tls::check_listener_files(listener) {
            let leaf = e.setting.rsplit('.').next().unwrap_or("cert").to_string();
            found.push((vec!["proxy".into(), "tls".into(), leaf], e));
        }
    }
    for (name, upstream) in &config.upstreams {
        if let Some(path) = &upstream.tls.ca_file {
            let setting = format!("upstreams.{name}.tls.ca_file");
            if let Err(e) = tls::load_ca_file(&setting, path) {
                let keys = ["upstreams", name.as_str(), "tls", "ca_file"];
                found.push((keys.map(String::from).to_vec(), e));
            }
        }
    }
    let mut lines: Vec<(Position, String)> = found
        .into_iter()
        .map(|(keys, e)| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let pos = (0..=keys.len())
                .rev()
                .find_map(|n| locate(src, &keys[..n]))
                .unwrap_or(Position { line: 1, column: 1 });
            (pos, format!("{file}:{}:{}: {e}", pos.line, pos.column))
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

/// 1-based line and column (in characters), as core reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

fn position(src: &str, offset: usize) -> Position {
    let before = &src[..offset.min(src.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Where the value of the mapping entry at `keys` (from the root) is written:
/// its first character, or the key itself when the value is not on the key's
/// line. The empty path is the document's start. `None` if the path is not
/// written as plain mapping keys (e.g. through a merge key or an alias).
pub fn locate(src: &str, keys: &[&str]) -> Option<Position> {
    if keys.is_empty() {
        return Some(Position { line: 1, column: 1 });
    }
    locate_offset(src, keys).map(|o| position(src, o))
}

fn locate_offset(src: &str, keys: &[&str]) -> Option<usize> {
    let b = src.as_bytes();
    // Open block entries: (indent, key; `None` for a sequence item).
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    // Lines starting before this offset continue a flow collection.
    let mut skip_until = 0usize;
    let mut line_start = 0usize;
    while line_start < b.len() {
        let line_end = src[line_start..]
            .find('\n')
            .map_or(b.len(), |i| line_start + i);
        if line_start < skip_until {
            line_start = line_end + 1;
            continue;
        }
        let mut i = line_start;
        while i < line_end && b[i] == b' ' {
            i += 1;
        }
        let rest = &src[i..line_end];
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
            line_start = line_end + 1;
            continue;
        }
        // Sequence items ("- ", possibly nested): nothing under them is on
        // a path of mapping keys.
        while i < line_end && b[i] == b'-' && (i + 1 == line_end || b[i + 1] == b' ') {
            let indent = i - line_start;
            stack.retain(|(n, _)| *n < indent);
            stack.push((indent, None));
            i += 1;
            while i < line_end && b[i] == b' ' {
                i += 1;
            }
        }
        let indent = i - line_start;
        let Some((key, after_colon)) = block_key(src, i, line_end) else {
            // A scalar or flow item in a sequence, or something else: skip
            // any flow collection it opens.
            if i < line_end && matches!(b[i], b'{' | b'[') {
                skip_until = skip_flow(b, i);
            }
            line_start = line_end + 1;
            continue;
        };
        stack.retain(|(n, _)| *n < indent);
        let on_path = stack.len() < keys.len()
            && stack
                .iter()
                .zip(keys)
                .all(|((_, k), want)| k.as_deref() == Some(*want));
        let depth = stack.len();
        stack.push((indent, Some(key.clone())));
        let mut v = after_colon;
        while v < line_end && b[v] == b' ' {
            v += 1;
        }
        let has_value = v < line_end && b[v] != b'#';
        if on_path && key == keys[depth] {
            if depth + 1 == keys.len() {
                return Some(if has_value { v } else { i });
            }
            if has_value && b[v] == b'{' {
                return flow_find(b, v, &keys[depth + 1..]);
            }
        }
        if has_value && matches!(b[v], b'{' | b'[') {
            skip_until = skip_flow(b, v);
        }
        line_start = line_end + 1;
    }
    None
}

/// A block mapping key starting at `i`: the key and the offset after its `:`.
fn block_key(src: &str, i: usize, end: usize) -> Option<(String, usize)> {
    let b = src.as_bytes();
    if i >= end {
        return None;
    }
    if matches!(b[i], b'"' | b'\'') {
        let close = skip_quoted(b, i);
        let key = unquote(&src[i..close.min(end)]);
        let mut j = close;
        while j < end && b[j] == b' ' {
            j += 1;
        }
        return (j < end && b[j] == b':').then_some((key, j + 1));
    }
    if matches!(b[i], b'{' | b'[' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>') {
        return None;
    }
    let mut j = i;
    while j < end {
        if b[j] == b':' && (j + 1 == end || b[j + 1] == b' ') {
            return Some((src[i..j].trim_end().to_string(), j + 1));
        }
        if b[j] == b'#' && j > i && b[j - 1] == b' ' {
            return None;
        }
        j += 1;
    }
    None
}

/// Inside the flow mapping opening at `open` (`{`), where the value at `keys` is.
fn flow_find(b: &[u8], open: usize, keys: &[&str]) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i = skip_space(b, i);
        if i >= b.len() || b[i] == b'}' {
            return None;
        }
        let key_start = i;
        let key_end = if matches!(b[i], b'"' | b'\'') {
            skip_quoted(b, i)
        } else {
            let mut j = i;
            while j < b.len()
                && !matches!(b[j], b',' | b'}' | b'\n')
                && !(b[j] == b':'
                    && b.get(j + 1)
                        .is_none_or(|c| matches!(c, b' ' | b'\n' | b',' | b'}')))
            {
                j += 1;
            }
            j
        };
        let key = unquote(String::from_utf8_lossy(&b[key_start..key_end]).trim_end());
        i = skip_space(b, key_end);
        if i >= b.len() || b[i] != b':' {
            // A key without a value: on to the next entry.
            i = skip_scalar(b, i);
        } else {
            i = skip_space(b, i + 1);
            if key == keys[0] {
                if keys.len() == 1 {
                    return Some(i);
                }
                if b.get(i) == Some(&b'{') {
                    return flow_find(b, i, &keys[1..]);
                }
                return None;
            }
            i = match b.get(i) {
                Some(b'{' | b'[') => skip_flow(b, i),
                Some(b'"' | b'\'') => skip_quoted(b, i),
                _ => skip_scalar(b, i),
            };
        }
        i = skip_space(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// Spaces, line breaks and comments.
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    i
}

/// A plain scalar inside a flow collection: up to `,`, `}` or `]`.
fn skip_scalar(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !matches!(b[i], b',' | b'}' | b']') {
        i += 1;
    }
    i
}

/// A quoted scalar opening at `i`; the offset after its closing quote.
fn skip_quoted(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if q == b'"' && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if q == b'\'' && b.get(j + 1) == Some(&b'\'') {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// The flow collection opening at `i`; the offset after it closes.
fn skip_flow(b: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            b'"' | b'\'' => {
                j = skip_quoted(b, j);
                continue;
            }
            b'#' if j > 0 && matches!(b[j - 1], b' ' | b'\n') => {
                while j < b.len() && b[j] != b'\n' {
                    j += 1;
                }
                continue;
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: &str, path: &str) -> Option<(usize, usize)> {
        let keys: Vec<&str> = path.split('.').collect();
        locate(src, &keys).map(|p| (p.line, p.column))
    }

    #[test]
    fn block_and_flow_settings_are_located() {
        let src = "\
# comment
proxy:
  listen: \"127.0.0.1:8080\"   # a comment
  tls:
    listen: \"0.0.0.0:8443\"
    cert: /etc/tls/fullchain.pem
    key:
      /etc/tls/privkey.pem
routes:
  - name: a
    upstream: demo
    tls: { ca_file: not-this-one }
upstreams:
  demo: { targets: [\"127.0.0.1:3001\", \"127.0.0.1:3002\"], health_check: { path: /h, interval: 5s },
          tls: { sni: x.example, 'ca_file': \"ca.pem\" } }
  other:
    targets: [\"https://b.example\"]
    tls: {ca_file: other-ca.pem}
  \"quoted\":
    tls:
      ca_file: q.pem
";
        assert_eq!(at(src, "proxy.tls.cert"), Some((6, 11)));
        assert_eq!(
            at(src, "proxy.tls.key"),
            Some((7, 5)),
            "value on the next line: the key"
        );
        assert_eq!(at(src, "proxy.listen"), Some((3, 11)));
        assert_eq!(at(src, "upstreams.demo.tls.ca_file"), Some((15, 45)));
        assert_eq!(at(src, "upstreams.other.tls.ca_file"), Some((18, 20)));
        assert_eq!(at(src, "upstreams.quoted.tls.ca_file"), Some((21, 16)));
        assert_eq!(at(src, "upstreams.demo.tls.verify"), None);
        assert_eq!(at(src, "upstreams.demo"), Some((14, 9)));
        assert_eq!(at(src, "tls.ca_file"), None, "not the route's");
        assert_eq!(locate(src, &[]), Some(Position { line: 1, column: 1 }));
    }

    #[test]
    fn odd_input_finds_nothing_and_never_panics() {
        for src in [
            "",
            "proxy",
            "proxy:\n  tls: {",
            "proxy: { tls: { cert: \"x",
            "- a\n- b: {\n",
            "é: {é: 'é''",
            "proxy:\n\ttls: x",
        ] {
            let _ = locate(src, &["proxy", "tls", "cert"]);
            let _ = locate(src, &["é", "é"]);
        }
        assert_eq!(at("é: { ü: 1, tls: { cert: c } }", "tls.cert"), None);
        assert_eq!(at("é: { ü: 1, cert: c }", "é.cert"), Some((1, 18)));
    }
}
