//! Persistence of jobs behind a trait, so the embedded SQLite store can be replaced (e.g. by a
//! PostgreSQL one shared by several workers) without touching the manager.
//!
//! Calls are synchronous and short; the manager makes them under its state lock so that a state
//! change is on disk before it is announced and admission is one step.

pub mod sqlite;

use serde::Serialize;

use crate::job::{Job, JobId, JobStatus, Timestamp};
use crate::stats::StoreStats;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored job parameters are invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create the store directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the store is closed")]
    Closed,
}

/// One entry of a job's history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    pub status: JobStatus,
    pub message: String,
    pub at: Timestamp,
}

/// A job not yet in a terminal state, with its admission sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct UnfinishedJob {
    pub seq: i64,
    pub job: Job,
}

/// `GET /api/v1/jobs` query.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub user_id: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter { status: None, user_id: None, limit: 50, offset: 0 }
    }
}

/// `GET /api/v1/jobs` answer: newest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
    pub total: u64,
    pub limit: usize,
    pub offset: usize,
}

pub trait JobStore: Send + Sync + 'static {
    /// Stores newly admitted jobs, all or none, and returns their admission sequence numbers.
    fn insert(&self, jobs: &[Job]) -> Result<Vec<i64>, StoreError>;

    /// Writes the jobs' current state, all or none; appends a history entry for each job whose
    /// status changed.
    fn save(&self, jobs: &[&Job]) -> Result<(), StoreError>;

    fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError>;

    /// Newest first, with the total that matches the filter.
    fn list(&self, filter: &JobFilter) -> Result<(Vec<Job>, u64), StoreError>;

    /// Pending and processing jobs in admission order.
    fn unfinished(&self) -> Result<Vec<UnfinishedJob>, StoreError>;

    /// A job's state changes, oldest first.
    fn history(&self, id: &JobId) -> Result<Vec<StateChange>, StoreError>;

    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Flushes and releases the store; later calls fail with [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}
