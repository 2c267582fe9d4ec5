//! Rules for configs that are served (the proxy at start and on every reload,
//! `check-config`) and for watching the file, shared by the proxy and the
//! admin role so that both reload the same way.
//!
//! - A config without routes is refused unless it says so with an explicit
//!   `routes: []`: an empty or truncated file (a failed `cmd > tollgate.yaml`)
//!   would otherwise answer every request with 404.
//! - A changed file is applied only once its content has stayed the same for
//!   [`RELOAD_SETTLE`] (a half-written file is not read as a config), and a
//!   file that cannot be read (deleted, permissions) is reported once per
//!   episode while the running config stays.
//! - A plan name may be defined in the YAML or in the database, never both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::position::PositionIndex;
use super::{parse, Config, ConfigError, ConfigErrors};

/// How often a watched config file is looked at.
pub const RELOAD_POLL: Duration = Duration::from_millis(250);
/// How long a changed file must keep the same content before it is applied.
pub const RELOAD_SETTLE: Duration = Duration::from_secs(1);
/// A config file larger than this is not read (it is not a config).
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// [`parse`], then refuse a config without routes unless its file says
/// `routes: []` explicitly.
pub fn parse_for_serving(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    let config = parse(src, file)?;
    if config.routes.is_empty() && !explicitly_without_routes(src) {
        let pos = PositionIndex::build(src).key("routes");
        let (line, column) = pos.map_or((1, 1), |p| (p.line, p.column));
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: NO_ROUTES.to_string(),
        }]));
    }
    let empty = keys_without_value(src);
    if !empty.is_empty() {
        let index = PositionIndex::build(src);
        return Err(ConfigErrors(
            empty
                .into_iter()
                .map(|path| {
                    let pos = index.key(&path).unwrap_or_else(|| index.locate(&path));
                    ConfigError {
                        file: file.to_string(),
                        line: pos.line,
                        column: pos.column,
                        message: format!("{path}: {NO_VALUE}"),
                    }
                })
                .collect(),
        ));
    }
    Ok(config)
}

/// Why a key written without a value is refused in a served config.
pub const NO_VALUE: &str = "has no value (a truncated file?); give it one or remove the key \
     (`[]` or `{}` for an empty list or mapping)";

/// The document paths of mapping keys written with no value (`limits:` at
/// the end of a cut-off file reads as null, which would silently mean "no
/// limits"). At most 20 are reported.
fn keys_without_value(src: &str) -> Vec<String> {
    fn walk(v: &serde_yaml::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(k) = k.as_str() else { continue };
                    let p = super::position::child(path, k);
                    if v.is_null() {
                        out.push(p);
                    } else {
                        walk(v, &p, out);
                    }
                }
            }
            serde_yaml::Value::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &super::position::item(path, i), out);
                }
            }
            serde_yaml::Value::Tagged(t) => walk(&t.value, path, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(src) {
        walk(&doc, "", &mut out);
    }
    out.truncate(20);
    out
}

/// Why a config without routes is refused.
pub const NO_ROUTES: &str = "routes: the config has no routes (an empty or truncated file?); \
     write `routes: []` to run without routes on purpose";

/// Read `path` and [`parse_for_serving`] it.
pub fn load_for_serving(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let src = super::read_file(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 1,
            column: 1,
            message,
        }])
    })?;
    let mut config = parse_for_serving(&src, &name)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Whether the document holds `routes: []` (an empty sequence, not a null or
/// a missing section).
fn explicitly_without_routes(src: &str) -> bool {
    super::raw::from_str(src).is_ok_and(|raw| raw.routes.is_some_and(|r| r.is_empty()))
}

/// The plan names defined both in the YAML and in the database, sorted.
pub fn plan_conflicts<'a>(
    config: &Config,
    database_plans: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut both: Vec<String> = database_plans
        .into_iter()
        .filter(|name| config.plans.contains_key(*name))
        .map(str::to_string)
        .collect();
    both.sort();
    both.dedup();
    both
}

