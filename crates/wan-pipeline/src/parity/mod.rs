//! Parity with the Python reference: running the computation a fixture directory describes and
//! comparing every output tensor with what diffusers produced.
//!
//! A fixture directory holds `manifest.json` (its `kind`, the `model` path relative to the fixture,
//! the `call` arguments, the tensors and the tolerance), `inputs.safetensors`,
//! `outputs.safetensors` and sometimes PNG files. Each kind has a module here that turns the
//! fixture into a [`Computation`]; models are loaded once in `prepare` so that `wan-server bench`
//! can time the computation alone.

mod compare;
mod fixture;

mod clip;
mod pipeline;
mod scheduler;
mod text_encoder;
mod tokenizer;
mod transformer;
mod transformer_fp8;
mod vae;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

pub use compare::{compare, compare_half_precision, HalfPrecisionTolerance, Mismatch, Report, BF16_TOLERANCE};
pub use fixture::{discover, Fixture, Tolerance};

use crate::Result;

/// Named output tensors of one computation, compared by name with `outputs.safetensors`.
pub type Outputs = BTreeMap<String, Tensor>;

/// A prepared fixture computation (models already loaded): each call runs it once.
pub type Computation = Box<dyn FnMut() -> Result<Outputs>>;

/// How to run a fixture: on which device and in which floating-point dtype.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dtype: DType,
    pub device: Device,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, device: Device::Cpu }
    }
}

/// Loads what the fixture's kind needs and returns its computation, or `None` when the kind is
/// not implemented yet (reported as skipped).
pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    match fixture.kind.as_str() {
        "tokenizer" => tokenizer::prepare(fixture, opts),
        "text_encoder" => text_encoder::prepare(fixture, opts),
        "clip_image_encoder" => clip::prepare(fixture, opts),
        "scheduler" => scheduler::prepare(fixture, opts),
        "transformer" => transformer::prepare(fixture, opts),
        "transformer_fp8" => transformer_fp8::prepare(fixture, opts),
        "vae_encode" => vae::prepare_encode(fixture, opts),
        "vae_decode" => vae::prepare_decode(fixture, opts),
        "pipeline_t2v" | "pipeline_t2v_moe" => pipeline::prepare_t2v(fixture, opts),
        "pipeline_i2v" | "pipeline_i2v_moe" => pipeline::prepare_i2v(fixture, opts),
        "pipeline_v2v" => pipeline::prepare_v2v(fixture, opts),
        _ => Ok(None),
    }
}
