//! The real model behind the server: wan-pipeline's text-, image- and video-to-video pipelines
//! wrapped as a [`LoadedPipeline`], and the [`PipelineFactory`] that loads them.
//!
//! A job's parameters become `GenerationParams`; its input file (stored by the upload route) is
//! read with the media limits; frames go straight from the VAE to the mp4 writer at the
//! temporary path the job manager chose, so a long video is never held whole.
//!
//! The text encoder (the 5.7B-parameter UMT5-XXL of the real models) is loaded for each job's
//! prompts and released before the first step, unless `keep_text_encoder` keeps it between jobs
//! (faster jobs, more memory held while idle).

use std::path::Path;

use candle_core::{DType, Device};
use wan_jobs::{Control, GenerationError, GenerationMode, GenerationOutcome, InvalidParam, JobParams, JobSpec, StepProgress};
use wan_pipeline::device::DeviceChoice;
use wan_pipeline::media::{self, MediaLimits, Mp4Writer, ResizeMode};
use wan_pipeline::memory::{self, JobShape, WeightBytes};
use wan_pipeline::fp8::WeightStorage;
use wan_pipeline::pipeline::{self, check_complete, encode_prompt_with, Conditioning, GenerationParams, ModelDtypes, ModelKind, WanModels};
use wan_pipeline::text_encoder::WanTextEncoder;

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
        // Out of memory among them: the job fails with the figures, the models stay loaded and
        // the next job runs.
        other => GenerationError::Model(Box::new(other)),
    }
}

/// One loaded Wan pipeline directory.
pub struct WanLoadedPipeline {
    models: WanModels,
    /// The loaded weights, counted once at load for the memory estimates.
    weights: WeightBytes,
    /// `--vram-budget`: the most a job (weights included) may need.
    memory_budget: Option<u64>,
    limits: MediaLimits,
}

/// `t2v 832x480x81`: how errors name the job they refuse.
fn job_label(params: &JobParams, width: u32, height: u32, frames: usize) -> String {
    format!("{} {width}x{height}x{frames}", params.mode.name())
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
            guidance_scale_2: None,
            shift: None,
            seed: p.seed,
            max_sequence_length: MAX_SEQUENCE_LENGTH,
        };
        // The real size and frame count are known now (video-to-video takes them from its input):
        // refuse a job whose working set the device cannot hold before it allocates anything.
        let asked = job_label(p, width, height, num_frames);
        let shape = JobShape::of(&params, !matches!(conditioning, Conditioning::Text));
        let estimate = memory::estimate(&self.models, self.weights, shape);
        memory::check_fits(&self.models.device, &estimate, self.memory_budget, &asked).map_err(job_error)?;
        tracing::info!(job = %job.job_id, estimate = %estimate, "job starts");
        let explain = |e| job_error(memory::explain_out_of_memory(e, &self.models.device, &asked));
        // Without a resident text encoder: load it, encode, release it before the first step.
        let embeddings = match self.models.text_encoder {
            Some(_) => None,
            None => {
                let m = &self.models;
                let encoder = WanTextEncoder::load(&m.dir, m.dtypes.text_encoder, &m.device).map_err(explain)?;
                Some(encode_prompt_with(&encoder, &params).map_err(explain)?)
            }
        };
        let mut writer = Mp4Writer::create(output_tmp, width, height, p.fps).map_err(job_error)?;
        let result = pipeline::generate_with(
            &self.models,
            &params,
            &conditioning,
            embeddings,
            &mut |s| {
                let answer = progress(StepProgress { step: s.step as u32, total: s.total as u32 });
                match answer {
                    Control::Continue => pipeline::Control::Continue,
                    Control::Stop => pipeline::Control::Stop,
                }
            },
            &mut |frame| writer.push_frame(&frame),
        );
        let video = result.map_err(explain)?;
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
        self.check_memory(params)
    }
}

