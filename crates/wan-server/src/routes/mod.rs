//! One file per group of routes; each handler extracts, makes one call, and responds.

pub mod config;
pub mod events;
pub mod generate;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod outputs;
pub mod preview;
pub mod queue;
pub mod stats;
pub mod storage;
