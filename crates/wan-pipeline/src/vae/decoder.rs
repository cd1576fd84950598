//! `WanDecoder3d`: latents `(B, 1, z_dim, h, w)` -> video frames `(B, n, 3, 8h, 8w)`, one latent
//! frame at a time (n = 1 for the first, 4 afterwards with the default config).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::cache::FeatureCache;
use super::causal_conv3d::{CausalConv3d, Kernel3};
use super::config::WanVaeConfig;
use super::mid_block::MidBlock;
use super::norm::WanRmsNorm;
use super::resample::{Resample, ResampleMode};
use super::resnet::ResidualBlock;
use crate::Result;

/// `WanUpBlock`: `num_res_blocks + 1` residual blocks, then an optional upsampler.
#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

impl UpBlock {
    fn new(in_dim: usize, out_dim: usize, num_res_blocks: usize, mode: Option<ResampleMode>, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..=num_res_blocks)
            .map(|i| {
                let block_in = if i == 0 { in_dim } else { out_dim };
                ResidualBlock::new(block_in, out_dim, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        // Wan2.1 upsamplers halve the channels (`upsample_out_dim = dim // 2`).
        let upsampler = mode
            .map(|m| Resample::new(out_dim, m, out_dim / 2, vb.pp("upsamplers").pp(0)))
            .transpose()?;
        Ok(Self { resnets, upsampler })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(&x, cache)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, cache),
            None => Ok(x),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    /// Index of the first up block after the last temporal upsampler: from there on the frame
    /// count no longer changes, so those (full-resolution) layers run one frame at a time.
    per_frame_from: usize,
    norm_out: WanRmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    pub fn new(cfg: &WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let dims = cfg.decoder_dims();
        let temporal_up = cfg.temporal_upsample();
        let conv3 = |i, o, vb| CausalConv3d::new(i, o, Kernel3::cube(3), 1, (1, 1), vb);
        let stages = cfg.dim_mult.len();
        let mut up_blocks = Vec::with_capacity(stages);
        for (i, pair) in dims.windows(2).enumerate() {
            // After the first stage the input is the previous upsampler's halved channel count.
            let in_dim = if i > 0 { pair[0] / 2 } else { pair[0] };
            let mode = if i == stages - 1 {
                None
            } else if temporal_up[i] {
                Some(ResampleMode::Upsample3d)
            } else {
                Some(ResampleMode::Upsample2d)
            };
            up_blocks.push(UpBlock::new(in_dim, pair[1], cfg.num_res_blocks, mode, vb.pp("up_blocks").pp(i))?);
        }
        let per_frame_from = (0..stages.saturating_sub(1))
            .filter(|&i| temporal_up.get(i).copied().unwrap_or(false))
            .map(|i| i + 1)
            .max()
            .unwrap_or(0);
        let last = dims[dims.len() - 1];
        Ok(Self {
            per_frame_from,
            conv_in: conv3(cfg.z_dim, dims[0], vb.pp("conv_in"))?,
            mid_block: MidBlock::new(dims[0], 1, vb.pp("mid_block"))?,
            up_blocks,
            norm_out: WanRmsNorm::video(last, vb.pp("norm_out"))?,
            conv_out: conv3(last, cfg.out_channels, vb.pp("conv_out"))?,
        })
    }

    /// One latent frame `(B, 1, z_dim, h, w)` -> its video frames `(B, n, 3, 8h, 8w)` (unclamped).
    /// `cache` carries the causal history; the first call on an empty cache is the first chunk.
    pub fn forward_chunk(&self, z: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        cache.begin_chunk();
        let x = self.conv_in.forward_cached(z, cache.next_slot())?;
        let mut x = self.mid_block.forward(&x, cache)?;
        let (temporal, spatial) = self.up_blocks.split_at(self.per_frame_from.min(self.up_blocks.len()));
        for block in temporal {
            x = block.forward(&x, cache)?;
        }
        // The causal cache makes a frame-by-frame pass give the same result as a pass over all
        // the chunk's frames, with a quarter of the largest activations alive at a time.
        let mark = cache.position();
        let frames = x.dim(1)?;
        let mut outputs = Vec::with_capacity(frames);
        for j in 0..frames {
            cache.rewind_to(mark);
            let mut y = x.narrow(1, j, 1)?;
            for block in spatial {
                y = block.forward(&y, cache)?;
            }
            let y = self.norm_out.forward_silu(&y)?;
            outputs.push(self.conv_out.forward_cached(&y, cache.next_slot())?);
        }
        Ok(Tensor::cat(&outputs, 1)?)
    }
}
