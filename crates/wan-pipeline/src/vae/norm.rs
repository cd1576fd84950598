//! `WanRMS_norm`: L2-normalise over the channel axis, times `sqrt(C) * gamma`.
//!
//! This is not the usual RMS norm (no mean of squares, no epsilon inside the root): diffusers
//! computes `F.normalize(x, dim=channels) * C**0.5 * gamma`, where `F.normalize` divides by
//! `max(||x||_2, 1e-12)`. It is computed in f32 whatever the activations' dtype.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::Result;

const NORMALIZE_EPS: f64 = 1e-12;

#[derive(Debug, Clone)]
pub struct WanRmsNorm {
    /// `sqrt(C) * gamma` as `(C, 1, 1)` in f32: broadcasts over `(.., C, H, W)`.
    scaled_gamma: Tensor,
    /// The same values, for [`crate::kernels::channel_norm`].
    scaled_gamma_values: Vec<f32>,
}

impl WanRmsNorm {
    /// `gamma_shape` is the checkpoint's: `(C, 1, 1, 1)` for video blocks, `(C, 1, 1)` for the
    /// per-frame attention block.
    pub fn new(dim: usize, gamma_shape: &[usize], vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get(gamma_shape, "gamma")?.to_dtype(DType::F32)?.reshape((dim, 1, 1))?;
        let scaled_gamma = (gamma * (dim as f64).sqrt())?;
        let scaled_gamma_values = scaled_gamma.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { scaled_gamma, scaled_gamma_values })
    }

    /// Video blocks: gamma stored as `(C, 1, 1, 1)`.
    pub fn video(dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(dim, &[dim, 1, 1, 1], vb)
    }

    /// The attention block's per-frame norm: gamma stored as `(C, 1, 1)`.
    pub fn image(dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(dim, &[dim, 1, 1], vb)
    }

    /// `x` is `(.., C, H, W)`: `(B, T, C, H, W)` or `(N, C, H, W)`; the channel axis is third
    /// from the end.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, false)
    }

    /// `silu(self.forward(x))`, the order every residual block and output head uses.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, true)
    }

    fn forward_then(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let channel_dim = x.rank().saturating_sub(3);
        if let Some(y) = crate::kernels::channel_norm(x, channel_dim, &self.scaled_gamma_values, NORMALIZE_EPS as f32, silu)? {
            return Ok(y);
        }
        let y = self.normalize(x, channel_dim)?;
        Ok(if silu { candle_nn::ops::silu(&y)? } else { y })
    }

    fn normalize(&self, x: &Tensor, channel_dim: usize) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let norm = xf.sqr()?.sum_keepdim(channel_dim)?.sqrt()?.maximum(NORMALIZE_EPS)?;
        let y = xf.broadcast_div(&norm)?.broadcast_mul(&self.scaled_gamma)?;
        Ok(y.to_dtype(dtype)?)
    }
}
