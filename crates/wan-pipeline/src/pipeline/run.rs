//! The three pipelines end to end: prepare (prompt, timesteps, latents, conditions), denoise,
//! decode. `generate` draws the noise from the seed and streams the frames out;
//! `prepare` + `denoise_prepared` take the noise as given, which is how the parity test feeds the
//! reference's initial latents.

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use image::RgbImage;

use super::stages::{self, DenoiseInputs, Guidance, LatentGeometry, PromptEmbeddings};
use super::{gaussian_noise, round_up_frames, Conditioning, Control, GenerationParams, ModelKind, StepProgress, Trace, WanModels};
use crate::scheduler::Scheduler;
use crate::{Error, Result};

/// Everything the denoising loop needs, computed by the stages before it.
pub struct Prepared {
    pub prompt_embeds: Tensor,
    pub negative_prompt_embeds: Option<Tensor>,
    pub scheduler: Scheduler,
    /// The timesteps the loop runs (all of them, or the tail that v2v's strength keeps).
    pub timesteps: Vec<f64>,
    /// The latents the loop starts from (normalised latent space, f32).
    pub latents: Tensor,
    /// i2v: the mask + image latent condition, (1, 4 + C, f, h, w).
    pub condition: Option<Tensor>,
    /// i2v: the CLIP image embedding.
    pub image_embeds: Option<Tensor>,
    /// i2v: the CLIP pixel values; v2v: none.
    pub clip_pixel_values: Option<Tensor>,
    /// i2v: the image in [-1, 1]; v2v: the video in [-1, 1].
    pub preprocessed: Option<Tensor>,
    /// v2v: the normalised latents of the input video, and the timestep they were noised to.
    pub init_latents: Option<Tensor>,
    pub latent_timestep: Option<f64>,
    /// Video frames generated (4k+1) and the frames asked for (the first ones are kept).
    pub frames_generated: usize,
    pub frames_wanted: usize,
    /// How long the text encoder took (prompt and negative prompt).
    pub text_encode: Duration,
}

/// The shape of the noise `prepare` expects for these parameters (and conditioning).
pub fn noise_shape(models: &WanModels, params: &GenerationParams, conditioning: &Conditioning) -> [usize; 5] {
    let geometry = LatentGeometry::of(models);
    let wanted = match conditioning {
        Conditioning::Video { frames, .. } => frames.len(),
        _ => params.num_frames,
    };
    geometry.shape(round_up_frames(wanted, geometry.temporal), params.height, params.width)
}

fn check_model_fits(models: &WanModels, conditioning: &Conditioning) -> Result<()> {
    match (conditioning, models.kind) {
        (Conditioning::Image(_), ModelKind::I2v) | (Conditioning::Text | Conditioning::Video { .. }, ModelKind::T2v) => Ok(()),
        (Conditioning::Image(_), ModelKind::T2v) => Err(Error::InvalidInput(
            "image-to-video needs an image-to-video model (WanImageToVideoPipeline); the loaded model is text-to-video".into(),
        )),
        (_, ModelKind::I2v) => Err(Error::InvalidInput(
            "the loaded model is image-to-video (WanImageToVideoPipeline): it needs an image".into(),
        )),
    }
}

/// Stages up to the denoising loop. `noise` has `noise_shape(..)`: for t2v and i2v it is the
/// initial latents, for v2v the noise added to the encoded video.
pub fn prepare(models: &WanModels, params: &GenerationParams, conditioning: &Conditioning, noise: &Tensor) -> Result<Prepared> {
    prepare_with(models, params, conditioning, noise, None)
}

