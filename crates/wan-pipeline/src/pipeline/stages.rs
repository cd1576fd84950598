//! The stages of the Wan pipelines, each a public function, in the order diffusers runs them.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::{Control, GenerationParams, StepProgress, Trace, WanModels};
use crate::text_encoder::WanTextEncoder;
use crate::transformer::PreparedContext;
use crate::scheduler::Scheduler;
use crate::{Error, Result};

/// Latent channels, and the VAE's temporal and spatial compression.
pub struct LatentGeometry {
    pub channels: usize,
    pub temporal: usize,
    pub spatial: usize,
}

impl LatentGeometry {
    pub fn of(models: &WanModels) -> Self {
        let cfg = &models.vae.config;
        Self {
            channels: cfg.z_dim,
            temporal: cfg.scale_factor_temporal,
            spatial: cfg.scale_factor_spatial,
        }
    }

    /// (1, C, (F-1)/t + 1, H/s, W/s) for `frames` = 4k+1 video frames.
    pub fn shape(&self, frames: usize, height: usize, width: usize) -> [usize; 5] {
        [1, self.channels, (frames - 1) / self.temporal + 1, height / self.spatial, width / self.spatial]
    }
}

/// The prompt's and (with CFG) the negative prompt's embeddings, (1, max_sequence_length,
/// text_dim) each, zero rows after each real length.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    pub prompt: Tensor,
    pub negative: Option<Tensor>,
}

/// Stage "encode prompt" with the pipeline's own text encoder; an error when it was loaded
/// without one (its jobs bring their embeddings).
pub fn encode_prompt(models: &WanModels, params: &GenerationParams) -> Result<PromptEmbeddings> {
    match &models.text_encoder {
        Some(encoder) => encode_prompt_with(encoder, params),
        None => Err(Error::InvalidInput(
            "this pipeline was loaded without its text encoder: the job must bring its prompt embeddings".into(),
        )),
    }
}

/// Stage "encode prompt" with `encoder`.
///
/// With guidance both prompts go through the text encoder in one batch of two: one pass over the
/// encoder's weights instead of two (each row is computed exactly as it would be alone: padding
/// keys are masked and the rows past each prompt's length are zeroed).
pub fn encode_prompt_with(encoder: &WanTextEncoder, params: &GenerationParams) -> Result<PromptEmbeddings> {
    if !params.do_classifier_free_guidance() {
        let prompt = encoder.encode_prompts(&[params.prompt.clone()], params.max_sequence_length)?;
        return Ok(PromptEmbeddings { prompt, negative: None });
    }
    let negative = params.negative_prompt.clone().unwrap_or_default();
    let both = encoder.encode_prompts(&[params.prompt.clone(), negative], params.max_sequence_length)?;
    Ok(PromptEmbeddings { prompt: both.narrow(0, 0, 1)?, negative: Some(both.narrow(0, 1, 1)?) })
}

/// Stage "timesteps": a scheduler from the model's config (with the requested shift) and its
/// timesteps for `num_inference_steps`.
pub fn prepare_scheduler(models: &WanModels, params: &GenerationParams) -> Result<Scheduler> {
    let mut scheduler = Scheduler::from_model_dir(&models.dir, params.shift)?;
    scheduler.set_timesteps(params.num_inference_steps)?;
    Ok(scheduler)
}

/// An RGB image as a (1, 3, H, W) f32 tensor in [-1, 1] at exactly `height` x `width`
/// (resized with Lanczos as diffusers' VideoProcessor does when the size differs).
pub fn image_to_tensor(image: &RgbImage, height: usize, width: usize, device: &Device) -> Result<Tensor> {
    let resized;
    let img = if image.width() as usize == width && image.height() as usize == height {
        image
    } else {
        resized = crate::media::resize_rgb(image, width as u32, height as u32, crate::media::ResizeMode::Stretch)?;
        &resized
    };
    let data: Vec<f32> = img.as_raw().iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    // (H, W, 3) -> (1, 3, H, W)
    let t = Tensor::from_vec(data, (height, width, 3), &Device::Cpu)?.permute((2, 0, 1))?.unsqueeze(0)?;
    Ok(t.contiguous()?.to_device(device)?)
}

