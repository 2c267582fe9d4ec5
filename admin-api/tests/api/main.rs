//! The admin API over HTTP, each test on a fresh SQLite and a fresh
//! PostgreSQL database.

mod common;

mod admins;
mod analytics;
mod auth;
mod health;
mod keys;
mod openapi;
mod outage;
mod plans;
mod security;
