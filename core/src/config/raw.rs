//! Raw serde model of the YAML file.
//!
//! These structs mirror the file one to one. Every struct denies unknown
//! fields, so a misspelt key is an error with its position. Every field is
//! optional here, even the ones the file must give: [`super::validate`] reports
//! missing fields, so that all of them are reported at once, not just the
//! first one serde trips over.
//!
//! Scalars are kept as [`Scalar`] (whatever YAML made of them) rather than as
//! `u64`, `bool` or `Duration`: `rate: ten` or `per: 1x` then reach validation,
//! which reports every such problem with the field's path and a message that
//! says what was expected. serde itself only rejects what cannot be a config at
//! all: bad YAML syntax, unknown fields, and a mapping or a list where
//! something else is expected.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// One scalar as YAML typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl Scalar {
    /// The scalar as text, as an operator would read it (`None` for null).
    pub fn text(&self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Float(f) => Some(format!("{f:?}")),
            Scalar::Str(s) => Some(s.clone()),
        }
    }

    /// How the scalar reads in an error message: strings quoted, the rest as is.
    pub fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".to_string(),
            Scalar::Str(s) => format!("{s:?}"),
            other => other.text().unwrap_or_default(),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (text, number or boolean)")
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Scalar, E> {
                Ok(match i128::try_from(v) {
                    Ok(i) => Scalar::Int(i),
                    // Far beyond any range validation accepts; keep it
                    // readable in the message.
                    Err(_) => Scalar::Float(v as f64),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping kept in file order, repeated keys included, so that
/// validation can report them (and their positions).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<T> Default for OrderedMap<T> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from names to definitions")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Scalar>()? {
                    let value = map.next_value::<T>()?;
                    entries.push((key.text().unwrap_or_default(), value));
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The whole file. An empty file is a valid config: every section has defaults.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of config sections (proxy, admin, storage, limiter, log, usage, telemetry, verify, plans, upstreams, routes)"
)]
pub struct RawConfig {
    pub proxy: Option<RawProxy>,
    pub admin: Option<RawAdmin>,
    pub storage: Option<RawStorage>,
    pub limiter: Option<RawLimiter>,
    pub log: Option<RawLog>,
    pub usage: Option<RawUsage>,
    pub telemetry: Option<RawTelemetry>,
    pub verify: Option<RawVerify>,
    pub plans: Option<OrderedMap<RawPlan>>,
    pub upstreams: Option<OrderedMap<RawUpstream>>,
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of proxy settings (listen, metrics_listen, threads, key_header, auth_failures_per_second, grace_period, keepalive_timeout, tls, path_policy, trusted_proxies, proxy_protocol, header_timeout, body_timeout, max_header_bytes, max_connections_per_ip, work_stealing, listener_tasks, upstream_keepalive_pool, downstream_keepalive_requests, h2c, usage_path, websocket_key_check, instance_name)"
)]
pub struct RawProxy {
    pub listen: Option<Scalar>,
    pub metrics_listen: Option<Scalar>,
    pub threads: Option<Scalar>,
    pub key_header: Option<Scalar>,
    pub auth_failures_per_second: Option<Scalar>,
    pub grace_period: Option<Scalar>,
    pub keepalive_timeout: Option<Scalar>,
    pub tls: Option<RawTls>,
    pub path_policy: Option<Scalar>,
    pub trusted_proxies: Option<Vec<Scalar>>,
    pub proxy_protocol: Option<Scalar>,
    pub header_timeout: Option<Scalar>,
    pub body_timeout: Option<Scalar>,
    pub max_header_bytes: Option<Scalar>,
    pub max_connections_per_ip: Option<Scalar>,
    pub work_stealing: Option<Scalar>,
    pub listener_tasks: Option<Scalar>,
    pub upstream_keepalive_pool: Option<Scalar>,
    pub downstream_keepalive_requests: Option<Scalar>,
    pub h2c: Option<Scalar>,
    pub usage_path: Option<Scalar>,
    pub websocket_key_check: Option<Scalar>,
    pub instance_name: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with listen, cert and key")]
pub struct RawTls {
    pub listen: Option<Scalar>,
    pub cert: Option<Scalar>,
    pub key: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of admin settings (listen, jwt_secret_env, session_ttl, allowed_hosts, header_timeout, idle_timeout, max_connections, max_connections_per_ip, audit_retention)"
)]
pub struct RawAdmin {
    pub listen: Option<Scalar>,
    pub jwt_secret_env: Option<Scalar>,
    pub session_ttl: Option<Scalar>,
    pub allowed_hosts: Option<Vec<Scalar>>,
    pub header_timeout: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub max_connections_per_ip: Option<Scalar>,
    pub audit_retention: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of storage settings (database_url, key_refresh)"
)]
pub struct RawStorage {
    pub database_url: Option<Scalar>,
    pub key_refresh: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of limiter settings (backend, redis_url, redis_timeout, on_redis_error, redis_ca_file, concurrency_lease, lease_ttl)"
)]
pub struct RawLimiter {
    pub backend: Option<Scalar>,
    pub redis_url: Option<Scalar>,
    pub redis_timeout: Option<Scalar>,
    pub on_redis_error: Option<Scalar>,
    pub redis_ca_file: Option<Scalar>,
    pub concurrency_lease: Option<Scalar>,
    pub lease_ttl: Option<Scalar>,
}

