//! `vae/config.json` of `AutoencoderKLWan`, with diffusers' defaults.

use serde::Deserialize;

use crate::{Error, Result};

/// The configuration of the Wan2.1 causal 3D VAE as diffusers writes it.
///
/// Only the Wan2.1 layout is supported (`is_residual = false`, no `patch_size`); the Wan2.2 VAE
/// uses residual up/down blocks and patchified pixels, which [`WanVaeConfig::validate`] rejects.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WanVaeConfig {
    #[serde(default = "default_base_dim")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "default_z_dim")]
    pub z_dim: usize,
    #[serde(default = "default_dim_mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: usize,
    /// Spatial scales (1.0, 0.5, ...) at which the encoder inserts attention blocks.
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    /// Per encoder stage: whether it also halves the frame count (diffusers' spelling).
    #[serde(default = "default_temperal_downsample")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "default_latents_mean")]
    pub latents_mean: Vec<f64>,
    #[serde(default = "default_latents_std")]
    pub latents_std: Vec<f64>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_in_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub patch_size: Option<usize>,
    #[serde(default = "default_scale_factor_temporal")]
    pub scale_factor_temporal: usize,
    #[serde(default = "default_scale_factor_spatial")]
    pub scale_factor_spatial: usize,
}

fn default_base_dim() -> usize {
    96
}
fn default_z_dim() -> usize {
    16
}
fn default_dim_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_num_res_blocks() -> usize {
    2
}
fn default_temperal_downsample() -> Vec<bool> {
    vec![false, true, true]
}
fn default_in_channels() -> usize {
    3
}
fn default_scale_factor_temporal() -> usize {
    4
}
fn default_scale_factor_spatial() -> usize {
    8
}
fn default_latents_mean() -> Vec<f64> {
    vec![
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632,
        -0.1922, -0.9497, 0.2503, -0.2921,
    ]
}
fn default_latents_std() -> Vec<f64> {
    vec![
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382,
        1.1253, 2.8251, 1.9160,
    ]
}

impl Default for WanVaeConfig {
    fn default() -> Self {
        Self {
            base_dim: default_base_dim(),
            decoder_base_dim: None,
            z_dim: default_z_dim(),
            dim_mult: default_dim_mult(),
            num_res_blocks: default_num_res_blocks(),
            attn_scales: Vec::new(),
            temperal_downsample: default_temperal_downsample(),
            latents_mean: default_latents_mean(),
            latents_std: default_latents_std(),
            is_residual: false,
            in_channels: default_in_channels(),
            out_channels: default_in_channels(),
            patch_size: None,
            scale_factor_temporal: default_scale_factor_temporal(),
            scale_factor_spatial: default_scale_factor_spatial(),
        }
    }
}

impl WanVaeConfig {
    /// Channel counts of the encoder stages: `base_dim * [1, dim_mult...]`.
    pub fn encoder_dims(&self) -> Vec<usize> {
        std::iter::once(1).chain(self.dim_mult.iter().copied()).map(|m| self.base_dim * m).collect()
    }

    /// Channel counts of the decoder stages: `decoder_base_dim * [dim_mult[-1], dim_mult reversed...]`.
    pub fn decoder_dims(&self) -> Vec<usize> {
        let base = self.decoder_base_dim.unwrap_or(self.base_dim);
        let last = self.dim_mult.last().copied().unwrap_or(1);
        std::iter::once(last).chain(self.dim_mult.iter().rev().copied()).map(|m| base * m).collect()
    }

    /// The decoder's temporal upsampling flags: the encoder's, reversed.
    pub fn temporal_upsample(&self) -> Vec<bool> {
        self.temperal_downsample.iter().rev().copied().collect()
    }

    /// Refuses configurations this port does not implement, before any weight is read.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidInput(format!("unsupported VAE config: {what}")));
        if self.is_residual {
            return bad("is_residual = true (the Wan2.2 VAE) is not supported".into());
        }
        if self.patch_size.is_some_and(|p| p > 1) {
            return bad(format!("patch_size = {:?} (the Wan2.2 VAE) is not supported", self.patch_size));
        }
        if self.dim_mult.is_empty() {
            return bad("dim_mult is empty".into());
        }
        if self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return bad(format!(
                "temperal_downsample has {} entries, dim_mult {} (expected one fewer)",
                self.temperal_downsample.len(),
                self.dim_mult.len()
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return bad(format!(
                "latents_mean/latents_std have {}/{} entries for z_dim {}",
                self.latents_mean.len(),
                self.latents_std.len(),
                self.z_dim
            ));
        }
        if self.latents_std.iter().any(|&s| s == 0.0) {
            return bad("latents_std has a zero entry".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields_and_dims_follow_diffusers() {
        let cfg: WanVaeConfig = serde_json::from_str(r#"{"base_dim": 8, "z_dim": 16}"#).unwrap();
        assert_eq!(cfg.dim_mult, vec![1, 2, 4, 4]);
        assert_eq!(cfg.encoder_dims(), vec![8, 8, 16, 32, 32]);
        assert_eq!(cfg.decoder_dims(), vec![32, 32, 32, 16, 8]);
        assert_eq!(cfg.temporal_upsample(), vec![true, true, false]);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn rejects_wan22_layout() {
        let cfg: WanVaeConfig = serde_json::from_str(r#"{"is_residual": true}"#).unwrap();
        assert!(cfg.validate().is_err());
        let cfg: WanVaeConfig = serde_json::from_str(r#"{"patch_size": 2}"#).unwrap();
        assert!(cfg.validate().is_err());
    }
}
