//! wan-server: the HTTP front end (actix-web) over the job manager, the model catalogue and hub
//! downloads, and the command-line subcommands.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo_model;
pub mod error;
pub mod generator;
pub mod media_check;
pub mod models;
pub mod openapi;
pub mod request_log;
pub mod routes;
pub mod server;
pub mod state;
pub mod upload;
pub mod wan_adapter;
