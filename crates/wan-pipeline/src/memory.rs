//! How much memory a job needs, estimated before it runs from the model's configs, the dtype and
//! the request (frames, width, height), so that a job that cannot fit is refused with figures
//! instead of dying halfway with a CUDA allocation failure.
//!
//! The estimate is the resident weights plus the largest working set of one stage (the stages run
//! one after another, so their working sets never add up): the text encoder over two prompts, one
//! DiT forward at the request's token count, the VAE encode of an input, the VAE decode of one
//! latent frame. The formulas count the tensors each stage holds at its peak; they are upper
//! bounds meant for admission, not an allocator trace.

use std::fmt;
use std::path::Path;

use candle_core::{DType, Device};

use crate::pipeline::{round_up_frames, GenerationParams, ModelDtypes, ModelKind, WanModels};
use crate::text_encoder::{Umt5Config, WanTextEncoder};
use crate::transformer::attention::SCORE_BUDGET_BYTES;
use crate::transformer::WanTransformerConfig;
use crate::vae::WanVaeConfig;
use crate::{Error, Result};

/// Bytes as people read them: `12.3 GiB`, `640.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Parses `24GiB`, `8 GB`, `512MiB`, `1073741824` (binary and decimal units, case-insensitive).
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => (1u64 << 20) as f64,
        "g" | "gb" => 1e9,
        "gib" => (1u64 << 30) as f64,
        "t" | "tb" => 1e12,
        "tib" => (1u64 << 40) as f64,
        _ => return Err(Error::InvalidInput(format!("{text:?} is not a size (e.g. 24GiB, 8GB, 512MiB or a byte count)"))),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * scale < u64::MAX as f64 => Ok((n * scale).round() as u64),
        _ => Err(Error::InvalidInput(format!("{text:?} is not a size (e.g. 24GiB, 8GB, 512MiB or a byte count)"))),
    }
}

/// The weights of one loaded pipeline, per component, in the dtype they were loaded in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightBytes {
    pub text_encoder: u64,
    pub image_encoder: u64,
    pub transformer: u64,
    pub vae: u64,
}

impl WeightBytes {
    pub fn total(&self) -> u64 {
        self.text_encoder + self.image_encoder + self.transformer + self.vae
    }

    /// Reads the safetensors headers of each component of `model_dir` (no weights are read) and
    /// counts their elements at `dtype`'s size.
    pub fn of_dir(model_dir: &Path, kind: ModelKind, dtype: DType) -> Result<Self> {
        Self::of_dir_with(model_dir, kind, ModelDtypes::uniform(dtype))
    }

    /// [`WeightBytes::of_dir`] with each component in its own dtype.
    pub fn of_dir_with(model_dir: &Path, kind: ModelKind, dtypes: ModelDtypes) -> Result<Self> {
        let headers = |component: &str| -> Result<crate::loader::streaming::StreamingSafetensors> {
            crate::loader::streaming::StreamingSafetensors::open(&crate::loader::safetensors_files(&model_dir.join(component))?)
        };
        let size = |component: &str, dtype: DType| -> Result<u64> { Ok(headers(component)?.element_count() * dtype.size_in_bytes() as u64) };
        // The DiT's fp8 layers weigh a byte per value, the rest its compute dtype's size; Wan2.2
        // A14B's two experts are both resident.
        let dit = |component: &str| -> Result<u64> {
            let tensors = headers(component)?;
            let stored = tensors.element_count_where(crate::fp8::is_stored_fp8);
            let compute_bytes = dtypes.transformer.size_in_bytes() as u64;
            let stored_bytes = dtypes.transformer_weights.bytes_per_value(dtypes.transformer) as u64;
            Ok((tensors.element_count() - stored) * compute_bytes + stored * stored_bytes)
        };
        let layout = crate::pipeline::read_layout(model_dir)?;
        let transformer = dit("transformer")? + if layout.has_transformer_2 { dit("transformer_2")? } else { 0 };
        Ok(WeightBytes {
            text_encoder: size("text_encoder", dtypes.text_encoder)?,
            image_encoder: if kind == ModelKind::I2v && layout.has_image_encoder { size("image_encoder", dtypes.image_encoder)? } else { 0 },
            transformer,
            vae: size("vae", dtypes.vae)?,
        })
    }
}

