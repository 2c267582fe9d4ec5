//! Tollgate's proxy: a Pingora service that checks API keys and rate limits,
//! then forwards to the upstream or answers 401/403/404/429 itself.
//!
//! Code map: [`conn`] (connection edge: PROXY protocol, per-address cap,
//! header deadline), [`edge`] (size, framing, canonical path, client
//! address), [`forward`] (what the upstream is told), [`throttle`] (the
//! bad-key throttle), [`router`] (route matching), [`auth`] (reading the key),
//! [`keyset`] (the in-memory key set), [`state`] (hot config + which limits
//! apply), [`limiter`] (token buckets), [`headers`] (RateLimit headers),
//! [`answer`] (problem+json answers), [`grpc`] (gRPC requests and their
//! refusals as gRPC status), [`telemetry`] (W3C trace context), [`request_span`]
//! (the OpenTelemetry span of a request), [`cors`]
//! (browser callers), [`body_limit`] (`max_body_bytes`), [`websocket`]
//! (upgrades and their keys), [`ws_hold`] (holding a handshake open, a
//! Pingora workaround), [`service`] (the `ProxyHttp` that
//! orchestrates them), [`upstreams`], [`tls`] (HTTPS listener certificate,
//! upstream CA files), [`background`] (and [`period`], the wait of its
//! config-paced tasks), [`metrics`], [`demo`] (the demo
//! upstream of `tollgate dev`).

pub mod access;
pub mod access_log;
pub mod answer;
pub mod auth;
pub mod background;
pub mod body_limit;
pub mod conn;
pub mod conn_end;
pub mod cors;
pub mod cost;
pub mod credits;
pub mod demo;
pub mod edge;
pub mod edge_metrics;
pub mod forward;
pub mod gate;
pub mod grpc;
pub mod header_edit;
pub mod headers;
pub mod identities;
pub mod keyset;
pub mod ladder;
pub mod limiter;
pub mod metrics;
pub mod period;
pub mod refills;
pub mod request_id;
pub mod request_span;
pub mod router;
pub mod self_usage;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod upstreams;
pub mod usage;
pub mod verify;
pub mod websocket;
pub mod ws_hold;

pub use server::{build, Prepared, ShutdownHandle};
