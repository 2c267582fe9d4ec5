//! Path → position index of a YAML document.
//!
//! serde forgets where a value was written, so validation errors would have no
//! line and column. This module walks the document a second time with
//! `yaml-rust2`'s event parser, which reports a marker for every node, and
//! records where each node is, keyed by its *document path*:
//!
//! ```text
//! proxy.listen                 the value of `listen` in the `proxy` mapping
//! routes[2].upstream           `upstream` in the third route
//! plans.free.limits[0].rate    `rate` in the first limit of plan `free`
//! upstreams.demo.targets[1]    the second target of upstream `demo`
//! ```
//!
//! The root node has the empty path. Block and flow style are indexed alike.
//! Mapping keys are recorded too (every occurrence, so a repeated key can be
//! pointed at), and keys repeated within one mapping are collected as
//! [`DuplicateKey`]s.
//!
//! The index is best-effort: it never fails. A document `yaml-rust2` cannot
//! parse completely is indexed up to the first problem, and lookups of paths
//! that are not in the index fall back to the nearest indexed ancestor.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// A place in the source text; both numbers are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The very beginning of the document, used when nothing better is known.
    pub const START: Position = Position { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Position {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// A key written more than once in the same mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Path of the repeated entry, e.g. `plans.free`.
    pub path: String,
    /// The key as written.
    pub key: String,
    /// Where the repeated key is written.
    pub position: Position,
    /// Where the key was first written.
    pub first: Position,
}

/// Where every node of one YAML document is written.
#[derive(Debug, Clone, Default)]
pub struct PositionIndex {
    /// Value node positions, first occurrence of each path.
    values: HashMap<String, Position>,
    /// Key positions, every occurrence of each path in document order.
    keys: HashMap<String, Vec<Position>>,
    duplicates: Vec<DuplicateKey>,
}

/// Join a mapping key onto a parent path.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Join a sequence index onto a parent path.
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The path one level up (`routes[2].upstream` → `routes[2]` → `routes` → ``),
/// or `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

impl PositionIndex {
    /// Index the first document of `src`. Never fails and never panics: what
    /// cannot be parsed is simply not indexed.
    pub fn build(src: &str) -> Self {
        // yaml-rust2 is third-party code fed with arbitrary operator input
        // (and has internal assertions): a bug in it must cost us positions,
        // not the process.
        std::panic::catch_unwind(|| Builder::default().run(src)).unwrap_or_default()
    }

    /// Where the node at `path` is written, if it is in the document.
    pub fn get(&self, path: &str) -> Option<Position> {
        self.values.get(path).copied()
    }

    /// Where the key of the entry at `path` is written (first occurrence).
    pub fn key(&self, path: &str) -> Option<Position> {
        self.key_occurrence(path, 0)
    }

    /// Where the `n`-th (0-based) occurrence of the key at `path` is written.
    pub fn key_occurrence(&self, path: &str, n: usize) -> Option<Position> {
        self.keys.get(path).and_then(|v| v.get(n)).copied()
    }

    /// The position of `path`, or of its nearest indexed ancestor, or the
    /// start of the document.
    pub fn locate(&self, path: &str) -> Position {
        let mut p = Some(path);
        while let Some(cur) = p {
            if let Some(pos) = self.get(cur) {
                return pos;
            }
            p = parent(cur);
        }
        Position::START
    }

    /// Where to report a required field that is missing: its key if it is
    /// written with no value, else the mapping that should contain it.
    pub fn missing(&self, path: &str) -> Position {
        match self.key(path) {
            Some(pos) => pos,
            None => parent(path).map_or(Position::START, |p| self.locate(p)),
        }
    }

    /// Keys written more than once in the same mapping, in document order.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read: the path of the value that comes next.
        pending_key: Option<String>,
        /// Whether this mapping's entry in `values` was inserted by it (and
        /// may thus be corrected when its first key is seen).
        owns_entry: bool,
        start: Marker,
        first_key_seen: bool,
        /// Scalar keys already seen → where.
        seen: HashMap<String, Position>,
        complex_keys: usize,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    index: PositionIndex,
    stack: Vec<Frame>,
    root_done: bool,
}

impl Builder {
    fn run(mut self, src: &str) -> PositionIndex {
        let mut parser = Parser::new_from_str(src);
        // Stop at the first error, the end of the stream, or the end of the
        // first document (serde rejects files with more than one).
        while let Ok((event, mark)) = parser.next_token() {
            if self.root_done {
                break;
            }
            match event {
                Event::StreamEnd | Event::DocumentEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentStart => {}
                Event::Scalar(text, ..) => {
                    self.place(Some(&text), mark);
                    self.root_done = self.stack.is_empty();
                }
                Event::Alias(_) => {
                    self.place(None, mark);
                    self.root_done = self.stack.is_empty();
                }
                Event::MappingStart(..) => {
                    let (path, owns_entry) = self.place(None, mark);
                    self.stack.push(Frame::Mapping {
                        path,
                        pending_key: None,
                        owns_entry,
                        start: mark,
                        first_key_seen: false,
                        seen: HashMap::new(),
                        complex_keys: 0,
                    });
                }
                Event::SequenceStart(..) => {
                    let (path, _) = self.place(None, mark);
                    self.stack.push(Frame::Sequence { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    self.stack.pop();
                    self.root_done = self.stack.is_empty();
                }
            }
        }
        self.index
    }

    /// Record a node that starts at `mark` (`scalar` is its text if it is a
    /// scalar) according to its place in the enclosing collection. Returns
    /// the node's path and whether its value position was newly recorded.
    fn place(&mut self, scalar: Option<&str>, mark: Marker) -> (String, bool) {
        let pos = Position::from_marker(mark);
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Sequence { path, next }) => {
                *next += 1;
                item(path, *next - 1)
            }
            Some(Frame::Mapping {
                pending_key: pending @ Some(_),
                ..
            }) => pending.take().unwrap_or_default(),
            Some(Frame::Mapping {
                path,
                pending_key,
                owns_entry,
                start,
                first_key_seen,
                seen,
                complex_keys,
            }) => {
                // This node is a key.
                if !*first_key_seen {
                    *first_key_seen = true;
                    // A block mapping's start marker lies just after its
                    // first key; the key is where the mapping really starts.
                    if *owns_entry && mark.index() < start.index() {
                        self.index.values.insert(path.clone(), pos);
                    }
                }
                let key_path = match scalar {
                    Some(key) => {
                        let key_path = child(path, key);
                        match seen.get(key) {
                            Some(first) => self.index.duplicates.push(DuplicateKey {
                                path: key_path.clone(),
                                key: key.to_string(),
                                position: pos,
                                first: *first,
                            }),
                            None => {
                                seen.insert(key.to_string(), pos);
                            }
                        }
                        key_path
                    }
                    None => {
                        // A collection or alias as key: its value is indexed
                        // under a name no lookup will ask for.
                        *complex_keys += 1;
                        child(path, &format!("<complex key {complex_keys}>"))
                    }
                };
                self.index
                    .keys
                    .entry(key_path.clone())
                    .or_default()
                    .push(pos);
                // A collection used as a key gets a scratch path of its own.
                let key_node = child(&key_path, "<key>");
                *pending_key = Some(key_path);
                return (key_node, false);
            }
        };
        let fresh = !self.index.values.contains_key(&path);
        if fresh {
            self.index.values.insert(path.clone(), pos);
        }
        (path, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    const BLOCK: &str = "\
proxy:
  listen: \"127.0.0.1:8080\"
plans:
  free:
    limits:
      - name: minute
        rate: 60
upstreams:
  demo:
    targets:
      - 127.0.0.1:3001
      - \"127.0.0.1:3002\"
routes:
- name: a
  upstream: demo
- name: b
";

    #[test]
    fn block_style() {
        let idx = PositionIndex::build(BLOCK);
        assert_eq!(idx.get(""), at(1, 1));
        assert_eq!(idx.get("proxy"), at(2, 3));
        assert_eq!(idx.get("proxy.listen"), at(2, 11));
        assert_eq!(idx.get("plans.free.limits"), at(6, 7));
        assert_eq!(idx.get("plans.free.limits[0]"), at(6, 9));
        assert_eq!(idx.get("plans.free.limits[0].name"), at(6, 15));
        assert_eq!(idx.get("plans.free.limits[0].rate"), at(7, 15));
        assert_eq!(idx.get("upstreams.demo.targets[0]"), at(11, 9));
        assert_eq!(idx.get("upstreams.demo.targets[1]"), at(12, 9));
        // An indentless sequence.
        assert_eq!(idx.get("routes[0]"), at(14, 3));
        assert_eq!(idx.get("routes[0].upstream"), at(15, 13));
        assert_eq!(idx.get("routes[1].name"), at(16, 9));
        assert_eq!(idx.get("routes[2]"), None);
        assert_eq!(idx.key("proxy.listen"), at(2, 3));
        assert_eq!(idx.key("routes[1].name"), at(16, 3));
        assert!(idx.duplicates().is_empty());
    }

    #[test]
    fn flow_style() {
        let src = "\
plans:
  free: { limits: [ { name: minute, rate: 60, per: 1m } ] }
upstreams: { demo: { targets: [\"a:1\", b:2] } }
routes: [ { name: a, match: { path_prefix: /a, methods: [GET, POST] }, upstream: demo } ]
";
        let idx = PositionIndex::build(src);
        assert_eq!(idx.get("plans.free"), at(2, 9));
        assert_eq!(idx.get("plans.free.limits"), at(2, 19));
        assert_eq!(idx.get("plans.free.limits[0]"), at(2, 21));
        assert_eq!(idx.get("plans.free.limits[0].rate"), at(2, 43));
        assert_eq!(idx.get("plans.free.limits[0].per"), at(2, 52));
        assert_eq!(idx.get("upstreams.demo.targets[0]"), at(3, 32));
        assert_eq!(idx.get("upstreams.demo.targets[1]"), at(3, 39));
        assert_eq!(idx.get("routes[0]"), at(4, 11));
        assert_eq!(idx.get("routes[0].match.methods[1]"), at(4, 63));
        assert_eq!(idx.get("routes[0].upstream"), at(4, 82));
        assert_eq!(idx.key("routes[0].upstream"), at(4, 72));
    }

    #[test]
    fn missing_fields_point_at_their_key_or_mapping() {
        let src = "routes:\n  - name: a\n    upstream:\n    match: { methods: [GET] }\n";
        let idx = PositionIndex::build(src);
        // Written without a value: the key.
        assert_eq!(
            idx.missing("routes[0].upstream"),
            Position { line: 3, column: 5 }
        );
        // Not written: the mapping that should hold it.
        assert_eq!(
            idx.missing("routes[0].auth"),
            Position { line: 2, column: 5 }
        );
        assert_eq!(
            idx.missing("routes[0].match.path_prefix"),
            Position {
                line: 4,
                column: 12
            }
        );
        assert_eq!(idx.missing("proxy.listen"), Position::START);
    }

    #[test]
    fn locate_falls_back_to_ancestors() {
        let idx = PositionIndex::build("routes:\n  - name: a\n");
        assert_eq!(
            idx.locate("routes[0].match.path_prefix"),
            Position { line: 2, column: 5 }
        );
        assert_eq!(idx.locate("routes[7]"), Position { line: 2, column: 3 });
        assert_eq!(idx.locate("nothing.here"), Position { line: 1, column: 1 });
    }

    #[test]
    fn parents() {
        assert_eq!(parent("routes[2].upstream"), Some("routes[2]"));
        assert_eq!(parent("routes[2]"), Some("routes"));
        assert_eq!(parent("routes"), Some(""));
        assert_eq!(parent("a.b[0][1]"), Some("a.b[0]"));
        assert_eq!(parent(""), None);
        assert_eq!(child("", "a"), "a");
        assert_eq!(child("a", "b"), "a.b");
        assert_eq!(item("a", 3), "a[3]");
    }

    #[test]
    fn repeated_keys_are_collected_per_mapping() {
        let src = "a: {x: 1}\nb: {x: 2, y: 3, x: 4}\na: 5\n";
        let idx = PositionIndex::build(src);
        let d: Vec<(&str, Position, Position)> = idx
            .duplicates()
            .iter()
            .map(|d| (d.path.as_str(), d.position, d.first))
            .collect();
        assert_eq!(
            d,
            vec![
                (
                    "b.x",
                    Position {
                        line: 2,
                        column: 17
                    },
                    Position { line: 2, column: 5 }
                ),
                (
                    "a",
                    Position { line: 3, column: 1 },
                    Position { line: 1, column: 1 }
                ),
            ]
        );
        // Values: the first occurrence; keys: every occurrence.
        assert_eq!(idx.get("a"), at(1, 4));
        assert_eq!(idx.key_occurrence("a", 1), at(3, 1));
        assert_eq!(idx.key_occurrence("a", 2), None);
    }

    #[test]
    fn unicode_columns_count_characters() {
        let idx = PositionIndex::build("\"é\u{1F600}\": { k: v }\n");
        assert_eq!(idx.get("é\u{1F600}.k"), at(1, 12));
    }

    #[test]
    fn odd_documents() {
        // Broken YAML: indexed up to the error.
        let idx = PositionIndex::build("a: 1\nb: [1, 2\n");
        assert_eq!(idx.get("a"), at(1, 4));
        assert_eq!(idx.get("b[1]"), at(2, 8));
        // Aliases are positioned where they are written.
        let idx = PositionIndex::build("a: &x {k: 1}\nb: *x\n");
        assert_eq!(idx.get("b"), at(2, 4));
        assert_eq!(idx.get("b.k"), None);
        // Complex keys are skipped, what follows is still indexed.
        let idx = PositionIndex::build("? [1, 2]\n: 3\nz: 4\n");
        assert_eq!(idx.get("z"), at(3, 4));
        // A scalar document, several documents, nothing at all.
        assert_eq!(PositionIndex::build("hello").get(""), at(1, 1));
        let idx = PositionIndex::build("a: 1\n---\nb: 2\n");
        assert_eq!((idx.get("a"), idx.get("b")), (at(1, 4), None));
        assert_eq!(PositionIndex::build("").get(""), None);
        for garbage in ["[[[", "\t", "}{", "&a *a", "? ? ?", "\u{0}"] {
            let _ = PositionIndex::build(garbage);
        }
    }
}
