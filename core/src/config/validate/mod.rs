//! Raw model → validated model, collecting every problem with its position.
//!
//! Three passes over the text:
//!
//! 1. the whole document is parsed (into nothing), so that a syntax error is
//!    reported before anything else; then repeated keys are looked for;
//! 2. it is deserialized into the [`raw`] structs, which rejects unknown fields
//!    and collections where they do not belong (one error: serde stops there);
//! 3. the raw structs are checked field by field. This pass reports *every*
//!    problem, each at the position of the offending node, found through the
//!    [`PositionIndex`].
//!
//! Pass 3 is a [`Validator`]: `scalars` is its checker kit (text, numbers,
//! durations, addresses…, each reporting at its field), and each section of
//! the file has its own module (`proxy`, `admin`, `storage` with `usage`,
//! `limiter`, `log`, `telemetry`, `plans`, `upstreams`, `routes`). Defaults live next to
//! the model ([`super::model`]); the rules the admin API and the CLI share
//! with this file are [`crate::rules`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::IgnoredAny;

use super::position::{child, item, Position, PositionIndex};
use super::raw::{
    self, OrderedMap, RawAdmin, RawConfig, RawLimit, RawLimiter, RawLog, RawPlan, RawProxy,
    RawRoute, RawScopes, RawStorage, RawTelemetry, RawUpstream, RawUsage, Scalar,
};
use super::{
    AdminConfig, Auth, Config, ConfigError, ConfigErrors, EdgeConfig, HealthCheck, LimiterBackend,
    LimiterConfig, LogConfig, LogFormat, OnRedisError, Plan, ProxyConfig, Route, ServerTuning,
    StorageConfig, Target, Timeouts, TlsListener, Upstream, UpstreamTls, UsageConfig,
};
use crate::duration;
use crate::limits::Limit;
use crate::path::PathPolicy;
use crate::rules::{self, limits as limit_rules};

use super::bounds;
use super::model::*;
use scalars::{given, is_token, SLOW_HEADER};

mod admin;
mod cors;
mod cost;
mod limiter;
mod listeners;
mod log;
mod plans;
mod proxy;
mod quotas;
mod refill;
mod routes;
mod scalars;
mod storage;
mod telemetry;
mod upstreams;
mod verify;

#[cfg(test)]
mod tests;

pub(super) fn parse_and_validate(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    let index = PositionIndex::build(src);
    let mut problems = match parse_raw(src, &index) {
        Ok(raw) => {
            let mut v = Validator {
                index: &index,
                problems: Vec::new(),
            };
            let config = v.config(&raw);
            if v.problems.is_empty() {
                return Ok(config);
            }
            v.problems
        }
        Err(problems) => problems,
    };
    // libyaml puts the end of a stream that lacks a final line break on a
    // line of its own: report it at the end of the last line.
    let lines = text_lines(src);
    for (pos, _) in &mut problems {
        *pos = within(&lines, *pos);
    }
    // Report in document order; problems at one place keep the order found.
    problems.sort_by_key(|(pos, _)| *pos);
    Err(ConfigErrors(
        problems
            .into_iter()
            .map(|(pos, message)| ConfigError {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                message,
            })
            .collect(),
    ))
}

type Problems = Vec<(Position, String)>;

/// The width in characters of each line of `src`, lines broken as YAML
/// parsers break them: `\n`, `\r\n`, `\r`, and (libyaml) NEL, LS and PS.
fn text_lines(src: &str) -> Vec<usize> {
    let mut widths = vec![0];
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                widths.push(0);
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => widths.push(0),
            _ => {
                if let Some(w) = widths.last_mut() {
                    *w += 1;
                }
            }
        }
    }
    widths
}

/// `pos`, or, for the end of a text without a final line break, which
/// libyaml places at column 1 of the line after the last, the end of the
/// last line.
fn within(lines: &[usize], pos: Position) -> Position {
    match lines.last() {
        Some(&width) if pos.line == lines.len() + 1 && pos.column == 1 => Position {
            line: lines.len(),
            column: width + 1,
        },
        _ => pos,
    }
}