/// `verify: { listen }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of verify settings (listen)"
)]
pub struct RawVerify {
    pub listen: Option<Scalar>,
}

/// `telemetry: { otlp_endpoint, trace_context, service_name }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of telemetry settings (otlp_endpoint, trace_context, service_name)"
)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<Scalar>,
    pub trace_context: Option<Scalar>,
    pub service_name: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of log settings (level, format, access_log)"
)]
pub struct RawLog {
    pub level: Option<Scalar>,
    pub format: Option<Scalar>,
    pub access_log: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of usage settings (flush_interval, retention_days, violation_retention_days, buffer_rows)"
)]
pub struct RawUsage {
    pub flush_interval: Option<Scalar>,
    pub retention_days: Option<Scalar>,
    pub violation_retention_days: Option<Scalar>,
    pub buffer_rows: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a plan: a mapping with limits, concurrency and scopes"
)]
pub struct RawPlan {
    pub limits: Option<Vec<RawLimit>>,
    pub concurrency: Option<Scalar>,
    pub scopes: Option<RawScopes>,
    pub credits: Option<RawCredits>,
}

/// A plan's `credits: { refill: { ... } }` (see `crate::refill`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "credits: a mapping with refill")]
pub struct RawCredits {
    pub refill: Option<RawRefill>,
}

/// `refill: { amount, every }` or `{ amount, period, anchor, time_zone }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "refill: a mapping with amount and every, or amount, period, anchor and time_zone"
)]
pub struct RawRefill {
    pub amount: Option<Scalar>,
    pub every: Option<Scalar>,
    pub period: Option<Scalar>,
    pub anchor: Option<Scalar>,
    pub time_zone: Option<Scalar>,
}

/// A plan's `scopes: { routes: [...], methods: [...] }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "scopes: a mapping with routes and/or methods (lists)"
)]
pub struct RawScopes {
    pub routes: Option<Vec<Scalar>>,
    pub methods: Option<Vec<Scalar>>,
}

/// One token bucket: `{ name, rate, per, burst, cost }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a limit: a mapping with name, rate, per, and optionally burst, cost and scope"
)]
pub struct RawLimit {
    pub name: Option<Scalar>,
    pub rate: Option<Scalar>,
    pub per: Option<Scalar>,
    pub burst: Option<Scalar>,
    pub cost: Option<Scalar>,
    /// A calendar quota instead (see `crate::quota`): `quota`, `period`,
    /// `anchor`, `time_zone`.
    pub quota: Option<Scalar>,
    pub period: Option<Scalar>,
    pub anchor: Option<Scalar>,
    pub time_zone: Option<Scalar>,
    /// `key` (default) or `identity`.
    pub scope: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an upstream: a mapping with targets, health_check, timeouts, preserve_host, tls, resolve_interval and protocol"
)]
pub struct RawUpstream {
    pub targets: Option<Vec<Scalar>>,
    pub resolve_interval: Option<Scalar>,
    pub health_check: Option<RawHealthCheck>,
    pub timeouts: Option<RawTimeouts>,
    pub preserve_host: Option<Scalar>,
    pub tls: Option<RawUpstreamTls>,
    pub protocol: Option<Scalar>,
}

/// TLS towards an upstream's `https://` targets: `{ ca_file, verify, sni }`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of upstream TLS settings (ca_file, verify, sni)"
)]
pub struct RawUpstreamTls {
    pub ca_file: Option<Scalar>,
    pub verify: Option<Scalar>,
    pub sni: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with path and interval")]
pub struct RawHealthCheck {
    pub path: Option<Scalar>,
    pub interval: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of timeouts (connect, read, write, idle)"
)]
pub struct RawTimeouts {
    pub connect: Option<Scalar>,
    pub read: Option<Scalar>,
    pub write: Option<Scalar>,
    pub idle: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: a mapping with name, match, upstream, strip_prefix, auth, default_plan, limits, shadow, allow_method_override, ip_allow, ip_deny, websocket, max_body_bytes and cors"
)]
pub struct RawRoute {
    pub name: Option<Scalar>,
    #[serde(rename = "match")]
    pub match_: Option<RawMatch>,
    pub upstream: Option<Scalar>,
    pub strip_prefix: Option<Scalar>,
    pub auth: Option<Scalar>,
    pub default_plan: Option<Scalar>,
    pub limits: Option<Vec<RawLimit>>,
    pub shadow: Option<Scalar>,
    pub allow_method_override: Option<Scalar>,
    pub ip_allow: Option<Vec<Scalar>>,
    pub ip_deny: Option<Vec<Scalar>>,
    pub websocket: Option<Scalar>,
    pub max_body_bytes: Option<Scalar>,
    pub cors: Option<RawCors>,
    pub cost: Option<RawCost>,
}

