//! The DiT's input embedders: video patches, the timestep, the text and (i2v) the CLIP image tokens.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::WanTransformerConfig;
use super::layers::{Activation, FeedForward, Fp32LayerNorm};
use crate::fp8::WeightStorage;
use crate::linear::{linear, Linear};
use crate::{Error, Result};

/// The latent grid after patching: frames, rows and columns of patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl PatchGrid {
    pub fn tokens(&self) -> usize {
        self.frames * self.height * self.width
    }
}

/// `patch_embedding`: a Conv3d whose kernel equals its stride, i.e. a linear map of each
/// non-overlapping (p_t, p_h, p_w) patch of all channels. candle has no conv3d, and since the
/// patches do not overlap a reshape plus one matmul computes exactly the same thing.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    /// (inner_dim, C * p_t * p_h * p_w), columns in the conv weight's (C, p_t, p_h, p_w) order.
    weight: Tensor,
    bias: Tensor,
    in_channels: usize,
    patch: [usize; 3],
}

impl PatchEmbedding {
    pub fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let [pt, ph, pw] = cfg.patch_size;
        let dim = cfg.inner_dim();
        let weight = vb.get((dim, cfg.in_channels, pt, ph, pw), "weight")?;
        // (dim, C, p_t, p_h, p_w) -> (dim, C * p_t * p_h * p_w)
        let weight = weight.reshape((dim, cfg.in_channels * pt * ph * pw))?;
        Ok(Self { weight, bias: vb.get(dim, "bias")?, in_channels: cfg.in_channels, patch: cfg.patch_size })
    }

    /// The patch grid of a latent of shape (B, C, F, H, W); each of F, H, W must be a multiple
    /// of the patch size (a strided conv would silently drop the remainder).
    pub fn grid(&self, dims: &[usize]) -> Result<PatchGrid> {
        let [pt, ph, pw] = self.patch;
        match *dims {
            [_, c, f, h, w] if c == self.in_channels && f % pt == 0 && h % ph == 0 && w % pw == 0 => {
                Ok(PatchGrid { frames: f / pt, height: h / ph, width: w / pw })
            }
            _ => Err(Error::InvalidInput(format!(
                "transformer input must be (B, {}, F, H, W) with F, H, W multiples of {:?}, got {dims:?}",
                self.in_channels, self.patch
            ))),
        }
    }

    /// (B, C, F, H, W) -> patch tokens (B, F' * H' * W', inner_dim), tokens in (f, h, w) order.
    pub fn forward(&self, x: &Tensor, grid: PatchGrid) -> Result<Tensor> {
        let [pt, ph, pw] = self.patch;
        let b = x.dim(0)?;
        let c = self.in_channels;
        // (B, C, F, H, W) -> (B, C, F', p_t, H', p_h, W', p_w)
        let x = x.reshape(vec![b, c, grid.frames, pt, grid.height, ph, grid.width, pw])?;
        // -> (B, F', H', W', C, p_t, p_h, p_w) -> (B * L, C * p_t * p_h * p_w)
        let x = x.permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?.contiguous()?;
        let x = x.reshape((b * grid.tokens(), c * pt * ph * pw))?;
        let tokens = x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        Ok(tokens.reshape((b, grid.tokens(), ()))?)
    }
}

/// diffusers' `Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)`: a (B, freq_dim)
/// f32 table `[cos(t * f_i) | sin(t * f_i)]` with `f_i = exp(-ln(10000) * i / (freq_dim / 2))`.
/// Each step is rounded to f32 in the order PyTorch computes it so the table matches bit for bit
/// but for the last ulp of sin/cos.
pub fn timestep_sinusoid(timestep: &Tensor, freq_dim: usize) -> Result<Tensor> {
    let t: Vec<f32> = timestep.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let half = freq_dim / 2;
    let neg_log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (neg_log_period * i as f32 / half as f32).exp()).collect();
    let mut table = Vec::with_capacity(t.len() * freq_dim);
    for &ti in &t {
        let args = freqs.iter().map(|&f| (ti * f) as f64);
        let row_start = table.len();
        table.extend(args.clone().map(|a| a.cos() as f32));
        table.extend(args.map(|a| a.sin() as f32));
        // An odd freq_dim gets one zero column of padding, as in diffusers.
        table.resize(row_start + freq_dim, 0.0);
    }
    Ok(Tensor::from_vec(table, (t.len(), freq_dim), timestep.device())?)
}

/// `condition_embedder.time_embedder` (kept in f32 as diffusers does): linear, SiLU, linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(freq_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.set_dtype(DType::F32);
        Ok(Self { linear_1: linear(freq_dim, dim, vb.pp("linear_1"))?, linear_2: linear(dim, dim, vb.pp("linear_2"))? })
    }

    /// (B, freq_dim) f32 -> (B, dim) f32.
    pub fn forward(&self, sinusoid: &Tensor) -> Result<Tensor> {
        Ok(self.linear_2.forward(&self.linear_1.forward(sinusoid)?.silu()?)?)
    }
}

/// `condition_embedder.text_embedder` (PixArtAlphaTextProjection): linear, GELU(tanh), linear.
#[derive(Debug, Clone)]
pub struct TextProjection {
    linear_1: Linear,
    linear_2: Linear,
}

impl TextProjection {
    pub fn new(text_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { linear_1: linear(text_dim, dim, vb.pp("linear_1"))?, linear_2: linear(dim, dim, vb.pp("linear_2"))? })
    }

    /// (B, L, text_dim) -> (B, L, dim).
    pub fn forward(&self, text: &Tensor) -> Result<Tensor> {
        Ok(self.linear_2.forward(&self.linear_1.forward(text)?.gelu()?)?)
    }
}

