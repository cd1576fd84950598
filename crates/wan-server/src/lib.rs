//! The HTTP front end of wan-server (to be written) and the command-line subcommands.

pub mod cli;