/// Frames as a (1, 3, F, H, W) f32 tensor in [-1, 1] at `height` x `width`.
pub fn video_to_tensor(frames: &[RgbImage], height: usize, width: usize, device: &Device) -> Result<Tensor> {
    if frames.is_empty() {
        return Err(Error::InvalidInput("the input video has no frames".into()));
    }
    let per_frame = frames
        .iter()
        .map(|f| image_to_tensor(f, height, width, device))
        .collect::<Result<Vec<_>>>()?;
    // F x (1, 3, H, W) -> (1, 3, F, H, W)
    Ok(Tensor::stack(&per_frame, 2)?)
}

/// VAE-encodes a video in [-1, 1] and normalises its mode as the pipelines do:
/// (mode - latents_mean) * (1 / latents_std).
pub fn encode_video_latents(models: &WanModels, video: &Tensor) -> Result<Tensor> {
    let dist = models.vae.encode(&video.to_dtype(models.dtypes.vae)?)?;
    models.vae.normalize_latents(&dist.mode().to_dtype(DType::F32)?)
}

/// Stage "prepare latents" for image-to-video: the 20-channel condition (B, 4 + C, f, h, w):
/// a 4-channel mask marking the first frame, then the normalised latent of [image, zeros...].
pub fn prepare_image_condition(models: &WanModels, image: &Tensor, num_frames: usize, latent_shape: [usize; 5]) -> Result<Tensor> {
    let [b, _, lf, lh, lw] = latent_shape;
    let (_, c, h, w) = image.dims4()?;
    // The first frame is the image, the rest grey (zeros in [-1, 1]): (B, 3, F, H, W).
    let first = image.unsqueeze(2)?;
    let video = if num_frames > 1 {
        let rest = Tensor::zeros((b, c, num_frames - 1, h, w), image.dtype(), image.device())?;
        Tensor::cat(&[&first, &rest], 2)?
    } else {
        first
    };
    let latent_condition = encode_video_latents(models, &video)?;
    let temporal = models.vae.config.scale_factor_temporal;
    // Mask in frame space: 1 for the first frame, 0 after; the first frame repeated `temporal`
    // times so that the frame axis folds into (latent frames, temporal) exactly.
    let mut mask = vec![0f32; (temporal + num_frames - 1) * lh * lw];
    mask[..temporal * lh * lw].fill(1.0);
    // (1, T + F - 1, h, w) -> (1, f, T, h, w) -> (1, T, f, h, w)
    let mask = Tensor::from_vec(mask, (1, temporal + num_frames - 1, lh, lw), image.device())?
        .reshape((1, lf, temporal, lh, lw))?
        .transpose(1, 2)?
        .contiguous()?
        .repeat((b, 1, 1, 1, 1))?;
    Ok(Tensor::cat(&[&mask, &latent_condition.to_dtype(DType::F32)?], 1)?)
}

/// The guidance scale of each expert's steps (one model: `high_noise` for every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// `guidance_scale`: the steps of `transformer`.
    pub high_noise: f64,
    /// `guidance_scale_2`: the steps of Wan2.2's low-noise expert `transformer_2`.
    pub low_noise: f64,
}

impl Guidance {
    /// `guidance_scale`, and `guidance_scale_2` or else `guidance_scale` again, as diffusers.
    pub fn of(params: &GenerationParams) -> Self {
        Guidance { high_noise: params.guidance_scale, low_noise: params.guidance_scale_2.unwrap_or(params.guidance_scale) }
    }
}

/// What the denoising loop is conditioned on besides the latents.
pub struct DenoiseInputs<'a> {
    pub prompt_embeds: &'a Tensor,
    pub negative_prompt_embeds: Option<&'a Tensor>,
    pub guidance: Guidance,
    /// i2v: the mask + image latent, concatenated to the latents on channels at every step.
    pub condition: Option<&'a Tensor>,
    /// i2v: the CLIP image embedding, used for both guidance passes.
    pub image_embeds: Option<&'a Tensor>,
}

