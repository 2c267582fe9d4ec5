//! The tests that run the real `tollgate` binary (and its CLI) against real
//! services, as one test binary: every file beside this one is a module
//! (one binary links once and holds one copy of the dependencies; seventy
//! binaries of ~40 MB each were most of a CI run's disk).

mod common;

mod admin_reload;
mod cli;
mod cli_check_config;
mod cli_identities;
mod cli_keys;
mod cli_quota;
mod cli_reload;
mod cost_binary;
mod credits_binary;
mod credits_safety_binary;
mod dashboard;
mod dashboard_demo;
mod dashboard_viewer;
mod e2e_admin;
mod edge_binary;
mod faults;
mod faults_config;
mod faults_stop;
mod faults_upstream;
mod identities;
mod identity_credits_binary;
mod quota_adjust_binary;
mod quotas;
mod readme;
mod redis_outage;
mod redis_restart;
mod redis_tls_urls;
mod secrets;
mod verify_binary;
mod webhook_events;
