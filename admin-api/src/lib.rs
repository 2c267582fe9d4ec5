//! Tollgate's admin API: an Axum service over the shared database that
//! manages admins, API keys and plans, reports health and serves its own
//! OpenAPI document. Everything is under `/api`, JSON in and out, with a JWT
//! (HS256, `admin.session_ttl`, default 12 h) in `Authorization: Bearer`
//! except for login, the health summary and the OpenAPI document. Every
//! handler states the role it needs (`viewer`, `admin`, `owner`) through its
//! extractor, and every change is written to the audit log. Errors are RFC
//! 9457 problem+json ([`error::ApiError`]).
//!
//! Start it with [`bootstrap`] (connect, first admin, JWT secret) and
//! [`serve`]; [`app`] is the bare router.
//!
//! The modules, bottom up (a module only uses the ones above it):
//! - [`error`] (the error type, its problem+json and OpenAPI forms),
//!   [`metrics`], [`login_guard`];
//! - [`extract`] (request extractors), [`password`] (credential rules,
//!   argon2), [`jwt`] (session tokens);
//! - [`state`] ([`AppState`]), [`auth`] (the role extractors, audit
//!   recording), [`bodies`] (request and response bodies several resources
//!   share), [`rules`] (checks several resources share);
//! - one module per resource, each with its `router()`: [`login`],
//!   [`admins`], [`keys`], [`plans`], [`analytics`], [`usage_export`],
//!   [`webhooks`] (with its delivery worker), [`audit`], [`health`],
//!   [`openapi`], [`dashboard`];
//! - [`deadline`] (request and body deadlines), [`query_guard`] (no
//!   query parameter an operation does not take), [`app`] (the router of
//!   routers, middleware, [`serve`]) and
//!   [`bootstrap`]; [`listener`] (the HTTP server under [`serve`]).

pub mod admins;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bodies;
pub mod bootstrap;
pub mod dashboard;
pub mod deadline;
pub mod error;
pub mod export_slots;
pub mod extract;
pub mod health;
pub mod health_report;
pub mod identities;
pub mod jwt;
pub mod keys;
pub mod listener;
pub mod login;
pub mod login_guard;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod plans;
pub mod query_guard;
pub mod quotas;
pub mod refills;
pub mod rules;
pub mod service_tokens;
pub mod spans;
pub mod state;
pub mod usage_export;
pub mod webhooks;

pub use app::{api_router, app, serve, MAX_BODY_BYTES};
pub use bootstrap::{
    bootstrap, bootstrap_dev, bootstrap_with_db, ensure_first_admin, resolve_jwt_secret,
    BootstrapError, PasswordPolicy, ADMIN_PASSWORD_ENV, INITIAL_ADMIN,
};
pub use deadline::REQUEST_DEADLINE;
pub use state::AppState;