/// Stage "denoise": runs `timesteps` through the transformer and the scheduler. After each step
/// the callback hears the progress; if it answers `Stop`, the run ends with `Error::Cancelled`.
pub fn denoise(
    models: &WanModels,
    scheduler: &mut Scheduler,
    mut latents: Tensor,
    timesteps: &[f64],
    inputs: &DenoiseInputs,
    on_step: &mut dyn FnMut(StepProgress) -> Control,
    mut trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let started = Instant::now();
    let total = timesteps.len();
    let dtype = models.dtype;
    let batch = latents.dim(0)?;
    let image_embeds = inputs.image_embeds.map(|t| t.to_dtype(dtype)).transpose()?;
    let prompt_embeds = inputs.prompt_embeds.to_dtype(dtype)?;
    let negative_prompt_embeds = inputs.negative_prompt_embeds.map(|t| t.to_dtype(dtype)).transpose()?;
    // Wan2.2 A14B: timesteps at or above the boundary run the high-noise expert, the rest the
    // low-noise one; one scheduler (and its multistep history) runs across the switch.
    let boundary = match (&models.transformer_2, models.boundary_ratio) {
        (Some(_), Some(ratio)) => Some(ratio * scheduler.num_train_timesteps() as f64),
        _ => None,
    };
    // The text (and image) context of each prompt, embedded and projected to every block's
    // cross-attention keys and values once per job and expert: it depends on neither the
    // latents nor the step. The timesteps fall, so each expert runs one stretch of steps, and
    // the high-noise expert's context is dropped when the low-noise one takes over.
    let mut current: Option<(usize, PreparedContext, Option<PreparedContext>)> = None;
    for (i, &t) in timesteps.iter().enumerate() {
        let (expert, transformer, guidance_scale) = match (boundary, &models.transformer_2) {
            (Some(b), Some(low_noise)) if t < b => (1, low_noise, inputs.guidance.low_noise),
            _ => (0, &models.transformer, inputs.guidance.high_noise),
        };
        let (cond_context, uncond_context) = match current.take() {
            Some((e, cond, uncond)) if e == expert => (cond, uncond),
            _ => (
                transformer.prepare_context(&prompt_embeds, image_embeds.as_ref())?,
                negative_prompt_embeds.as_ref().map(|t| transformer.prepare_context(t, image_embeds.as_ref())).transpose()?,
            ),
        };
        let (_, cond_context, uncond_context) = &*current.insert((expert, cond_context, uncond_context));
        let model_input = match inputs.condition {
            Some(cond) => Tensor::cat(&[&latents, cond], 1)?,
            None => latents.clone(),
        }
        .to_dtype(dtype)?;
        let timestep = Tensor::full(t as f32, batch, latents.device())?;
        let noise_cond = transformer.forward_with_context(&model_input, &timestep, cond_context, None)?.to_dtype(DType::F32)?;
        let noise_pred = match uncond_context {
            Some(uncond) => {
                let noise_uncond = transformer.forward_with_context(&model_input, &timestep, uncond, None)?.to_dtype(DType::F32)?;
                // uncond + g * (cond - uncond)
                let guided = (&noise_uncond + ((&noise_cond - &noise_uncond)? * guidance_scale)?)?;
                if let Some(tr) = trace.as_deref_mut() {
                    tr.noise_pred_uncond.push(noise_uncond);
                }
                guided
            }
            None => noise_cond.clone(),
        };
        latents = scheduler.step(&noise_pred, t, &latents)?;
        if let Some(tr) = trace.as_deref_mut() {
            tr.timesteps_run.push(t);
            tr.expert.push(expert as i64);
            tr.noise_pred_cond.push(noise_cond);
            tr.step_latents.push(latents.clone());
        }
        if on_step(StepProgress { step: i + 1, total, elapsed: started.elapsed() }) == Control::Stop {
            return Err(Error::Cancelled);
        }
    }
    Ok(latents)
}

/// Stage "decode": de-normalises the latents and decodes them to a video in [-1, 1],
/// (B, 3, F, H, W).
pub fn decode(models: &WanModels, latents: &Tensor) -> Result<Tensor> {
    let z = models.vae.denormalize_latents(&latents.to_dtype(DType::F32)?)?;
    Ok(models.vae.decode(&z.to_dtype(models.dtypes.vae)?)?.to_dtype(DType::F32)?)
}

/// A decoded video (B, 3, F, H, W) in [-1, 1] as frames (B, F, H, W, 3) in [0, 1], as diffusers'
/// `postprocess_video(output_type="np")` lays them out.
pub fn video_to_unit_frames(video: &Tensor) -> Result<Tensor> {
    let frames = ((video.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    // (B, 3, F, H, W) -> (B, F, H, W, 3)
    Ok(frames.permute((0, 2, 3, 4, 1))?.contiguous()?)
}
