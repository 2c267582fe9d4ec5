//! The subcommands that do more than dispatch.

pub mod audit;
pub mod check;
pub mod demo_traffic;
pub mod keys;
pub mod run;
