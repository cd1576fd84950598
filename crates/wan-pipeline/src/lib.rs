//! Wan2.1 (text-, image- and video-to-video) in candle, loading the diffusers layout.
//!
//! Every model module mirrors the checkpoint keys of the diffusers / transformers classes it ports,
//! so `vb.pp(..)` paths read the same as the Python state dict. The crate knows nothing of HTTP or
//! async runtimes; it is used by `wan-jobs` and by the `wan-server` command line.
//!
//! Video I/O links the FFmpeg libraries and sits behind the default `media-ffmpeg` feature; with
//! `--no-default-features` the models, the pipeline (which streams frames to a callback) and the
//! image I/O build for machines that have no FFmpeg installed.

pub mod error;
pub mod device;
pub mod backend;
pub mod memory;
pub mod loader;
mod plain;
pub mod hub_cache;
pub mod text_encoder;
pub mod image_encoder;
pub mod scheduler;
pub mod kernels;
pub mod fp8;
pub mod linear;
pub mod transformer;
pub mod vae;
pub mod pipeline;
pub mod media;
pub mod parity;

pub use error::{Error, Result};