/// The message for [`plan_conflicts`] (empty input: `None`).
pub fn plan_conflict_message(names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let list = names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "plan {list} is defined both in the YAML config and in the database: \
         delete the database plan (DELETE /api/plans/NAME) or rename the YAML plan"
    ))
}

/// What one look at a watched file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Nothing to do (unchanged, still settling, or still unreadable).
    Nothing,
    /// The file changed and has kept this content for [`RELOAD_SETTLE`]:
    /// validate and apply it.
    Changed(String),
    /// The file cannot be read (first look of an episode): report it, keep
    /// the running config.
    Unreadable(String),
    /// The file is readable again after [`WatchEvent::Unreadable`].
    Readable,
    /// The content last refused ([`FileWatch::refused`]), unchanged, to be
    /// checked again: a refusal may come from outside the file (a database
    /// plan of the same name, since deleted; a TLS file, since fixed).
    Retry(String),
}

/// How often a refused, unchanged config is checked again.
pub const RETRY_REFUSED: Duration = Duration::from_secs(5);

/// Watches one config file by content (mtimes can be coarse or lie).
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    settle: Duration,
    /// The content last handed out (or the one running at start).
    current: Option<String>,
    /// A new content and since when it has been seen unchanged.
    candidate: Option<(String, Instant)>,
    unreadable: bool,
    /// When the content last handed out was refused, if it was.
    refused_at: Option<Instant>,
}

impl FileWatch {
    /// Watch `path`; `running` is the text of the config in use (if read from it).
    pub fn new(path: PathBuf, settle: Duration, running: Option<String>) -> Self {
        Self {
            path,
            settle,
            current: running,
            candidate: None,
            unreadable: false,
            refused_at: None,
        }
    }

    /// The content last handed out was refused at `now`: hand it out again
    /// as [`WatchEvent::Retry`] every [`RETRY_REFUSED`] while unchanged.
    pub fn refused(&mut self, now: Instant) {
        self.refused_at = Some(now);
    }

    /// Watch the file `running` was read from: its present content counts
    /// as running only if it is `running` (parsed, it gives the same
    /// config). An edit made between the start's read and the watch's first
    /// look is a change, applied once it has settled, not taken for what
    /// runs (black-box CI: an edit right after the start was never applied).
    pub fn for_running(path: PathBuf, settle: Duration, running: &Config) -> Self {
        let current = super::read_file(&path).ok().filter(|text| {
            super::parse(text, &path.display().to_string()).is_ok_and(|mut c| {
                c.source.clone_from(&running.source);
                c == *running
            })
        });
        Self::new(path, settle, current)
    }