/// Passes 1 and 2: YAML syntax, repeated keys, then the raw structs.
fn parse_raw(src: &str, index: &PositionIndex) -> Result<RawConfig, Problems> {
    // serde_yaml reports a syntax error only when deserialization gets that
    // far, possibly after a type error caused by it: check the syntax first.
    if let Err(e) = serde_yaml::from_str::<IgnoredAny>(src) {
        if e.to_string().contains("more than one document") {
            return Err(vec![(
                Position::START,
                "a config file holds a single YAML document, this one has several (separated by ---)"
                    .to_string(),
            )]);
        }
        let prefix = if e.location().is_some() {
            "invalid YAML: "
        } else {
            ""
        };
        return Err(vec![serde_problem(&e, prefix)]);
    }
    // A repeated key would silently override (or, for a section, fail with
    // no useful position): report every one.
    let repeated = index.duplicates();
    if !repeated.is_empty() {
        return Err(repeated
            .iter()
            .map(|d| {
                (
                    d.position,
                    format!(
                        "{}: key {:?} is repeated (first given at line {}, column {})",
                        d.path, d.key, d.first.line, d.first.column
                    ),
                )
            })
            .collect());
    }
    raw::from_str(src).map_err(|e| vec![serde_problem(&e, "")])
}

/// A serde_yaml error as a problem: its location, and its message without the
/// location (which the problem carries already).
fn serde_problem(e: &serde_yaml::Error, prefix: &str) -> (Position, String) {
    let mut message = e.to_string();
    let pos = match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(i) = message.find(&at) {
                message.replace_range(i..i + at.len(), "");
            }
            Position {
                line: loc.line().max(1),
                column: loc.column().max(1),
            }
        }
        None => Position::START,
    };
    (pos, format!("{prefix}{message}"))
}

struct Validator<'a> {
    index: &'a PositionIndex,
    problems: Problems,
}

impl Validator<'_> {
    // ----- reporting -------------------------------------------------------

    /// A problem with the node at `path` (or its nearest written ancestor).
    fn error(&mut self, path: &str, message: impl Display) {
        let pos = self.index.locate(path);
        self.error_at(pos, path, message);
    }

    fn error_at(&mut self, pos: Position, path: &str, message: impl Display) {
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.problems.push((pos, message));
    }

    /// A required field that is absent (or written with no value).
    fn missing(&mut self, path: &str, why: &str) {
        let pos = self.index.missing(path);
        let what = if self.index.key(path).is_some() {
            "a value is required"
        } else {
            "missing required field"
        };
        self.error_at(pos, path, format!("{what}{why}"));
    }

    // ----- sections --------------------------------------------------------

    fn config(&mut self, raw: &RawConfig) -> Config {
        let proxy = self.proxy(raw.proxy.as_ref().unwrap_or(&RawProxy::default()));
        let admin = self.admin(raw.admin.as_ref().unwrap_or(&RawAdmin::default()));
        let storage = self.storage(raw.storage.as_ref().unwrap_or(&RawStorage::default()));
        let limiter = self.limiter(raw.limiter.as_ref().unwrap_or(&RawLimiter::default()));
        let log = self.log(raw.log.as_ref().unwrap_or(&RawLog::default()));
        let usage = self.usage(raw.usage.as_ref().unwrap_or(&RawUsage::default()));
        let telemetry = self.telemetry(raw.telemetry.as_ref().unwrap_or(&RawTelemetry::default()));
        let verify = self.verify(raw.verify.as_ref());
        self.listeners(&proxy, &admin, &verify);
        let empty_plans = OrderedMap::default();
        let raw_plans = raw.plans.as_ref().unwrap_or(&empty_plans);
        let plans = self.plans(raw_plans);
        let empty_upstreams = OrderedMap::default();
        let raw_upstreams = raw.upstreams.as_ref().unwrap_or(&empty_upstreams);
        let upstreams = self.upstreams(raw_upstreams);
        let plan_names: Vec<&str> = raw_plans.0.iter().map(|(n, _)| n.as_str()).collect();
        let upstream_names: Vec<&str> = raw_upstreams.0.iter().map(|(n, _)| n.as_str()).collect();
        let routes = self.routes(
            raw.routes.as_deref().unwrap_or_default(),
            &plan_names,
            &upstream_names,
        );
        Config {
            source: None,
            proxy,
            admin,
            storage,
            limiter,
            log,
            usage,
            telemetry,
            verify,
            plans,
            upstreams,
            routes,
        }
    }
}
