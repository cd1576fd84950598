//! `transformer/config.json` of a diffusers `WanTransformer3DModel`.

use serde::Deserialize;

use crate::fp8::WeightStorage;
use crate::{Error, Result};

/// The transformer's hyper-parameters, with the defaults of diffusers' `WanTransformer3DModel`
/// constructor (so a config.json that omits a key means what it means to diffusers).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WanTransformerConfig {
    #[serde(default = "default_patch_size")]
    pub patch_size: [usize; 3],
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    /// `None` (or null) means "as many as `in_channels`", as in diffusers.
    #[serde(default = "default_out_channels")]
    pub out_channels: Option<usize>,
    #[serde(default = "default_text_dim")]
    pub text_dim: usize,
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
    #[serde(default = "default_ffn_dim")]
    pub ffn_dim: usize,
    #[serde(default = "default_num_layers")]
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub cross_attn_norm: bool,
    #[serde(default = "default_qk_norm")]
    pub qk_norm: Option<String>,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// CLIP hidden size for i2v models; `None` for t2v.
    #[serde(default)]
    pub image_dim: Option<usize>,
    /// Input size of the image key/value projections (`add_k_proj`, `add_v_proj`) for i2v.
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "default_rope_max_seq_len")]
    pub rope_max_seq_len: usize,
    /// Wan2.1 FLF2V only (a learned position embedding of the image tokens): not supported.
    #[serde(default)]
    pub pos_embed_seq_len: Option<usize>,
    /// How the blocks' attention and feed-forward Linears are held between calls (the Linears
    /// diffusers' layerwise casting stores in fp8; everything else stays in the compute dtype).
    /// Not read from config.json: a load setting, as candle-transformers' configs carry
    /// `use_flash_attn`.
    #[serde(skip)]
    pub weight_storage: WeightStorage,
}

fn default_patch_size() -> [usize; 3] {
    [1, 2, 2]
}
fn default_num_attention_heads() -> usize {
    40
}
fn default_attention_head_dim() -> usize {
    128
}
fn default_channels() -> usize {
    16
}
fn default_out_channels() -> Option<usize> {
    Some(16)
}
fn default_text_dim() -> usize {
    4096
}
fn default_freq_dim() -> usize {
    256
}
fn default_ffn_dim() -> usize {
    13824
}
fn default_num_layers() -> usize {
    40
}
fn default_true() -> bool {
    true
}
fn default_qk_norm() -> Option<String> {
    Some("rms_norm_across_heads".to_string())
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_max_seq_len() -> usize {
    1024
}

impl WanTransformerConfig {
    /// `num_attention_heads * attention_head_dim`: the width of the residual stream.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Rejects the configurations this port does not implement, before any weight is read.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |what: String| Err(Error::InvalidInput(format!("transformer config: {what}")));
        if self.qk_norm.as_deref() != Some("rms_norm_across_heads") {
            return unsupported(format!("qk_norm {:?} is not supported (only \"rms_norm_across_heads\")", self.qk_norm));
        }
        if self.pos_embed_seq_len.is_some() {
            return unsupported("pos_embed_seq_len (FLF2V image position embedding) is not supported".into());
        }
        if self.image_dim.is_some() != self.added_kv_proj_dim.is_some() {
            return unsupported("image_dim and added_kv_proj_dim must be given together".into());
        }
        if self.attention_head_dim % 2 != 0 || self.attention_head_dim < 6 {
            return unsupported(format!("attention_head_dim {} must be even and at least 6", self.attention_head_dim));
        }
        if self.patch_size.contains(&0) || self.num_attention_heads == 0 {
            return unsupported("patch_size entries and num_attention_heads must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_diffusers_defaults() {
        let cfg: WanTransformerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.inner_dim(), 40 * 128);
        assert_eq!(cfg.out_channels(), 16);
        assert_eq!(cfg.patch_size, [1, 2, 2]);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn rejects_unsupported_qk_norm() {
        let cfg: WanTransformerConfig = serde_json::from_str(r#"{"qk_norm": "rms_norm"}"#).unwrap();
        assert!(cfg.validate().is_err());
        let cfg: WanTransformerConfig = serde_json::from_str(r#"{"out_channels": null, "in_channels": 36}"#).unwrap();
        assert_eq!(cfg.out_channels(), 36);
    }
}
