//! The seam between the job manager and the model: the [`Generator`] trait.
//!
//! The manager never sees candle; whatever implements this trait (the wan-pipeline adapter in
//! wan-server, or a test double) loads its models once and is called for each job on a blocking
//! thread. The per-step callback is how progress is reported and how cancellation and shutdown
//! reach the denoising loop: when it answers [`Control::Stop`], the generator returns
//! [`GenerationError::Cancelled`] at once.

use std::path::Path;

use crate::job::{JobId, JobParams};

/// What a generator is asked to make.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub job_id: JobId,
    /// Validated parameters; `params.seed` is the concrete seed to use (never -1).
    pub params: JobParams,
}

/// Reported after each denoising step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepProgress {
    /// Steps done so far (1 after the first step).
    pub step: u32,
    pub total: u32,
}

/// The answer of the progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop now (the job was cancelled, or the server is stopping): return `Cancelled`.
    Stop,
}

/// What a finished generation reports besides the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationOutcome {
    /// Frames written, if known.
    pub frames: Option<u32>,
}

/// Why a generation did not produce a file. (An adapter over wan-pipeline maps its
/// `Error::Cancelled` to `Cancelled`, `Error::InvalidInput` to `InvalidInput`, the rest to `Failed`.)
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// The progress callback said stop.
    #[error("cancelled")]
    Cancelled,
    /// The input cannot be generated from (bad image/video, unsupported size for this model).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model's own error (out of memory with the figures, a weight that does not load...),
    /// kept whole so that the generator's caller can still tell its kind (downcast).
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Anything else (an I/O error, a model that is not loaded).
    #[error("{0}")]
    Failed(String),
}

/// Whether a generator can take jobs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not loaded (or loading); the reason is shown to clients with a 503.
    NotReady(String),
}

/// A request the model cannot serve, found at admission (answered 400 naming the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidParam {
    pub field: String,
    pub message: String,
}

/// The model behind the job manager.
pub trait Generator: Send + Sync + 'static {
    /// Runs one job to an mp4 at `output_tmp` (the manager renames it into `outputs/` on success
    /// and deletes it otherwise). Called on a blocking thread. `progress` must be called after
    /// every denoising step; when it returns [`Control::Stop`], return
    /// [`GenerationError::Cancelled`] without finishing.
    fn generate(
        &self,
        job: &JobSpec,
        output_tmp: &Path,
        progress: &mut dyn FnMut(StepProgress) -> Control,
    ) -> Result<GenerationOutcome, GenerationError>;

    /// Whether a model is loaded that can serve jobs.
    fn ready(&self) -> Readiness;

    /// The model's own checks of a request, made at admission (e.g. its supported sizes or the
    /// mode it was loaded for). The default accepts everything the limits accepted.
    fn check(&self, _params: &JobParams) -> Result<(), InvalidParam> {
        Ok(())
    }
}