/// What a job needs: the resident weights, and each stage's working set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: WeightBytes,
    pub text_encode: u64,
    /// One DiT forward (the unconditional pass runs after the conditional one, not beside it),
    /// plus the prepared text contexts and the sampler's latents, held for the whole loop.
    pub denoise_step: u64,
    /// VAE encode of the input (image-to-video and video-to-video), 0 for text-to-video.
    pub vae_encode: u64,
    /// VAE decode of one latent frame (the decode streams frame by frame).
    pub vae_decode: u64,
    /// The text encoder stays loaded between jobs. When it does not, it is loaded for the
    /// job's encoding and released before the first step, so the steps and the decode run
    /// without its weights.
    pub text_encoder_resident: bool,
}

impl MemoryEstimate {
    /// The largest working set of any stage.
    pub fn working_set(&self) -> u64 {
        self.text_encode.max(self.denoise_step).max(self.vae_encode).max(self.vae_decode)
    }

    /// The job's peak: every weight plus the largest working set; with the text encoder
    /// released after encoding, the larger of the encoding (every weight plus its working set)
    /// and the rest of the job (the other weights plus the largest other working set).
    pub fn peak(&self) -> u64 {
        if self.text_encoder_resident {
            return self.weights.total() + self.working_set();
        }
        let encoding = self.weights.total() + self.text_encode;
        let rest = self.weights.total() - self.weights.text_encoder + self.denoise_step.max(self.vae_encode).max(self.vae_decode);
        encoding.max(rest)
    }

    /// What the job allocates beyond the weights that stay loaded between jobs: its working
    /// sets, and the text encoder's weights when it is loaded for the job.
    pub fn beyond_resident(&self) -> u64 {
        let resident = if self.text_encoder_resident { self.weights.total() } else { self.weights.total() - self.weights.text_encoder };
        self.peak().saturating_sub(resident)
    }

    /// Which stage sets the peak.
    pub fn peak_stage(&self) -> &'static str {
        let ws = self.working_set();
        if ws == self.denoise_step {
            "denoising step"
        } else if ws == self.vae_decode {
            "VAE decode"
        } else if ws == self.vae_encode {
            "VAE encode"
        } else {
            "text encoder"
        }
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "about {} (weights {}, then at most {} for the {}; denoising step {}, VAE decode {})",
            human_bytes(self.peak()),
            human_bytes(self.weights.total()),
            human_bytes(self.working_set()),
            self.peak_stage(),
            human_bytes(self.denoise_step),
            human_bytes(self.vae_decode),
        )
    }
}

/// What the request asks for, as the estimate needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobShape {
    pub width: usize,
    pub height: usize,
    pub num_frames: usize,
    /// Two text contexts (prompt and negative prompt) with guidance, one without.
    pub guidance: bool,
    /// The job encodes an input with the VAE (image- or video-to-video).
    pub encodes_input: bool,
}

impl JobShape {
    pub fn of(params: &GenerationParams, encodes_input: bool) -> Self {
        JobShape {
            width: params.width,
            height: params.height,
            num_frames: params.num_frames,
            guidance: params.do_classifier_free_guidance(),
            encodes_input,
        }
    }
}

/// What an estimate reads of a pipeline: its configs and how it is loaded. Known from the
/// directory alone ([`ModelShapes::of_dir`]), so a plan needs no weight in memory.
#[derive(Debug, Clone)]
pub struct ModelShapes {
    pub transformer: WanTransformerConfig,
    pub vae: WanVaeConfig,
    pub text: Umt5Config,
    pub dtypes: ModelDtypes,
    /// See [`MemoryEstimate::text_encoder_resident`].
    pub text_encoder_resident: bool,
}

impl ModelShapes {
    /// The shapes of loaded models.
    pub fn of_models(models: &WanModels) -> Self {
        ModelShapes {
            transformer: models.transformer.config.clone(),
            vae: models.vae.config.clone(),
            text: models.text_config.clone(),
            dtypes: models.dtypes,
            text_encoder_resident: models.text_encoder.is_some(),
        }
    }

    /// The shapes of the pipeline in `model_dir` as it would load with `dtypes`, from its
    /// config files.
    pub fn of_dir(model_dir: &Path, dtypes: ModelDtypes, text_encoder_resident: bool) -> Result<Self> {
        let transformer: WanTransformerConfig = crate::loader::read_config(&model_dir.join("transformer"))?;
        transformer.validate()?;
        Ok(ModelShapes {
            transformer,
            vae: crate::loader::read_config(&model_dir.join("vae"))?,
            text: WanTextEncoder::read_config(model_dir)?,
            dtypes,
            text_encoder_resident,
        })
    }
}

/// Estimates a job on loaded models whose weights are `weights`.
pub fn estimate(models: &WanModels, weights: WeightBytes, job: JobShape) -> MemoryEstimate {
    estimate_shapes(&ModelShapes::of_models(models), weights, job)
}