impl WanLoadedPipeline {
    /// With a memory budget, refuses at admission a job whose estimated peak exceeds it. Needs the
    /// size and frame count: a video-to-video job that takes them from its input is checked when
    /// it starts instead.
    fn check_memory(&self, params: &JobParams) -> Result<(), InvalidParam> {
        let Some(budget) = self.memory_budget else { return Ok(()) };
        let (width, height, frames) = match (&params.mode, params.width, params.height, params.num_frames) {
            (GenerationMode::VideoToVideo { .. }, Some(w), Some(h), Some(f)) => (w, h, f),
            (GenerationMode::VideoToVideo { .. }, ..) => return Ok(()),
            (_, w, h, f) => (w.unwrap_or(832), h.unwrap_or(480), f.unwrap_or(81)),
        };
        let shape = JobShape {
            width: width as usize,
            height: height as usize,
            num_frames: frames as usize,
            guidance: params.guidance_scale > 1.0,
            encodes_input: !matches!(params.mode, GenerationMode::TextToVideo),
        };
        let estimate = memory::estimate(&self.models, self.weights, shape);
        if estimate.peak() > budget {
            return Err(InvalidParam {
                field: "width, height, num_frames".into(),
                message: format!(
                    "{} needs {estimate}, more than the memory budget of {} (--vram-budget); ask for fewer frames or a smaller size",
                    job_label(params, width, height, frames as usize),
                    memory::human_bytes(budget)
                ),
            });
        }
        Ok(())
    }
}

/// Loads wan-pipeline models on the device chosen at startup: f32 on the CPU, bf16 on a GPU (the
/// text encoder in its own dtype when one is set).
pub struct WanPipelineFactory {
    device: Device,
    memory_budget: Option<u64>,
    text_encoder_dtype: Option<DType>,
    weights: WeightStorage,
    keep_text_encoder: bool,
}

impl WanPipelineFactory {
    /// Opens the device once (a `cuda` choice that cannot be met is an error that says why) and
    /// checks that the kernel choice ([`wan_pipeline::backend::kernel_choice`]) suits it.
    pub fn new(device: DeviceChoice, memory_budget: Option<u64>) -> Result<Self, wan_pipeline::Error> {
        let device = device.open()?;
        wan_pipeline::backend::check_choice(wan_pipeline::backend::kernel_choice(), &device)?;
        tracing::info!(
            device = %wan_pipeline::device::describe(&device),
            kernels = %wan_pipeline::backend::describe(&device),
            "models will run on this device"
        );
        Ok(WanPipelineFactory { device, memory_budget, ..Self::cpu() })
    }

    /// The CPU, no budget: what the tests and the demo use.
    pub fn cpu() -> Self {
        WanPipelineFactory {
            device: Device::Cpu,
            memory_budget: None,
            text_encoder_dtype: None,
            weights: WeightStorage::Compute,
            keep_text_encoder: false,
        }
    }

    /// How the DiT blocks' Linears are held (`fp8`: e4m3fn, widened for each call).
    pub fn with_weights(mut self, weights: WeightStorage) -> Self {
        self.weights = weights;
        self
    }

    /// Keeps the text encoder loaded between jobs instead of loading it for each job.
    pub fn with_text_encoder_kept(mut self, keep: bool) -> Self {
        self.keep_text_encoder = keep;
        self
    }

    /// Loads the text encoder in `dtype` (`None`: the DiT's dtype).
    pub fn with_text_encoder_dtype(mut self, dtype: Option<DType>) -> Self {
        self.text_encoder_dtype = dtype;
        self
    }
}

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
        let dtype = if matches!(self.device, Device::Cpu) { DType::F32 } else { DType::BF16 };
        let dtypes = ModelDtypes {
            text_encoder: self.text_encoder_dtype.unwrap_or(dtype),
            transformer_weights: self.weights,
            ..ModelDtypes::uniform(dtype)
        };
        let weights = WeightBytes::of_dir_with(dir, kind, dtypes).map_err(|e| e.to_string())?;
        if let Some(budget) = self.memory_budget {
            if weights.total() > budget {
                return Err(format!(
                    "{} needs {} for its weights alone, more than the memory budget of {}",
                    dir.display(),
                    memory::human_bytes(weights.total()),
                    memory::human_bytes(budget)
                ));
            }
        }
        let load = if self.keep_text_encoder { WanModels::load_with } else { WanModels::load_without_text_encoder };
        let models = load(dir, dtypes, &self.device)
            .map_err(|e| memory::explain_out_of_memory(e, &self.device, &format!("loading {}", dir.display())).to_string())?;
        Ok(Box::new(WanLoadedPipeline { models, weights, memory_budget: self.memory_budget, limits: MediaLimits::default() }))
    }

    fn gpu_device_id(&self) -> Option<u32> {
        wan_pipeline::device::cuda_ordinal(&self.device).map(|n| n as u32)
    }
}