/// `routes[].cost`: a reservation settled from the response (issue #20).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with reserve, from_response_header and optionally refund_on"
)]
pub struct RawCost {
    pub reserve: Option<Scalar>,
    pub from_response_header: Option<Scalar>,
    pub refund_on: Option<Vec<Scalar>>,
}

/// `routes[].cors`: who may call the route from a browser.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with origins and optionally methods, headers, max_age and credentials"
)]
pub struct RawCors {
    pub origins: Option<Vec<Scalar>>,
    pub methods: Option<Vec<Scalar>>,
    pub headers: Option<Vec<Scalar>>,
    pub max_age: Option<Scalar>,
    pub credentials: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with path_prefix and optionally methods and case_insensitive"
)]
pub struct RawMatch {
    pub path_prefix: Option<Scalar>,
    pub methods: Option<Vec<Scalar>>,
    pub case_insensitive: Option<Scalar>,
}

/// Deserialize the whole file with serde_yaml; an empty document (or one that
/// is only comments, or `~`) is the all-defaults config.
pub fn from_str(src: &str) -> Result<RawConfig, serde_yaml::Error> {
    Ok(serde_yaml::from_str::<Option<RawConfig>>(src)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_documents_are_the_default() {
        for src in ["", "# nothing\n", "~", "---\n"] {
            assert_eq!(
                from_str(src).expect("valid"),
                RawConfig::default(),
                "{src:?}"
            );
        }
    }

    #[test]
    fn scalars_keep_their_yaml_type() {
        let raw = from_str(
            "proxy: { listen: 8080, threads: 2, key_header: x, grace_period: 1.5 }\nlog: { access_log: false }\nupstreams: { u: { targets: [~, a:1] } }\n",
        )
        .expect("valid");
        let p = raw.proxy.expect("proxy");
        assert_eq!(p.listen, Some(Scalar::Int(8080)));
        assert_eq!(p.threads, Some(Scalar::Int(2)));
        assert_eq!(p.key_header, Some(Scalar::Str("x".into())));
        assert_eq!(p.grace_period, Some(Scalar::Float(1.5)));
        assert_eq!(p.metrics_listen, None);
        assert_eq!(raw.log.expect("log").access_log, Some(Scalar::Bool(false)));
        let targets = raw.upstreams.expect("upstreams").0[0].1.targets.clone();
        assert_eq!(targets, Some(vec![Scalar::Null, Scalar::Str("a:1".into())]));
        assert_eq!(Scalar::Int(3).text(), Some("3".into()));
        assert_eq!(Scalar::Null.text(), None);
        assert_eq!(Scalar::Str("a".into()).to_string(), "\"a\"");
        assert_eq!(Scalar::Float(2.0).to_string(), "2.0");
    }

    #[test]
    fn maps_keep_file_order() {
        let raw =
            from_str("plans: { zeta: {}, alpha: { concurrency: 2 }, 7: {} }\n").expect("valid");
        let names: Vec<&str> = raw
            .plans
            .as_ref()
            .expect("plans")
            .0
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["zeta", "alpha", "7"]);
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        for src in [
            "nope: 1",
            "proxy: { nope: 1 }",
            "proxy: { tls: { nope: 1 } }",
            "admin: { nope: 1 }",
            "storage: { nope: 1 }",
            "limiter: { nope: 1 }",
            "log: { nope: 1 }",
            "usage: { nope: 1 }",
            "plans: { p: { nope: 1 } }",
            "plans: { p: { limits: [ { nope: 1 } ] } }",
            "upstreams: { u: { nope: 1 } }",
            "upstreams: { u: { health_check: { nope: 1 } } }",
            "upstreams: { u: { timeouts: { nope: 1 } } }",
            "upstreams: { u: { tls: { nope: 1 } } }",
            "routes: [ { nope: 1 } ]",
            "routes: [ { match: { nope: 1 } } ]",
            "routes: [ { limits: [ { nope: 1 } ] } ]",
        ] {
            let err = from_str(src).expect_err(src);
            assert!(
                err.to_string().contains("unknown field `nope`"),
                "{src}: {err}"
            );
        }
    }
}