/// [`estimate`] from the configs alone: what `wan-server plan` prints.
pub fn estimate_shapes(models: &ModelShapes, weights: WeightBytes, job: JobShape) -> MemoryEstimate {
    let dsize = models.dtypes.transformer.size_in_bytes() as u64;
    let text_dsize = models.dtypes.text_encoder.size_in_bytes() as u64;
    let vae_dsize = models.dtypes.vae.size_in_bytes() as u64;
    let dit = &models.transformer;
    let vae = &models.vae;
    let (w, h) = (job.width as u64, job.height as u64);
    let spatial = vae.scale_factor_spatial.max(1) as u64;
    let temporal = vae.scale_factor_temporal.max(1);
    let frames = round_up_frames(job.num_frames, temporal) as u64;
    let latent_frames = (frames - 1) / temporal as u64 + 1;
    let [pt, ph, pw] = dit.patch_size.map(|p| p.max(1) as u64);
    let tokens = latent_frames.div_ceil(pt) * (h / spatial).div_ceil(ph) * (w / spatial).div_ceil(pw);
    let dim = dit.inner_dim() as u64;
    let heads = dit.num_attention_heads as u64;
    let layers = dit.num_layers as u64;
    let contexts = if job.guidance { 2 } else { 1 };

    // One block at its peak: the residual stream, its norm, q, k, v, the attention output and a
    // spare (8 x L x dim), and the FFN's hidden activation with its GELU (2 x L x ffn_dim).
    let block = tokens * (8 * dim + 2 * dit.ffn_dim as u64) * dsize;
    // Attention scores: the chunked path holds at most the score budget (plus the probabilities
    // in the model dtype); short sequences need less than the budget.
    let scores = (2 * heads * tokens * tokens * 4).min(SCORE_BUDGET_BYTES as u64 + SCORE_BUDGET_BYTES as u64 / 2);
    // Every block's cross-attention keys and values, for 512 text rows at most (fewer once the
    // padding is folded), per context.
    let cross_kv = contexts * layers * 2 * 512 * dim * dsize;
    // The sampler's f32 latents: current, noise prediction(s), the multistep history.
    let latents = 8 * dit.in_channels as u64 * latent_frames * (h / spatial) * (w / spatial) * 4;
    let denoise_step = block + scores + cross_kv + latents;

    // The text encoder over one or two prompts of up to 512 tokens.
    let t5 = &models.text;
    let (d_model, d_ff, t5_heads) = (t5.d_model as u64, t5.d_ff as u64, t5.num_heads as u64);
    let text_encode = contexts * 512 * (6 * d_model + 3 * d_ff) * text_dsize + contexts * t5_heads * 512 * 512 * 4 * 2;

    // The VAE at full resolution: one chunk of `temporal` frames (plus the two frames of causal
    // cache each convolution keeps) through its widest full-resolution stage, with about eight
    // such tensors alive at once (input, norm, activation, padded conv input, output, caches).
    let vae_channels = vae.decoder_base_dim.unwrap_or(vae.base_dim) as u64;
    let chunk_frames = temporal as u64 + 2;
    let full_res = chunk_frames * h * w * vae_channels * vae_dsize;
    let vae_decode = 8 * full_res + 3 * temporal as u64 * h * w * 4;
    let vae_encode = if job.encodes_input { 8 * chunk_frames * h * w * vae.base_dim as u64 * vae_dsize + 3 * frames * h * w * 4 } else { 0 };

    MemoryEstimate { weights, text_encode, denoise_step, vae_encode, vae_decode, text_encoder_resident: models.text_encoder_resident }
}

/// Checks, right before a job runs, that its working set fits what the device has free now (the
/// weights are already resident) and, with a budget, that weights plus working set fit the budget.
/// The error says what was asked, what it needs and what the device has.
pub fn check_fits(device: &Device, estimate: &MemoryEstimate, budget: Option<u64>, asked: &str) -> Result<()> {
    if let Some(budget) = budget {
        if estimate.peak() > budget {
            return Err(Error::OutOfMemory(format!(
                "{asked} needs {estimate}, more than the memory budget of {}",
                human_bytes(budget)
            )));
        }
    }
    if let Some(info) = crate::device::memory_info(device) {
        if estimate.beyond_resident() > info.free {
            return Err(Error::OutOfMemory(format!(
                "{asked} needs {estimate}; {} has {} free of {} beside the loaded weights",
                crate::device::describe(device),
                human_bytes(info.free),
                human_bytes(info.total)
            )));
        }
    }
    Ok(())
}