/// [`prepare`] with the prompt embeddings computed beforehand (`None`: by the pipeline's text
/// encoder now).
pub fn prepare_with(
    models: &WanModels,
    params: &GenerationParams,
    conditioning: &Conditioning,
    noise: &Tensor,
    embeddings: Option<PromptEmbeddings>,
) -> Result<Prepared> {
    check_model_fits(models, conditioning)?;
    let geometry = LatentGeometry::of(models);
    let patch = models.transformer.config.patch_size.get(1).copied().unwrap_or(2);
    params.check(geometry.spatial * patch)?;
    let device = &models.device;
    let shape = noise_shape(models, params, conditioning);
    if noise.dims() != shape {
        return Err(Error::InvalidInput(format!("noise has shape {:?}, expected {shape:?}", noise.dims())));
    }
    let noise = noise.to_dtype(DType::F32)?.to_device(device)?;

    let text_started = Instant::now();
    let embeddings = match embeddings {
        Some(given) => {
            if given.negative.is_some() != params.do_classifier_free_guidance() {
                return Err(Error::InvalidInput(
                    "the prompt embeddings were computed for another guidance setting (negative prompt embeddings present iff guidance_scale > 1)".into(),
                ));
            }
            given
        }
        None => stages::encode_prompt(models, params)?,
    };
    let (prompt_embeds, negative_prompt_embeds) = (embeddings.prompt, embeddings.negative);
    let text_encode = text_started.elapsed();
    let mut scheduler = stages::prepare_scheduler(models, params)?;
    let all_timesteps = scheduler.timesteps().to_vec();

    let mut latents = noise.clone();
    let mut timesteps = all_timesteps;
    let (mut condition, mut image_embeds, mut clip_pixel_values, mut preprocessed) = (None, None, None, None);
    let (mut init_latents, mut latent_timestep) = (None, None);
    let mut frames_generated = round_up_frames(params.num_frames, geometry.temporal);
    let mut frames_wanted = params.num_frames;

    match conditioning {
        Conditioning::Text => {
            // WanPipeline sets the begin index; the i2v and v2v pipelines let the scheduler find it.
            scheduler.set_begin_index(0);
        }
        Conditioning::Image(image) => {
            // Wan2.1 also embeds the image with CLIP for its image cross-attention; Wan2.2 has no
            // image encoder and is conditioned by the latent condition alone.
            if let Some(encoder) = &models.image_encoder {
                let pixel_values = encoder.preprocess(image)?;
                image_embeds = Some(encoder.encode(&pixel_values.to_dtype(models.dtypes.image_encoder)?)?);
                clip_pixel_values = Some(pixel_values);
            }
            let image_tensor = stages::image_to_tensor(image, params.height, params.width, device)?;
            condition = Some(stages::prepare_image_condition(models, &image_tensor, frames_generated, shape)?);
            preprocessed = Some(image_tensor);
        }
        Conditioning::Video { frames, strength } => {
            if !(0.0..=1.0).contains(strength) {
                return Err(Error::InvalidInput(format!("strength must be within 0..=1, got {strength}")));
            }
            let last = frames.last().ok_or_else(|| Error::InvalidInput("the input video has no frames".into()))?;
            // Pad to 4k+1 frames by repeating the last one; the output is cut back to the input's count.
            frames_generated = round_up_frames(frames.len(), geometry.temporal);
            frames_wanted = frames.len();
            let mut padded: Vec<RgbImage> = frames.clone();
            padded.resize(frames_generated, last.clone());
            let video = stages::video_to_tensor(&padded, params.height, params.width, device)?;
            let encoded = stages::encode_video_latents(models, &video)?;
            let (kept, _t_start) = scheduler.timesteps_for_strength(*strength);
            latents = match kept.first() {
                Some(&t) => {
                    latent_timestep = Some(t);
                    scheduler.add_noise(&encoded, &noise, t)?
                }
                // Strength 0 keeps no step: the video is only re-encoded.
                None => encoded.clone(),
            };
            timesteps = kept;
            init_latents = Some(encoded);
            preprocessed = Some(video);
        }
    }
    Ok(Prepared {
        prompt_embeds,
        negative_prompt_embeds,
        scheduler,
        timesteps,
        latents,
        condition,
        image_embeds,
        clip_pixel_values,
        preprocessed,
        init_latents,
        latent_timestep,
        frames_generated,
        frames_wanted,
        text_encode,
    })
}

