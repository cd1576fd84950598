//! `WanEncoder3d`: video `(B, T, 3, H, W)` -> `(B, T', 2*z_dim, H/8, W/8)`, one chunk at a time.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::attention::AttentionBlock;
use super::cache::FeatureCache;
use super::causal_conv3d::{CausalConv3d, Kernel3};
use super::config::WanVaeConfig;
use super::mid_block::MidBlock;
use super::norm::WanRmsNorm;
use super::resample::{Resample, ResampleMode};
use super::resnet::ResidualBlock;
use crate::Result;

/// One entry of the encoder's flat `down_blocks` list (diffusers numbers them consecutively).
#[derive(Debug, Clone)]
enum DownLayer {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Resample(Resample),
}

#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    /// Number of leading `down_blocks` before the first temporal downsampler: with `conv_in` they
    /// keep the frame count, so they run one frame at a time (the largest activations).
    per_frame_until: usize,
    mid_block: MidBlock,
    norm_out: WanRmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    /// `out_dim` is `2 * z_dim`: the mean and log-variance channels.
    pub fn new(cfg: &WanVaeConfig, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let dims = cfg.encoder_dims();
        let conv3 = |i, o, vb| CausalConv3d::new(i, o, Kernel3::cube(3), 1, (1, 1), vb);
        let conv_in = conv3(cfg.in_channels, dims[0], vb.pp("conv_in"))?;

        let vb_down = vb.pp("down_blocks");
        let mut down_blocks = Vec::new();
        let mut scale = 1.0f64;
        let stages = cfg.dim_mult.len();
        for (i, pair) in dims.windows(2).enumerate() {
            let (mut in_dim, out_dim) = (pair[0], pair[1]);
            for _ in 0..cfg.num_res_blocks {
                let vb = vb_down.pp(down_blocks.len());
                down_blocks.push(DownLayer::Residual(ResidualBlock::new(in_dim, out_dim, vb)?));
                if cfg.attn_scales.contains(&scale) {
                    let vb = vb_down.pp(down_blocks.len());
                    down_blocks.push(DownLayer::Attention(AttentionBlock::new(out_dim, vb)?));
                }
                in_dim = out_dim;
            }
            if i != stages - 1 {
                let mode = if cfg.temperal_downsample[i] { ResampleMode::Downsample3d } else { ResampleMode::Downsample2d };
                let vb = vb_down.pp(down_blocks.len());
                down_blocks.push(DownLayer::Resample(Resample::new(out_dim, mode, out_dim, vb)?));
                scale /= 2.0;
            }
        }
        let per_frame_until = down_blocks
            .iter()
            .position(|l| matches!(l, DownLayer::Resample(r) if r.mode() == ResampleMode::Downsample3d))
            .unwrap_or(down_blocks.len());
        let top = dims[dims.len() - 1];
        Ok(Self {
            conv_in,
            down_blocks,
            per_frame_until,
            mid_block: MidBlock::new(top, 1, vb.pp("mid_block"))?,
            norm_out: WanRmsNorm::video(top, vb.pp("norm_out"))?,
            conv_out: conv3(top, out_dim, vb.pp("conv_out"))?,
        })
    }

    /// One chunk: `(B, T, 3, H, W)` -> `(B, T', 2*z_dim, H/8, W/8)` (T' = 1 for the first
    /// one-frame chunk, T/4 afterwards). `cache` carries the causal history between chunks.
    pub fn forward_chunk(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        cache.begin_chunk();
        let (per_frame, rest) = self.down_blocks.split_at(self.per_frame_until);
        // The causal cache makes a frame-by-frame pass equal to a pass over the whole chunk.
        let mark = cache.position();
        let frames = x.dim(1)?;
        let mut outputs = Vec::with_capacity(frames);
        for j in 0..frames {
            cache.rewind_to(mark);
            let y = self.conv_in.forward_cached(&x.narrow(1, j, 1)?, cache.next_slot())?;
            outputs.push(Self::run_layers(per_frame, y, cache)?);
        }
        let x = Self::run_layers(rest, Tensor::cat(&outputs, 1)?, cache)?;
        let x = self.mid_block.forward(&x, cache)?;
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, cache.next_slot())
    }

    fn run_layers(layers: &[DownLayer], mut x: Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        for layer in layers {
            x = match layer {
                DownLayer::Residual(block) => block.forward(&x, cache)?,
                DownLayer::Attention(block) => block.forward(&x)?,
                DownLayer::Resample(block) => block.forward(&x, cache)?,
            };
        }
        Ok(x)
    }
}
