//! The causal 3D VAE of Wan2.1 (`AutoencoderKLWan` in diffusers).
//!
//! Inside the model, activations are laid out frame-major, `(B, T, C, H, W)`: a causal conv3d is
//! computed as 2D convolutions over frames folded into the batch, and per-frame layers (spatial
//! resampling, attention) need no transposes. The public API takes and returns diffusers' layout,
//! `(B, C, T, H, W)`.

mod attention;
mod cache;
mod causal_conv3d;
mod config;
mod conv2d;
mod decoder;
mod distribution;
mod encoder;
mod mid_block;
mod model;
mod norm;
mod resample;
mod resnet;

pub use cache::{CacheSlot, FeatureCache};
pub use config::WanVaeConfig;
pub use distribution::DiagonalGaussian;
pub use model::{AutoencoderKLWan, ENCODE_CHUNK_FRAMES};

#[cfg(test)]
mod tests;