    /// Start from the file's present content (tests; a process watches the
    /// file of its running config: [`Self::for_running`]).
    #[cfg(test)]
    pub fn from_file(path: PathBuf, settle: Duration) -> Self {
        let running = super::read_file(&path).ok();
        Self::new(path, settle, running)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look at the file once.
    pub fn poll(&mut self, now: Instant) -> WatchEvent {
        let text = match super::read_file(&self.path) {
            Ok(t) => t,
            Err(e) => {
                self.candidate = None;
                if self.unreadable {
                    return WatchEvent::Nothing;
                }
                self.unreadable = true;
                return WatchEvent::Unreadable(e);
            }
        };
        let was_unreadable = std::mem::replace(&mut self.unreadable, false);
        if self.current.as_ref() == Some(&text) {
            self.candidate = None;
            if was_unreadable {
                return WatchEvent::Readable;
            }
            if self
                .refused_at
                .is_some_and(|at| now.duration_since(at) >= RETRY_REFUSED)
            {
                self.refused_at = None;
                return WatchEvent::Retry(text);
            }
            return WatchEvent::Nothing;
        }
        match &self.candidate {
            Some((seen, since)) if *seen == text => {
                if now.duration_since(*since) >= self.settle {
                    self.candidate = None;
                    self.refused_at = None;
                    self.current = Some(text.clone());
                    WatchEvent::Changed(text)
                } else {
                    WatchEvent::Nothing
                }
            }
            _ => {
                self.candidate = Some((text, now));
                if was_unreadable {
                    WatchEvent::Readable
                } else {
                    WatchEvent::Nothing
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\n";

    #[test]
    fn a_config_without_routes_needs_an_explicit_empty_list() {
        for src in ["", "# nothing\n", "~", "routes:\n", "routes: ~\n", UPSTREAM] {
            let e = parse_for_serving(src, "t.yaml").expect_err(src);
            assert!(e.to_string().contains("has no routes"), "{src:?}: {e}");
        }
        let e = parse_for_serving("proxy: {}\nroutes:\n", "t.yaml").expect_err("null");
        assert_eq!((e.0[0].line, e.0[0].column), (2, 1), "{e}");
        for src in ["routes: []\n", "routes: [ ]\n", "proxy: {}\nroutes: []\n"] {
            let c = parse_for_serving(src, "t.yaml").expect(src);
            assert!(c.routes.is_empty());
        }
        let one = format!(
            "{UPSTREAM}routes:\n  - {{ name: a, match: {{ path_prefix: /a }}, upstream: demo }}\n"
        );
        assert_eq!(
            parse_for_serving(&one, "t.yaml").expect("ok").routes.len(),
            1
        );
        // Other problems are still reported as such.
        assert!(parse_for_serving("routes: [ {} ]\n", "t.yaml").is_err());
    }

    #[test]
    fn a_key_without_a_value_is_refused_at_its_position() {
        // A file cut right after `limits:` must not run the route unlimited.
        let cut = "upstreams: { u: { targets: [\"a:1\"] } }\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: u\n    limits:\n";
        let e = parse_for_serving(cut, "t.yaml").expect_err("a null limits");
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (6, 5), "{e}");
        assert!(
            e.0[0].message.starts_with("routes[0].limits: has no value"),
            "{e}"
        );
        let written = cut.replace("limits:\n", "limits: []\n");
        assert!(parse_for_serving(&written, "t.yaml").is_ok());
        let e =
            parse_for_serving("proxy:\n  trusted_proxies:\nroutes: []\n", "t").expect_err("null");
        assert!(
            e.to_string()
                .contains("proxy.trusted_proxies: has no value"),
            "{e}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // 100,000 levels: a YAML parser would take minutes (quadratic).
        let deep = format!("routes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = parse_for_serving(&deep, "t.yaml").expect_err("too deep");
        assert!(e.to_string().contains("nested more than 64 levels"), "{e}");
        assert_eq!(e.0[0].line, 1);
        // Generous for a busy machine; the parser alone would take minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn plan_conflicts_are_named() {
        let c = parse("plans: { free: {}, pro: {} }\nroutes: []\n", "t").expect("ok");
        assert!(plan_conflicts(&c, ["gold", "silver"]).is_empty());
        let both = plan_conflicts(&c, ["pro", "gold", "free", "pro"]);
        assert_eq!(both, ["free", "pro"]);
        let msg = plan_conflict_message(&both).expect("message");
        assert!(msg.contains("\"free\", \"pro\""), "{msg}");
        assert_eq!(plan_conflict_message(&[]), None);
    }

    #[test]
    fn a_change_is_applied_only_once_it_has_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, "a").expect("write");
        let settle = Duration::from_secs(1);
        let mut w = FileWatch::from_file(path.clone(), settle);
        let t0 = Instant::now();
        assert_eq!(w.poll(t0), WatchEvent::Nothing);
        // Half written, then complete: the clock restarts at every change.
        std::fs::write(&path, "ab").expect("write");
        assert_eq!(w.poll(t0), WatchEvent::Nothing);
        std::fs::write(&path, "abc").expect("write");
        assert_eq!(w.poll(t0 + Duration::from_millis(900)), WatchEvent::Nothing);
        assert_eq!(
            w.poll(t0 + Duration::from_millis(1800)),
            WatchEvent::Nothing
        );
        assert_eq!(
            w.poll(t0 + Duration::from_millis(1900)),
            WatchEvent::Changed("abc".into())
        );
        assert_eq!(w.poll(t0 + Duration::from_secs(5)), WatchEvent::Nothing);
        // A change back to what runs is no change.
        std::fs::write(&path, "x").expect("write");
        assert_eq!(w.poll(t0 + Duration::from_secs(6)), WatchEvent::Nothing);
        std::fs::write(&path, "abc").expect("write");
        assert_eq!(w.poll(t0 + Duration::from_secs(8)), WatchEvent::Nothing);
    }

    /// An edit made after the running config was read but before the watch
    /// began is a change (CI: `proxy_protocol` turned on right after the
    /// start was never applied); the running file's own content is not.
    #[test]
    fn an_edit_before_the_watch_began_is_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, crate::config::DEFAULT_YAML).expect("write");
        let running = crate::config::load(&path).expect("default config");
        let t = Instant::now();
        let mut same = FileWatch::for_running(path.clone(), Duration::ZERO, &running);
        assert_eq!(same.poll(t), WatchEvent::Nothing);
        assert_eq!(same.poll(t), WatchEvent::Nothing);
        let edited = crate::config::DEFAULT_YAML.replacen("threads: ", "threads: 3 #", 1);
        assert_ne!(edited, crate::config::DEFAULT_YAML);
        std::fs::write(&path, &edited).expect("write");
        let mut late = FileWatch::for_running(path.clone(), Duration::ZERO, &running);
        assert_eq!(late.poll(t), WatchEvent::Nothing);
        assert_eq!(late.poll(t), WatchEvent::Changed(edited));
    }

    /// Black-box round 12: a UTF-8 byte order mark at the start of the file
    /// was refused as "several documents". It is stripped once, where the
    /// file is read: at start, on reload and by `check-config` alike.
    #[test]
    fn a_leading_byte_order_mark_is_accepted_everywhere_the_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bom.yaml");
        let with_bom = format!("\u{feff}{}", crate::config::DEFAULT_YAML);
        std::fs::write(&path, &with_bom).expect("write");
        let plain = parse(crate::config::DEFAULT_YAML, "t").expect("default config");
        let loaded = crate::config::load(&path).expect("start: load");
        assert_eq!(loaded.routes, plain.routes);
        let served = load_for_serving(&path).expect("start: load_for_serving");
        assert_eq!(served.plans, plain.plans);
        let text = crate::config::read_file(&path).expect("check-config: read_file");
        assert_eq!(text, crate::config::DEFAULT_YAML);
        // Reload: what the watch hands out parses.
        let mut w = FileWatch::new(path.clone(), Duration::ZERO, None);
        let t = Instant::now();
        assert_eq!(w.poll(t), WatchEvent::Nothing);
        let WatchEvent::Changed(text) = w.poll(t) else {
            panic!("no change handed out");
        };
        assert!(parse_for_serving(&text, "t").is_ok());
    }

    /// Black-box round 11: a reload refused for a database plan of the
    /// same name stayed refused after that plan was deleted, until the file
    /// was edited again.
    #[test]
    fn a_refused_content_is_handed_out_again_until_accepted_or_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, "a").expect("write");
        let mut w = FileWatch::from_file(path.clone(), Duration::ZERO);
        let t = Instant::now();
        std::fs::write(&path, "b").expect("write");
        assert_eq!(w.poll(t), WatchEvent::Nothing);
        assert_eq!(w.poll(t), WatchEvent::Changed("b".into()));
        w.refused(t);
        assert_eq!(w.poll(t + RETRY_REFUSED / 2), WatchEvent::Nothing);
        assert_eq!(w.poll(t + RETRY_REFUSED), WatchEvent::Retry("b".into()));
        // Refused again: again after the next interval.
        w.refused(t + RETRY_REFUSED);
        assert_eq!(w.poll(t + RETRY_REFUSED * 3 / 2), WatchEvent::Nothing);
        assert_eq!(w.poll(t + RETRY_REFUSED * 2), WatchEvent::Retry("b".into()));
        // Accepted (not refused again): no more retries.
        assert_eq!(w.poll(t + RETRY_REFUSED * 4), WatchEvent::Nothing);
        // A refused content that is then edited: the edit, not a retry.
        w.refused(t);
        std::fs::write(&path, "c").expect("write");
        assert_eq!(w.poll(t + RETRY_REFUSED * 5), WatchEvent::Nothing);
        assert_eq!(
            w.poll(t + RETRY_REFUSED * 5),
            WatchEvent::Changed("c".into())
        );
        assert_eq!(w.poll(t + RETRY_REFUSED * 7), WatchEvent::Nothing);
    }

    #[test]
    fn an_unreadable_file_is_reported_once_per_episode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, "a").expect("write");
        let mut w = FileWatch::from_file(path.clone(), Duration::ZERO);
        let t = Instant::now();
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(w.poll(t), WatchEvent::Unreadable(_)));
        assert_eq!(w.poll(t), WatchEvent::Nothing);
        std::fs::write(&path, "a").expect("write");
        assert_eq!(w.poll(t), WatchEvent::Readable);
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(w.poll(t), WatchEvent::Unreadable(_)));
        std::fs::write(&path, "b").expect("write");
        assert_eq!(w.poll(t), WatchEvent::Readable);
        assert_eq!(w.poll(t), WatchEvent::Changed("b".into()));
    }

    #[test]
    fn new_settings_refuse_hostile_values() {
        let c = parse("routes: []\n", "t").expect("defaults");
        assert_eq!(c.usage.violation_retention_days, 7);
        for (src, want) in [
            (
                "usage: { violation_retention_days: 0 }\n",
                "usage.violation_retention_days",
            ),
            (
                "usage: { violation_retention_days: -3 }\n",
                "usage.violation_retention_days",
            ),
            (
                "usage: { violation_retention_days: seven }\n",
                "usage.violation_retention_days",
            ),
            (
                "usage: { violation_retention_days: 99999999999 }\n",
                "usage.violation_retention_days",
            ),
            (
                "upstreams: { u: { targets: [\"a:1\"], resolve_interval: 0s } }\n",
                "upstreams.u.resolve_interval",
            ),
            (
                "upstreams: { u: { targets: [\"a:1\"], resolve_interval: 500ms } }\n",
                "upstreams.u.resolve_interval",
            ),
            (
                "upstreams: { u: { targets: [\"a:1\"], resolve_interval: soon } }\n",
                "upstreams.u.resolve_interval",
            ),
            (
                "upstreams: { u: { targets: [\"a:1\"], resolve_interval: [1] } }\n",
                "resolve_interval",
            ),
        ] {
            let e = parse(src, "t").expect_err(src).to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        let ok = parse(
            "usage: { violation_retention_days: 90 }\nupstreams: { u: { targets: [\"a:1\"], resolve_interval: 5m } }\nroutes: []\n",
            "t",
        )
        .expect("valid");
        assert_eq!(ok.usage.violation_retention_days, 90);
        assert_eq!(ok.upstreams["u"].resolve_interval, Duration::from_secs(300));
    }

    #[test]
    fn hostile_files_are_refused_without_panicking() {
        for src in [
            "routes: [",
            "routes: !!binary AAAA",
            "\u{0}",
            "routes: [[]]",
            "routes: {}",
        ] {
            assert!(parse_for_serving(src, "t").is_err(), "{src:?}");
        }
    }
}