/// `condition_embedder.image_embedder` (i2v): FP32LayerNorm, FeedForward(GELU erf), FP32LayerNorm.
///
/// diffusers builds the feed-forward as `FeedForward(image_dim, dim, mult=1)`, whose hidden width
/// is `int(image_dim * mult)` = `image_dim` (1280 for the 14B I2V model, not its dim 5120):
/// `ff.net.0.proj` is image_dim -> image_dim and `ff.net.2` image_dim -> dim.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    norm1: Fp32LayerNorm,
    ff: FeedForward,
    norm2: Fp32LayerNorm,
}

impl ImageEmbedding {
    /// `nn.LayerNorm`'s default eps, which diffusers' `FP32LayerNorm(dim)` keeps here.
    const EPS: f64 = 1e-5;

    pub fn new(image_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: Fp32LayerNorm::affine(image_dim, Self::EPS, vb.pp("norm1"))?,
            ff: FeedForward::new(image_dim, image_dim, dim, Activation::GeluErf, WeightStorage::Compute, vb.pp("ff"))?,
            norm2: Fp32LayerNorm::affine(dim, Self::EPS, vb.pp("norm2"))?,
        })
    }

    /// (B, T_img, image_dim) -> (B, T_img, dim) in the dtype of `dtype`.
    pub fn forward(&self, image: &Tensor, dtype: DType) -> Result<Tensor> {
        let x = self.norm1.forward(image)?.to_dtype(dtype)?;
        let x = self.ff.forward(&x)?;
        Ok(self.norm2.forward(&x)?.to_dtype(dtype)?)
    }
}

/// `condition_embedder`: the timestep, text and image embedders and the 6-way `time_proj`.
#[derive(Debug, Clone)]
pub struct ConditionEmbedder {
    pub time_embedder: TimestepEmbedding,
    time_proj: Linear,
    pub text_embedder: TextProjection,
    pub image_embedder: Option<ImageEmbedding>,
    freq_dim: usize,
}

impl ConditionEmbedder {
    pub fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let image_embedder = match cfg.image_dim {
            Some(image_dim) => Some(ImageEmbedding::new(image_dim, dim, vb.pp("image_embedder"))?),
            None => None,
        };
        Ok(Self {
            time_embedder: TimestepEmbedding::new(cfg.freq_dim, dim, vb.pp("time_embedder"))?,
            time_proj: linear(dim, 6 * dim, vb.pp("time_proj"))?,
            text_embedder: TextProjection::new(cfg.text_dim, dim, vb.pp("text_embedder"))?,
            image_embedder,
            freq_dim: cfg.freq_dim,
        })
    }

    /// timestep (B,) -> (`temb` (B, dim), `timestep_proj` (B, 6, dim)), both in `dtype`.
    pub fn time(&self, timestep: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let sinusoid = timestep_sinusoid(timestep, self.freq_dim)?;
        let temb = self.time_embedder.forward(&sinusoid)?.to_dtype(dtype)?;
        let (b, dim) = temb.dims2()?;
        // (B, 6 * dim) -> (B, 6, dim)
        let proj = self.time_proj.forward(&temb.silu()?)?.reshape((b, 6, dim))?;
        Ok((temb, proj))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;

    /// The tensors of an image embedder with `image_dim` 3, `dim` 5 and the given hidden width
    /// of `ff.net.0.proj` (diffusers: `image_dim`). `ff.net.2` maps to a constant row `v` (zero
    /// weight, bias v), so the output is exactly `norm2(v)` whatever the input.
    fn embedder_tensors(hidden: usize, v: &[f32]) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let (image_dim, dim) = (3, v.len());
        HashMap::from([
            ("norm1.weight".into(), Tensor::ones(image_dim, DType::F32, &dev).unwrap()),
            ("norm1.bias".into(), Tensor::zeros(image_dim, DType::F32, &dev).unwrap()),
            ("ff.net.0.proj.weight".into(), Tensor::ones((hidden, image_dim), DType::F32, &dev).unwrap()),
            ("ff.net.0.proj.bias".into(), Tensor::zeros(hidden, DType::F32, &dev).unwrap()),
            ("ff.net.2.weight".into(), Tensor::zeros((dim, hidden), DType::F32, &dev).unwrap()),
            ("ff.net.2.bias".into(), Tensor::new(v, &dev).unwrap()),
            ("norm2.weight".into(), Tensor::ones(dim, DType::F32, &dev).unwrap()),
            ("norm2.bias".into(), Tensor::zeros(dim, DType::F32, &dev).unwrap()),
        ])
    }

    #[test]
    fn image_embedder_hidden_width_is_image_dim() {
        let v = [1f32, 2.0, 3.0, 4.0, 10.0];
        let vb = VarBuilder::from_tensors(embedder_tensors(3, &v), DType::F32, &Device::Cpu);
        let embedder = ImageEmbedding::new(3, 5, vb).unwrap();
        let image = Tensor::new(&[[[0.5f32, -1.0, 2.0], [3.0, 0.0, 1.0]]], &Device::Cpu).unwrap();
        let out: Vec<Vec<f32>> = embedder.forward(&image, DType::F32).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let mean = v.iter().sum::<f32>() / 5.0;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 5.0;
        for row in out {
            assert_eq!(row.len(), 5);
            for (got, x) in row.iter().zip(v) {
                let want = (x - mean) / (var + 1e-5).sqrt();
                assert!((got - want).abs() < 1e-5, "{got} vs {want}");
            }
        }
        // A checkpoint whose hidden width is dim (what the port used to expect) is refused.
        let vb = VarBuilder::from_tensors(embedder_tensors(5, &v), DType::F32, &Device::Cpu);
        assert!(ImageEmbedding::new(3, 5, vb).is_err());
    }
}
