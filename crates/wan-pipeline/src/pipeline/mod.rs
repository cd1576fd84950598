//! The text-, image- and video-to-video pipelines, staged as diffusers stages them:
//! check inputs -> encode prompt -> timesteps -> prepare latents -> denoise -> decode.
//!
//! Each stage is a public function in [`stages`], so the job manager (and the parity test) can
//! run or observe them one by one. The denoising loop reports every step to a callback that can
//! also stop the run, which is how a job is cancelled within one step's time.

mod models;
mod noise;
mod params;
pub mod stages;
mod run;
mod trace;

pub use models::{check_complete, check_complete_layout, detect_kind, read_layout, ModelDtypes, ModelKind, PipelineLayout, WanModels};
pub use noise::{draw_seed, gaussian_noise};
pub use params::{round_up_frames, GenerationParams, Conditioning};
pub use run::{denoise_prepared, generate, generate_with, noise_shape, prepare, prepare_with, GeneratedVideo, Prepared, StageTimes};
pub use stages::{encode_prompt_with, Guidance, PromptEmbeddings};
pub use trace::Trace;

use std::time::Duration;

/// What the per-step callback hears after each denoising step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// 1-based index of the step just finished.
    pub step: usize,
    pub total: usize,
    /// Time since the denoising loop started.
    pub elapsed: Duration,
}

/// The callback's answer: go on, or stop the run (it then ends with `Error::Cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}
