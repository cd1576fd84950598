//! The Wan DiT (`WanTransformer3DModel`).
