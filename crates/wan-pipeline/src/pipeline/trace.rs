//! Optional record of a run's intermediates, for the parity test and for debugging a port.

use candle_core::Tensor;

/// What the denoising loop saw at each step. Collected only when the caller asks for it.
#[derive(Debug, Default)]
pub struct Trace {
    pub timesteps_run: Vec<f64>,
    /// Which expert ran each step: 0 `transformer`, 1 `transformer_2` (Wan2.2 A14B).
    pub expert: Vec<i64>,
    pub noise_pred_cond: Vec<Tensor>,
    pub noise_pred_uncond: Vec<Tensor>,
    pub step_latents: Vec<Tensor>,
}
