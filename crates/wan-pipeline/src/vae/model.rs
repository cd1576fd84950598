//! `AutoencoderKLWan`: the encoder/decoder pair, their chunked causal passes and the latent
//! normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::cache::FeatureCache;
use super::causal_conv3d::CausalConv3d;
use super::config::WanVaeConfig;
use super::decoder::Decoder;
use super::distribution::DiagonalGaussian;
use super::encoder::Encoder;
use crate::{loader, Error, Result};

/// Frames per encoder chunk after the first (which is one frame alone): diffusers hard-codes 4,
/// the temporal compression of the Wan2.1 VAE.
pub const ENCODE_CHUNK_FRAMES: usize = 4;

pub struct AutoencoderKLWan {
    pub config: WanVaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    /// `(1, z, 1, 1, 1)` f32 per-channel latent mean.
    latents_mean: Tensor,
    /// `(1, z, 1, 1, 1)` f32 `1 / latents_std`, the factor diffusers multiplies by.
    latents_inv_std: Tensor,
    dtype: DType,
    device: Device,
}

impl AutoencoderKLWan {
    /// Loads `vae_dir/config.json` and its safetensors, in `dtype` on `device`.
    pub fn load(vae_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg: WanVaeConfig = loader::read_config(vae_dir)?;
        cfg.validate()?;
        let vb = loader::var_builder(vae_dir, dtype, device)?;
        Self::new(&cfg, vb)
    }

    pub fn new(cfg: &WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let z = cfg.z_dim;
        let device = vb.device().clone();
        let per_channel = |values: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(values, (1, z, 1, 1, 1), &device)?)
        };
        let latents_mean = per_channel(cfg.latents_mean.iter().map(|&m| m as f32).collect())?;
        // diffusers builds `1.0 / tensor(latents_std)` in float32; doing the same keeps the bits.
        let latents_inv_std = per_channel(cfg.latents_std.iter().map(|&s| 1.0f32 / s as f32).collect())?;
        Ok(Self {
            config: cfg.clone(),
            encoder: Encoder::new(cfg, 2 * z, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            quant_conv: CausalConv3d::pointwise(2 * z, 2 * z, vb.pp("quant_conv"))?,
            post_quant_conv: CausalConv3d::pointwise(z, z, vb.pp("post_quant_conv"))?,
            latents_mean,
            latents_inv_std,
            dtype: vb.dtype(),
            device,
        })
    }

    /// The dtype the weights (and activations) are in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// video `(B, 3, F, H, W)` in [-1, 1], `F = 1 + 4k`, `H` and `W` multiples of 8 -> the latent
    /// distribution, `(B, z, 1 + k, H/8, W/8)` each, in f32.
    ///
    /// Frame 0 is encoded alone, then chunks of 4 frames, each chunk seeing the previous ones only
    /// through the causal cache.
    pub fn encode(&self, video: &Tensor) -> Result<DiagonalGaussian> {
        let (_, c, f, h, w) = video.dims5()?;
        let spatial = self.config.scale_factor_spatial;
        if c != self.config.in_channels {
            return Err(Error::InvalidInput(format!("VAE encode: video has {c} channels, expected {}", self.config.in_channels)));
        }
        if f == 0 || (f - 1) % ENCODE_CHUNK_FRAMES != 0 {
            return Err(Error::InvalidInput(format!("VAE encode: frame count must be 1 + 4k, got {f}")));
        }
        if h % spatial != 0 || w % spatial != 0 || h == 0 || w == 0 {
            return Err(Error::InvalidInput(format!("VAE encode: {h}x{w} is not a multiple of {spatial}")));
        }
        let mut cache = FeatureCache::new();
        let mut latents = Vec::with_capacity(1 + (f - 1) / ENCODE_CHUNK_FRAMES);
        let mut start = 0;
        while start < f {
            let len = if start == 0 { 1 } else { ENCODE_CHUNK_FRAMES };
            // (B, 3, n, H, W) -> (B, n, 3, H, W)
            let chunk = video.narrow(2, start, len)?.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)?.contiguous()?;
            let out = self.encoder.forward_chunk(&chunk, &mut cache)?;
            latents.push(self.quant_conv.forward(&out, None)?);
            start += len;
        }
        // (B, f, 2z, h, w) -> (B, 2z, f, h, w)
        let moments = Tensor::cat(&latents, 1)?.permute((0, 2, 1, 3, 4))?.to_dtype(DType::F32)?;
        DiagonalGaussian::from_moments(&moments)
    }

    /// z `(B, z, f, h, w)`, DE-normalised -> video `(B, 3, 1 + 4(f-1), 8h, 8w)` in f32, clamped to
    /// [-1, 1]. Holds the whole video; use [`Self::decode_streaming`] to avoid that.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut chunks = Vec::new();
        self.decode_streaming(z, &mut |chunk| {
            chunks.push(chunk);
            Ok(())
        })?;
        Ok(Tensor::cat(&chunks, 2)?)
    }

    /// Same as [`Self::decode`], handing each decoded chunk `(B, 3, n, H, W)` (f32, clamped) to
    /// `sink` as soon as it is ready: n = 1 for the first latent frame, 4 for each later one.
    /// Only the causal cache persists between chunks, so memory does not grow with `f`.
    pub fn decode_streaming(&self, z: &Tensor, sink: &mut dyn FnMut(Tensor) -> Result<()>) -> Result<()> {
        let (_, c, f, _, _) = z.dims5()?;
        if c != self.config.z_dim {
            return Err(Error::InvalidInput(format!("VAE decode: latents have {c} channels, expected {}", self.config.z_dim)));
        }
        if f == 0 {
            return Err(Error::InvalidInput("VAE decode: no latent frames".into()));
        }
        let mut cache = FeatureCache::new();
        for i in 0..f {
            // (B, z, 1, h, w) -> (B, 1, z, h, w)
            let latent = z.narrow(2, i, 1)?.permute((0, 2, 1, 3, 4))?.to_dtype(self.dtype)?.contiguous()?;
            let latent = self.post_quant_conv.forward(&latent, None)?;
            let frames = self.decoder.forward_chunk(&latent, &mut cache)?;
            // (B, n, 3, H, W) -> (B, 3, n, H, W)
            let frames = frames.to_dtype(DType::F32)?.clamp(-1.0, 1.0)?.permute((0, 2, 1, 3, 4))?.contiguous()?;
            sink(frames)?;
        }
        Ok(())
    }

    /// `(x - latents_mean) * (1 / latents_std)`, per channel of `(B, z, f, h, w)`; in `x`'s dtype.
    pub fn normalize_latents(&self, mean: &Tensor) -> Result<Tensor> {
        let (m, s) = self.stats_on(mean.device())?;
        let x = mean.to_dtype(DType::F32)?.broadcast_sub(&m)?.broadcast_mul(&s)?;
        Ok(x.to_dtype(mean.dtype())?)
    }

    /// `z / (1 / latents_std) + latents_mean`, the inverse of [`Self::normalize_latents`].
    pub fn denormalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (m, s) = self.stats_on(z.device())?;
        let x = z.to_dtype(DType::F32)?.broadcast_div(&s)?.broadcast_add(&m)?;
        Ok(x.to_dtype(z.dtype())?)
    }

    fn stats_on(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        Ok((self.latents_mean.to_device(device)?, self.latents_inv_std.to_device(device)?))
    }
}
