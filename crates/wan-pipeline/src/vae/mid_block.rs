//! `WanMidBlock`: residual block, then (attention, residual block) pairs, at the lowest resolution.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::attention::AttentionBlock;
use super::cache::FeatureCache;
use super::resnet::ResidualBlock;
use crate::Result;

#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResidualBlock>,
    attentions: Vec<AttentionBlock>,
}

impl MidBlock {
    /// `num_layers` attention blocks (diffusers always builds one).
    pub fn new(dim: usize, num_layers: usize, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..=num_layers)
            .map(|i| ResidualBlock::new(dim, dim, vb.pp("resnets").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let attentions = (0..num_layers)
            .map(|i| AttentionBlock::new(dim, vb.pp("attentions").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { resnets, attentions })
    }

    /// `(B, T, C, H, W)` -> same shape.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let mut resnets = self.resnets.iter();
        let mut x = match resnets.next() {
            Some(first) => first.forward(x, cache)?,
            None => x.clone(),
        };
        for (attn, resnet) in self.attentions.iter().zip(resnets) {
            x = attn.forward(&x)?;
            x = resnet.forward(&x, cache)?;
        }
        Ok(x)
    }
}
