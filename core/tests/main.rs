//! The core crate's integration tests (the database layer on SQLite and
//! PostgreSQL, and the property tests of the limit model), as one test
//! binary: every file beside this one is a module.

#[macro_use]
mod common;

mod cost_props;
mod credits_db;
mod db_fingerprints;
mod db_keys;
mod db_migrations;
mod db_plans;
mod db_schema;
mod identities;
mod instances_db;
mod props_buckets;
mod props_config;
mod props_keys;
mod props_refill;
mod quota_adjustments_db;
mod usage;
mod webhooks;
