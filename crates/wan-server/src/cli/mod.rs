//! Command-line subcommands.

pub mod bench;
pub mod download;
pub mod generate;
pub mod init_demo_model;
pub mod models;
pub mod plan;
pub mod serve;
