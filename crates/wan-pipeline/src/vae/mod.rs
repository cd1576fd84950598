//! The causal 3D VAE (`AutoencoderKLWan`).
