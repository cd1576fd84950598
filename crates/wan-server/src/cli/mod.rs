//! Command-line subcommands that run without the HTTP server.

pub mod bench;
pub mod generate;
