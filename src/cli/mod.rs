//! The subcommands that do more than dispatch.

pub mod keys;
pub mod run;
