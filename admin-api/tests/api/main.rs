//! The admin API over HTTP, each test on a fresh SQLite and a fresh
//! PostgreSQL database.

mod common;

mod admins;
mod analytics;
mod analytics_fixture;
mod analytics_keys;
mod analytics_violations;
mod audit;
mod auth;
mod brute_force;
mod credits;
mod db_roles;
mod health;
mod identities;
mod keys;
mod listener;
mod openapi;
mod outage;
mod plans;
mod queries;
mod quota_adjust;
mod quotas;
mod relay;
mod roles;
mod security;
mod service_tokens;
mod sessions;
mod spans;
mod usage_export;
mod webhooks;
