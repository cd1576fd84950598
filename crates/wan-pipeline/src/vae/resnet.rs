//! `WanResidualBlock`: norm, SiLU, causal conv, twice, plus a (projected) shortcut.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::cache::FeatureCache;
use super::causal_conv3d::{CausalConv3d, Kernel3};
use super::norm::WanRmsNorm;
use crate::Result;

#[derive(Debug, Clone)]
pub struct ResidualBlock {
    norm1: WanRmsNorm,
    conv1: CausalConv3d,
    norm2: WanRmsNorm,
    conv2: CausalConv3d,
    /// A 1x1x1 conv when the channel count changes; identity otherwise.
    conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let conv3 = |i, o, vb| CausalConv3d::new(i, o, Kernel3::cube(3), 1, (1, 1), vb);
        Ok(Self {
            norm1: WanRmsNorm::video(in_dim, vb.pp("norm1"))?,
            conv1: conv3(in_dim, out_dim, vb.pp("conv1"))?,
            norm2: WanRmsNorm::video(out_dim, vb.pp("norm2"))?,
            conv2: conv3(out_dim, out_dim, vb.pp("conv2"))?,
            conv_shortcut: if in_dim != out_dim {
                Some(CausalConv3d::pointwise(in_dim, out_dim, vb.pp("conv_shortcut"))?)
            } else {
                None
            },
        })
    }

    /// `x` `(B, T, C_in, H, W)` -> `(B, T, C_out, H, W)`; uses two cache slots (conv1, conv2).
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x, None)?,
            None => x.clone(),
        };
        let h = self.norm1.forward_silu(x)?;
        let h = self.conv1.forward_cached(&h, cache.next_slot())?;
        let h = self.norm2.forward_silu(&h)?;
        // Dropout is identity at inference.
        let h = self.conv2.forward_cached(&h, cache.next_slot())?;
        Ok((h + shortcut)?)
    }
}
