//! One DiT block (diffusers' `WanTransformerBlock`): modulated self-attention, cross-attention to
//! the text (and image) context, modulated feed-forward.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::attention::{CrossKv, WanAttention};
use super::config::WanTransformerConfig;
use super::fused::{gated_residual, norm_affine, residual_add};
use super::layers::{Activation, FeedForward, Fp32LayerNorm};
use super::rope::RopeTables;
use crate::linear::Linear;
use crate::Result;

/// The six (B, 1, dim) f32 modulation vectors of a block: its `scale_shift_table` plus the
/// shared `timestep_proj`.
struct Modulation {
    shift: Tensor,
    scale: Tensor,
    gate: Tensor,
    c_shift: Tensor,
    c_scale: Tensor,
    c_gate: Tensor,
}

#[derive(Debug, Clone)]
pub struct WanTransformerBlock {
    attn1: WanAttention,
    attn2: WanAttention,
    /// `norm2`: the affine cross-attention norm (`cross_attn_norm`), or none.
    norm2: Option<Fp32LayerNorm>,
    ffn: FeedForward,
    /// (1, 6, dim) f32.
    scale_shift_table: Tensor,
    eps: f64,
}

impl WanTransformerBlock {
    pub fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let norm2 = if cfg.cross_attn_norm { Some(Fp32LayerNorm::affine(dim, cfg.eps, vb.pp("norm2"))?) } else { None };
        Ok(Self {
            attn1: WanAttention::new(cfg, false, vb.pp("attn1"))?,
            attn2: WanAttention::new(cfg, cfg.added_kv_proj_dim.is_some(), vb.pp("attn2"))?,
            norm2,
            ffn: FeedForward::new(dim, cfg.ffn_dim, dim, Activation::GeluTanh, cfg.weight_storage, vb.pp("ffn"))?,
            scale_shift_table: vb.clone().set_dtype(DType::F32).get((1, 6, dim), "scale_shift_table")?,
            eps: cfg.eps,
        })
    }

    /// The Linear at a path inside the block (`attn1.to_q`, `ffn.net.2`).
    pub fn linear_at(&self, path: &str) -> Option<&Linear> {
        let (module, rest) = path.split_once('.')?;
        match module {
            "attn1" => self.attn1.linear_at(rest),
            "attn2" => self.attn2.linear_at(rest),
            "ffn" => self.ffn.linear_at(rest),
            _ => None,
        }
    }

    /// This block's cross-attention keys and values for a context (see [`CrossKv`]).
    pub fn context_kv(&self, text: &Tensor, key_bias: Option<&Tensor>, image: Option<&Tensor>) -> Result<CrossKv> {
        self.attn2.context_kv(text, key_bias, image)
    }

    fn modulation(&self, timestep_proj: &Tensor) -> Result<Modulation> {
        // (1, 6, dim) + (B, 6, dim) -> (B, 6, dim), in f32
        let m = self.scale_shift_table.broadcast_add(&timestep_proj.to_dtype(DType::F32)?)?;
        let part = |i: usize| m.narrow(1, i, 1);
        Ok(Modulation { shift: part(0)?, scale: part(1)?, gate: part(2)?, c_shift: part(3)?, c_scale: part(4)?, c_gate: part(5)? })
    }

    /// x (B, L, dim) in the model dtype; `timestep_proj` (B, 6, dim); returns (B, L, dim).
    pub fn forward(&self, x: &Tensor, cross_kv: &CrossKv, timestep_proj: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let m = self.modulation(timestep_proj)?;

        // 1. Self-attention on the modulated f32 norm; gated residual in f32.
        let normed = norm_affine(x, &(&m.scale + 1.0)?, &m.shift, self.eps)?;
        let attn = self.attn1.self_attention(&normed, rope)?;
        let x = gated_residual(x, &attn, &m.gate)?;

        // 2. Cross-attention: affine norm, no gate.
        let normed = match &self.norm2 {
            Some(norm) => norm.forward_fused(&x)?,
            None => x.clone(),
        };
        let x = residual_add(&x, &self.attn2.cross_attention(&normed, cross_kv)?)?;

        // 3. Feed-forward on the modulated f32 norm; gated residual in f32.
        let normed = norm_affine(&x, &(&m.c_scale + 1.0)?, &m.c_shift, self.eps)?;
        let ff = self.ffn.forward(&normed)?;
        gated_residual(&x, &ff, &m.c_gate)
    }
}
