//! The real model behind the server: wan-pipeline's text-, image- and video-to-video pipelines
//! wrapped as a [`LoadedPipeline`], and the [`PipelineFactory`] that loads them.
//!
//! A job's parameters become `GenerationParams`; its input file (stored by the upload route) is
//! read with the media limits; frames go straight from the VAE to the mp4 writer at the
//! temporary path the job manager chose, so a long video is never held whole.

use std::path::Path;

use candle_core::{DType, Device};
use wan_jobs::{Control, GenerationError, GenerationMode, GenerationOutcome, InvalidParam, JobParams, JobSpec, StepProgress};
use wan_pipeline::media::{self, MediaLimits, Mp4Writer, ResizeMode};
use wan_pipeline::pipeline::{self, check_complete, Conditioning, GenerationParams, ModelKind, WanModels};

use crate::generator::{LoadedPipeline, PipelineFactory, Role};

/// Text tokens given to the transformer: Wan is trained with 512 (and i2v requires it).
const MAX_SEQUENCE_LENGTH: usize = 512;
/// Video-to-video without `num_frames`: at most this many input frames are used.
const DEFAULT_V2V_MAX_FRAMES: usize = 81;

/// Maps a pipeline error to what the job manager reports.
fn job_error(e: wan_pipeline::Error) -> GenerationError {
    match e {
        wan_pipeline::Error::Cancelled => GenerationError::Cancelled,
        wan_pipeline::Error::InvalidInput(m) | wan_pipeline::Error::Media(m) => GenerationError::InvalidInput(m),
        other => GenerationError::Failed(other.to_string()),
    }
}

/// One loaded Wan pipeline directory.
pub struct WanLoadedPipeline {
    models: WanModels,
    limits: MediaLimits,
}

impl WanLoadedPipeline {
    fn conditioning(&self, params: &JobParams) -> Result<(Conditioning, u32, u32, usize), GenerationError> {
        let width = params.width.unwrap_or(832);
        let height = params.height.unwrap_or(480);
        let frames = params.num_frames.map(|n| n as usize);
        Ok(match &params.mode {
            GenerationMode::TextToVideo => (Conditioning::Text, width, height, frames.unwrap_or(81)),
            GenerationMode::ImageToVideo { image } => {
                let picture = media::read_image(image, &self.limits).map_err(job_error)?;
                (Conditioning::Image(picture), width, height, frames.unwrap_or(81))
            }
            GenerationMode::VideoToVideo { video, strength } => {
                // Size not given: the input's, rounded down to the model's multiple of 16.
                let (w, h) = match (params.width, params.height) {
                    (Some(w), Some(h)) => (w, h),
                    _ => match media::probe_file(video, &self.limits).map_err(job_error)? {
                        media::MediaInfo::Video(info) => ((info.width / 16 * 16).max(16), (info.height / 16 * 16).max(16)),
                        media::MediaInfo::Image(_) => {
                            return Err(GenerationError::InvalidInput("video-to-video needs a video, got an image".into()))
                        }
                    },
                };
                let max_frames = frames.unwrap_or(DEFAULT_V2V_MAX_FRAMES);
                let read = media::read_video(video, w, h, max_frames, ResizeMode::Stretch, &self.limits).map_err(job_error)?;
                let n = read.frames.len();
                (Conditioning::Video { frames: read.frames, strength: *strength }, w, h, n)
            }
        })
    }
}

impl LoadedPipeline for WanLoadedPipeline {
    fn generate(
        &self,
        job: &JobSpec,
        output_tmp: &Path,
        progress: &mut dyn FnMut(StepProgress) -> Control,
    ) -> Result<GenerationOutcome, GenerationError> {
        let p = &job.params;
        let (conditioning, width, height, num_frames) = self.conditioning(p)?;
        let params = GenerationParams {
            prompt: p.prompt.clone(),
            negative_prompt: Some(p.negative_prompt.clone()),
            height: height as usize,
            width: width as usize,
            num_frames,
            num_inference_steps: p.num_inference_steps as usize,
            guidance_scale: p.guidance_scale,
            shift: None,
            seed: p.seed,
            max_sequence_length: MAX_SEQUENCE_LENGTH,
        };
        let mut writer = Mp4Writer::create(output_tmp, width, height, p.fps).map_err(job_error)?;
        let result = pipeline::generate(
            &self.models,
            &params,
            &conditioning,
            &mut |s| {
                let answer = progress(StepProgress { step: s.step as u32, total: s.total as u32 });
                match answer {
                    Control::Continue => pipeline::Control::Continue,
                    Control::Stop => pipeline::Control::Stop,
                }
            },
            &mut |frame| writer.push_frame(&frame),
        );
        let video = result.map_err(job_error)?;
        writer.finish().map_err(job_error)?;
        Ok(GenerationOutcome { frames: Some(video.frames_written as u32) })
    }

    fn check(&self, params: &JobParams) -> Result<(), InvalidParam> {
        let wants = match params.mode {
            GenerationMode::ImageToVideo { .. } => ModelKind::I2v,
            _ => ModelKind::T2v,
        };
        if wants != self.models.kind {
            return Err(InvalidParam {
                field: "mode".into(),
                message: format!("the loaded {} model cannot run {}", self.models.kind.as_str(), params.mode.name()),
            });
        }
        Ok(())
    }
}

/// Loads wan-pipeline models: f32 on the CPU, bf16 on a GPU.
pub struct WanPipelineFactory;

impl PipelineFactory for WanPipelineFactory {
    fn load(&self, dir: &Path, role: Role) -> Result<Box<dyn LoadedPipeline>, String> {
        // Refuse an incomplete or foreign directory before touching the device.
        let kind = check_complete(dir).map_err(|e| e.to_string())?;
        let expected = match role {
            Role::T2v => ModelKind::T2v,
            Role::I2v => ModelKind::I2v,
        };
        if kind != expected {
            return Err(format!("{} holds a {} model, not a {} one", dir.display(), kind.as_str(), role.as_str()));
        }
        let device = wan_pipeline::loader::default_device();
        let dtype = if matches!(device, Device::Cpu) { DType::F32 } else { DType::BF16 };
        let models = WanModels::load(dir, dtype, &device).map_err(|e| e.to_string())?;
        Ok(Box::new(WanLoadedPipeline { models, limits: MediaLimits::default() }))
    }

    fn gpu_enabled(&self) -> bool {
        cfg!(feature = "cuda")
    }
}