/// The denoising loop over a prepared run; returns the final latents.
pub fn denoise_prepared(
    models: &WanModels,
    prepared: &mut Prepared,
    guidance: Guidance,
    on_step: &mut dyn FnMut(StepProgress) -> Control,
    trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let inputs = DenoiseInputs {
        prompt_embeds: &prepared.prompt_embeds,
        negative_prompt_embeds: prepared.negative_prompt_embeds.as_ref(),
        guidance,
        condition: prepared.condition.as_ref(),
        image_embeds: prepared.image_embeds.as_ref(),
    };
    let timesteps = prepared.timesteps.clone();
    stages::denoise(models, &mut prepared.scheduler, prepared.latents.clone(), &timesteps, &inputs, on_step, trace)
}

/// What `generate` reports.
#[derive(Debug, Clone)]
pub struct GeneratedVideo {
    pub seed: u64,
    pub frames_written: usize,
    pub width: usize,
    pub height: usize,
    pub times: StageTimes,
}

/// Where a generation's time went (wall clock, on this thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// The text encoder over the prompt and the negative prompt.
    pub text_encode: Duration,
    /// The rest of the preparation: scheduler, image or video conditioning (VAE encode, CLIP).
    pub prepare_rest: Duration,
    /// The denoising loop.
    pub steps: Duration,
    /// The VAE decode, without the time spent handing frames out.
    pub vae_decode: Duration,
    /// Inside `on_frame` (for the CLI and the server: encoding the frames into the mp4).
    pub frames_out: Duration,
}

/// Runs one generation from its seed and hands each output frame to `on_frame` as soon as the VAE
/// has decoded it, so a long video never sits in memory whole.
pub fn generate(
    models: &WanModels,
    params: &GenerationParams,
    conditioning: &Conditioning,
    on_step: &mut dyn FnMut(StepProgress) -> Control,
    on_frame: &mut dyn FnMut(RgbImage) -> Result<()>,
) -> Result<GeneratedVideo> {
    generate_with(models, params, conditioning, None, on_step, on_frame)
}

/// [`generate`] with the prompt embeddings computed beforehand (by
/// [`stages::encode_prompt_with`], e.g. before the DiT was loaded); `None`: by the pipeline's
/// text encoder.
pub fn generate_with(
    models: &WanModels,
    params: &GenerationParams,
    conditioning: &Conditioning,
    embeddings: Option<PromptEmbeddings>,
    on_step: &mut dyn FnMut(StepProgress) -> Control,
    on_frame: &mut dyn FnMut(RgbImage) -> Result<()>,
) -> Result<GeneratedVideo> {
    let shape = noise_shape(models, params, conditioning);
    let noise = gaussian_noise(params.seed, &shape, &models.device)?;
    let started = Instant::now();
    let mut prepared = prepare_with(models, params, conditioning, &noise, embeddings)?;
    let mut times = StageTimes { text_encode: prepared.text_encode, ..StageTimes::default() };
    times.prepare_rest = started.elapsed().saturating_sub(prepared.text_encode);
    let steps_started = Instant::now();
    let latents = denoise_prepared(models, &mut prepared, Guidance::of(params), on_step, None)?;
    times.steps = steps_started.elapsed();
    let decode_started = Instant::now();
    let z = models.vae.denormalize_latents(&latents)?.to_dtype(models.dtypes.vae)?;
    let wanted = prepared.frames_wanted;
    let mut written = 0usize;
    let mut frames_out = Duration::ZERO;
    models.vae.decode_streaming(&z, &mut |chunk: Tensor| {
        // (1, 3, n, H, W) in [-1, 1] -> (n, H, W, 3) in [0, 1] -> images
        let frames = stages::video_to_unit_frames(&chunk)?.squeeze(0)?;
        for image in crate::media::tensor_to_frames(&frames)? {
            if written < wanted {
                let handed = Instant::now();
                on_frame(image)?;
                frames_out += handed.elapsed();
                written += 1;
            }
        }
        Ok(())
    })?;
    times.frames_out = frames_out;
    times.vae_decode = decode_started.elapsed().saturating_sub(frames_out);
    Ok(GeneratedVideo { seed: params.seed, frames_written: written, width: params.width, height: params.height, times })
}
