//! The job manager between the HTTP front end and the pipeline.
//!
//! It owns every job from admission to its end: validation against the server's limits,
//! admission (or a 429 with nothing stored), a priority queue, workers that run the model on
//! blocking threads, progress and cancellation through the per-step callback, a store that
//! survives restarts (SQLite by default), outputs renamed into place only when complete, and
//! callbacks. The model is behind the [`Generator`] trait; the HTTP server calls [`JobManager`]
//! once per handler and maps [`Error`] to a status with [`Error::code`].

pub mod admission;
pub mod callback;
pub mod error;
pub mod generator;
pub mod job;
pub mod manager;
pub mod progress;
pub mod queue;
pub mod stats;
pub mod store;
pub mod validate;
mod finished;
mod worker;

pub use admission::AdmissionPolicy;
pub use callback::CallbackConfig;
pub use error::{Error, Result};
pub use generator::{Control, GenerationError, GenerationOutcome, Generator, InvalidParam, JobSpec, Readiness, StepProgress};
pub use job::{GenerationMode, GenerationModeRequest, GenerationRequest, Job, JobId, JobParams, JobStatus, Priority, Timestamp};
pub use manager::{JobManager, JobsConfig};
pub use progress::{EventKind, JobEvent, JobEvents};
pub use queue::{QueueTask, QueueView};
pub use stats::{Stats, StatusCounts};
pub use store::{JobFilter, JobList, JobStore, SqliteStore, StateChange, StoreError};
pub use validate::{Bounds, Limits};
