//! Noising a batch at one timestep per sample, as diffusers' `add_noise` / `scale_noise` take a
//! (B,) tensor of timesteps: each sample is mixed with its noise at its own sigma (a single
//! timestep applies to every sample, as the (1, 1, ...) sigma broadcasts in torch).

use candle_core::Tensor;

use crate::{Error, Result};

/// `mix(sigma, original, noise)` (f32 tensors of one or all samples) applied per sample with
/// `sigmas[b]` for sample `b` of dimension 0; one sigma means every sample. Consecutive samples
/// with the same sigma are mixed together, so a uniform batch is one call.
pub(crate) fn per_sample(
    original: &Tensor,
    noise: &Tensor,
    sigmas: &[f64],
    mix: impl Fn(f64, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if original.dims() != noise.dims() {
        return Err(Error::InvalidInput(format!(
            "noising: sample shape {:?} differs from noise shape {:?}",
            original.dims(),
            noise.dims()
        )));
    }
    match sigmas {
        [] => Err(Error::InvalidInput("noising: no timestep given".into())),
        [sigma] => mix(*sigma, original, noise),
        _ => {
            let batch = if original.rank() == 0 { 0 } else { original.dim(0)? };
            if batch != sigmas.len() {
                return Err(Error::InvalidInput(format!(
                    "noising: {} timesteps for a batch of {batch} (give one, or one per sample)",
                    sigmas.len()
                )));
            }
            let mut parts = Vec::new();
            let mut start = 0;
            while start < batch {
                let sigma = sigmas[start];
                let len = sigmas[start..].iter().take_while(|&&s| s == sigma).count();
                parts.push(mix(sigma, &original.narrow(0, start, len)?, &noise.narrow(0, start, len)?)?);
                start += len;
            }
            if parts.len() == 1 {
                return Ok(parts.remove(0));
            }
            Ok(Tensor::cat(&parts, 0)?)
        }
    }
}