/// Turns a device allocation failure met while running `asked` into [`Error::OutOfMemory`] with
/// the device's figures; any other error is returned unchanged.
pub fn explain_out_of_memory(error: Error, device: &Device, asked: &str) -> Error {
    if matches!(error, Error::OutOfMemory(_)) || !error.is_device_out_of_memory() {
        return error;
    }
    let free = match crate::device::memory_info(device) {
        Some(info) => format!("{} free of {} now", human_bytes(info.free), human_bytes(info.total)),
        None => "free memory unknown".into(),
    };
    Error::OutOfMemory(format!("{asked} ran out of memory on {} ({free}): {error}", crate::device::describe(device)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_bytes("24GiB").unwrap(), 24 << 30);
        assert_eq!(parse_bytes("8 GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_bytes("512mib").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1073741824").unwrap(), 1 << 30);
        for bad in ["", "GiB", "12 parsecs", "-1GiB", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(640 << 20), "640.0 MiB");
    }

    #[test]
    fn a_cuda_allocation_failure_becomes_out_of_memory_with_figures() {
        // The text cudarc's DriverError prints for cuMemAlloc's failure, as candle wraps it.
        let cuda = Error::Candle(candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        ));
        assert!(cuda.is_device_out_of_memory());
        let explained = explain_out_of_memory(cuda, &Device::Cpu, "text-to-video 832x480x81").to_string();
        assert!(explained.starts_with("out of memory: text-to-video 832x480x81 ran out of memory on cpu ("), "{explained}");
        assert!(explained.contains("free of") && explained.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{explained}");
        // Anything else passes through unchanged.
        let other = explain_out_of_memory(Error::InvalidInput("width".into()), &Device::Cpu, "x");
        assert!(matches!(other, Error::InvalidInput(_)));
        let shape = Error::Candle(candle_core::Error::Msg("shape mismatch".into()));
        assert!(!shape.is_device_out_of_memory());
    }

    #[test]
    fn a_budget_below_the_peak_is_refused_with_the_figures() {
        let estimate = MemoryEstimate {
            weights: WeightBytes { text_encoder: 1 << 30, image_encoder: 0, transformer: 3 << 30, vae: 1 << 28 },
            text_encode: 1 << 28,
            denoise_step: 2 << 30,
            vae_encode: 0,
            vae_decode: 5 << 30,
            text_encoder_resident: true,
        };
        assert_eq!(estimate.peak(), (1 << 30) + (3 << 30) + (1 << 28) + (5 << 30));
        // Released after encoding: the decode runs without the text encoder's 1 GiB.
        let released = MemoryEstimate { text_encoder_resident: false, ..estimate };
        assert_eq!(released.peak(), (3 << 30) + (1 << 28) + (5 << 30));
        // ...unless the encoding itself is the larger stage.
        let big_encode = MemoryEstimate { text_encode: 9 << 30, ..released };
        assert_eq!(big_encode.peak(), (1 << 30) + (3 << 30) + (1 << 28) + (9 << 30));
        assert_eq!(estimate.peak_stage(), "VAE decode");
        let err = check_fits(&Device::Cpu, &estimate, Some(8 << 30), "t2v 832x480x81").unwrap_err().to_string();
        assert!(err.contains("t2v 832x480x81 needs about 9.2 GiB"), "{err}");
        assert!(err.contains("weights 4.2 GiB") && err.contains("VAE decode") && err.contains("budget of 8.0 GiB"), "{err}");
        check_fits(&Device::Cpu, &estimate, Some(10 << 30), "t2v").unwrap();
    }

    #[test]
    fn the_estimate_grows_with_the_request_and_counts_the_tiny_model() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/wan-tiny-t2v");
        let models = WanModels::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let weights = WeightBytes::of_dir(&dir, models.kind, DType::F32).unwrap();
        assert!(weights.transformer > 0 && weights.text_encoder > 0 && weights.vae > 0 && weights.image_encoder == 0);
        let job = |width, height, num_frames| JobShape { width, height, num_frames, guidance: true, encodes_input: false };
        let small = estimate(&models, weights, job(64, 48, 9));
        let wide = estimate(&models, weights, job(256, 48, 9));
        let long = estimate(&models, weights, job(64, 48, 33));
        assert!(wide.vae_decode > 3 * small.vae_decode && wide.denoise_step > small.denoise_step, "{small:?} {wide:?}");
        assert!(long.denoise_step > small.denoise_step, "{small:?} {long:?}");
        // The decode streams one latent frame at a time: more frames do not grow it.
        assert_eq!(long.vae_decode, small.vae_decode);
        assert_eq!(small.weights.total(), weights.total());
    }
}
