//! What every handler shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use wan_jobs::JobManager;

use crate::config::ServerConfig;
use crate::generator::ModelSlots;
use crate::models::hub::Downloads;

/// The application state behind `web::Data`.
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub jobs: Arc<JobManager>,
    pub slots: Arc<ModelSlots>,
    pub downloads: Arc<Downloads>,
    pub metrics: HttpMetrics,
    pub started: Instant,
    /// Set when SIGINT/SIGTERM arrived: generation answers 503 from then on.
    pub stopping: AtomicBool,
}

impl AppState {
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || self.jobs.is_shutting_down()
    }
}

/// Counters of the HTTP layer for `/metrics` (the job counters come from the manager).
#[derive(Default)]
pub struct HttpMetrics {
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub responses_429: AtomicU64,
}
