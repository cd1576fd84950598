//! `WanResample`: the up/down sampling layers of the Wan2.1 VAE, in space and optionally time.
//!
//! Space: 2x nearest upsampling + 3x3 conv, or a stride-2 3x3 conv after padding the right and
//! bottom edges by one. Time (the `*3d` modes) is a causal conv along the frame axis:
//! - `upsample3d`: `time_conv` doubles the channels and the two halves become two consecutive
//!   frames. On the first chunk it is skipped (the first latent frame decodes to one frame) and
//!   from the second chunk on it sees a zero history (diffusers' `"Rep"` marker).
//! - `downsample3d`: a kernel-3 stride-2 conv over (last frame of the previous chunk ++ chunk). On
//!   the first chunk it is skipped (the first frame encodes alone).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::cache::{CacheSlot, FeatureCache};
use super::causal_conv3d::{CausalConv3d, Kernel3};
use super::conv2d::Conv2d;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleMode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

#[derive(Debug, Clone)]
pub struct Resample {
    mode: ResampleMode,
    /// The spatial conv, `resample.1` in the checkpoint (index 0 is the parameterless
    /// upsampling / padding layer of diffusers' `nn.Sequential`).
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    /// `dim` channels in; upsamplers produce `upsample_out_dim`, downsamplers keep `dim`.
    pub fn new(dim: usize, mode: ResampleMode, upsample_out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb_conv = vb.pp("resample").pp("1");
        let (conv, time_conv) = match mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let conv = Conv2d::new(dim, upsample_out_dim, 3, 1, 1, vb_conv)?;
                let time_conv = (mode == ResampleMode::Upsample3d)
                    .then(|| {
                        let k = Kernel3 { t: 3, h: 1, w: 1 };
                        CausalConv3d::new(dim, dim * 2, k, 1, (1, 0), vb.pp("time_conv"))
                    })
                    .transpose()?;
                (conv, time_conv)
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                let conv = Conv2d::new(dim, dim, 3, 0, 2, vb_conv)?;
                let time_conv = (mode == ResampleMode::Downsample3d)
                    .then(|| {
                        let k = Kernel3 { t: 3, h: 1, w: 1 };
                        CausalConv3d::new(dim, dim, k, 2, (0, 0), vb.pp("time_conv"))
                    })
                    .transpose()?;
                (conv, time_conv)
            }
        };
        Ok(Self { mode, conv, time_conv })
    }

    pub fn mode(&self) -> ResampleMode {
        self.mode
    }

    /// `x` `(B, T, C, H, W)`; the `*3d` modes use one cache slot.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        match self.mode {
            ResampleMode::Upsample2d => self.spatial(x),
            ResampleMode::Upsample3d => {
                let x = self.upsample_time(x, cache.next_slot())?;
                self.spatial(&x)
            }
            ResampleMode::Downsample2d => self.spatial(x),
            ResampleMode::Downsample3d => {
                let x = self.spatial(x)?;
                self.downsample_time(&x, cache.next_slot())
            }
        }
    }

    /// The per-frame spatial part: `(B, T, C, H, W)` -> `(B, T, C', H', W')`.
    fn spatial(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        // (B, T, C, H, W) -> (B*T, C, H, W)
        let frames = x.reshape((b * t, c, h, w))?;
        let frames = match self.mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                // 'nearest-exact' with an integer factor of 2 is plain pixel duplication.
                frames.upsample_nearest2d(2 * h, 2 * w)?
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                // ZeroPad2d((0, 1, 0, 1)): one zero column on the right, one zero row below.
                frames.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?
            }
        };
        let y = self.conv.forward(&frames)?;
        let (_, c_out, h_out, w_out) = y.dims4()?;
        // (B*T, C', H', W') -> (B, T, C', H', W')
        Ok(y.reshape((b, t, c_out, h_out, w_out))?)
    }

    /// `(B, T, C, H, W)` -> `(B, 2T, C, H, W)`, except on the first chunk (unchanged).
    fn upsample_time(&self, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
        let time_conv = self.time_conv.as_ref().ok_or_else(|| missing("time_conv"))?;
        if matches!(slot, CacheSlot::Empty) {
            *slot = CacheSlot::Started;
            return Ok(x.clone());
        }
        let (b, t, c, h, w) = x.dims5()?;
        let y = time_conv.forward_cached(x, slot)?; // (B, T, 2C, H, W)
        // (B, T, 2C, H, W) -> (B, T, 2, C, H, W) -> (B, 2T, C, H, W): channel half i is frame 2t+i.
        Ok(y.reshape((b, t * 2, c, h, w))?)
    }

    /// `(B, T, C, H, W)` -> `(B, T/2, C, H, W)` (T even), except on the first chunk (unchanged).
    fn downsample_time(&self, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
        let time_conv = self.time_conv.as_ref().ok_or_else(|| missing("time_conv"))?;
        let t = x.dim(1)?;
        let last = x.narrow(1, t - 1, 1)?.copy()?;
        let previous = std::mem::replace(slot, CacheSlot::Frames(last));
        match previous {
            CacheSlot::Frames(prev) => {
                let n = prev.dim(1)?;
                let input = Tensor::cat(&[&prev.narrow(1, n - 1, 1)?, x], 1)?;
                time_conv.forward(&input, None)
            }
            CacheSlot::Empty | CacheSlot::Started => Ok(x.clone()),
        }
    }
}

fn missing(what: &str) -> Error {
    Error::InvalidInput(format!("resample layer built without its {what}"))
}
