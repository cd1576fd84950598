//! `WanCausalConv3d`: a 3D convolution that only looks back in time.
//!
//! candle has no conv3d, so a temporal kernel of `kt` taps is computed as `kt` 2D convolutions,
//! one per tap, over all output frames at once (frames folded into the batch), and summed. The
//! activations are kept frame-major, `(B, T, C, H, W)`, so folding frames into the batch is a free
//! reshape. Causality: the time axis gets `2 * padding_t` frames on the left only, taken from the
//! previous chunk's cache where there is one and zeros otherwise.
//!
//! Under the native backend the weight is also packed at load time for
//! [`crate::kernels::causal_conv3d`], which runs all `kt * kh * kw` taps as one product per block
//! of output pixels and reads the history and the padding in place; the per-tap formulation
//! below is what every other device runs.

use std::sync::Arc;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::cache::CacheSlot;
use super::conv2d::conv2d;
use crate::kernels::{causal_conv3d, ConvGeometry, PackedConv3d};
use crate::Result;

/// Shape of a 3D kernel: (time, height, width).
#[derive(Debug, Clone, Copy)]
pub struct Kernel3 {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl Kernel3 {
    pub const fn cube(k: usize) -> Self {
        Self { t: k, h: k, w: k }
    }
}

#[derive(Debug, Clone)]
pub struct CausalConv3d {
    /// One `(O, C, kh, kw)` 2D kernel per temporal tap, oldest frame first.
    taps: Vec<Tensor>,
    /// `(O, 1, 1)`, broadcast over `(B*T, O, H, W)`.
    bias: Tensor,
    /// Frames of zero/cached history put before the input (diffusers' `2 * padding[0]`).
    time_pad: usize,
    time_stride: usize,
    /// Symmetric zero padding of height and width.
    spatial_pad: usize,
    /// The whole `(O, C, kt, kh, kw)` weight and the bias packed for the native kernel, where it runs.
    packed: Option<Arc<PackedConv3d>>,
}

impl CausalConv3d {
    /// `padding` is diffusers' `(padding_t, padding_hw)`: the time axis gets `2 * padding_t` on the
    /// left, height and width `padding_hw` on both sides.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        kernel: Kernel3,
        time_stride: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        // (O, C, kt, kh, kw) -> kt x (O, C, kh, kw)
        let weight = vb.get((out_dim, in_dim, kernel.t, kernel.h, kernel.w), "weight")?;
        let taps = (0..kernel.t)
            .map(|k| Ok(weight.narrow(2, k, 1)?.squeeze(2)?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        let bias = vb.get(out_dim, "bias")?;
        let packed = PackedConv3d::pack(&weight, &bias)?.map(Arc::new);
        let bias = bias.reshape((out_dim, 1, 1))?;
        Ok(Self { taps, bias, time_pad: 2 * padding.0, time_stride, spatial_pad: padding.1, packed })
    }

    /// A pointwise (1x1x1) conv: `conv_shortcut`, `quant_conv`, `post_quant_conv`.
    pub fn pointwise(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, out_dim, Kernel3::cube(1), 1, (0, 0), vb)
    }

    /// `x` `(B, T, C, H, W)` with `history` (up to `time_pad` earlier frames, or none) in front.
    /// Returns `(B, T', O, H', W')`.
    pub fn forward(&self, x: &Tensor, history: Option<&Tensor>) -> Result<Tensor> {
        if let Some(packed) = &self.packed {
            let geometry = ConvGeometry {
                time_pad: self.time_pad,
                time_stride: self.time_stride,
                pad: self.spatial_pad,
                stride: 1,
            };
            if let Some(y) = causal_conv3d(x, history, packed, geometry)? {
                return Ok(y);
            }
        }
        let x = self.pad_time(x, history)?;
        let (b, t_in, c, h, w) = x.dims5()?;
        let kt = self.taps.len();
        if t_in < kt {
            return Err(crate::Error::InvalidInput(format!(
                "causal conv needs at least {kt} frames after padding, got {t_in}"
            )));
        }
        let t_out = (t_in - kt) / self.time_stride + 1;
        let mut acc: Option<Tensor> = None;
        for (k, tap) in self.taps.iter().enumerate() {
            let frames = if self.time_stride == 1 {
                x.narrow(1, k, t_out)?
            } else {
                let idx: Vec<u32> = (0..t_out).map(|j| (k + j * self.time_stride) as u32).collect();
                let idx = Tensor::new(idx.as_slice(), x.device())?;
                x.index_select(&idx, 1)?
            };
            // (B, T', C, H, W) -> (B*T', C, H, W)
            let frames = frames.reshape((b * t_out, c, h, w))?;
            let y = conv2d(&frames, tap, self.spatial_pad, 1)?;
            acc = Some(match acc {
                None => y,
                Some(a) => (a + y)?,
            });
        }
        let y = match acc {
            Some(y) => y.broadcast_add(&self.bias)?,
            None => return Err(crate::Error::InvalidInput("causal conv with no temporal taps".into())),
        };
        let (_, o, h_out, w_out) = y.dims4()?;
        // (B*T', O, H', W') -> (B, T', O, H', W')
        Ok(y.reshape((b, t_out, o, h_out, w_out))?)
    }

    /// Runs on a chunk with the layer's cache slot: the slot's frames are the history, and
    /// afterwards it holds the last frames of this chunk's input for the next chunk.
    pub fn forward_cached(&self, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
        let tail = slot.tail_after(x)?;
        let y = self.forward(x, slot.frames())?;
        *slot = CacheSlot::Frames(tail);
        Ok(y)
    }

    /// Puts `time_pad` frames before `x`: the history's, then zeros for what it lacks.
    fn pad_time(&self, x: &Tensor, history: Option<&Tensor>) -> Result<Tensor> {
        if self.time_pad == 0 {
            return Ok(x.clone());
        }
        let mut parts: Vec<Tensor> = Vec::with_capacity(3);
        let have = match history {
            Some(h) => h.dim(1)?.min(self.time_pad),
            None => 0,
        };
        if have < self.time_pad {
            let (b, _, c, h, w) = x.dims5()?;
            parts.push(Tensor::zeros((b, self.time_pad - have, c, h, w), x.dtype(), x.device())?);
        }
        if let Some(hist) = history {
            let n = hist.dim(1)?;
            parts.push(hist.narrow(1, n - have, have)?);
        }
        parts.push(x.clone());
        Ok(Tensor::cat(&parts, 1)?)
    }
}
