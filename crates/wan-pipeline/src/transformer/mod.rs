//! The Wan DiT (`WanTransformer3DModel`): patch embedding, time/text/image conditioning, 3D RoPE,
//! the blocks, and the modulated output head. Module paths follow the checkpoint keys.

pub mod attention;
pub mod block;
pub mod config;
pub mod embeddings;
pub mod fused;
pub mod layers;
pub mod model;
pub mod qk_norm;
pub mod rope;

pub use config::WanTransformerConfig;
pub use model::{ForwardTrace, PreparedContext, WanTransformer3DModel};
