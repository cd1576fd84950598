//! Flow-matching Euler sampling as diffusers' `FlowMatchEulerDiscreteScheduler` runs it:
//! `x_next = x + (sigma_next - sigma) * v`.
//!
//! The shift is applied twice, as in diffusers: once in the constructor to the float32 training
//! sigmas (which fixes `sigma_min` = the shifted 1/T), and again in `set_timesteps` to
//! `linspace(sigma_max * T, sigma_min * T, n) / T` in float64. Sigmas and timesteps are then
//! float32 (timesteps = float32 sigma * T rounded in float32).

use candle_core::{DType, Tensor};

use super::config::FlowMatchEulerConfig;
use super::schedule::Schedule;
use super::tables::{as_f32, linspace, shift_sigma, shift_sigma_f32, stretch_to_terminal};
use super::noising::per_sample;
use super::weighted_sum;
use crate::{Error, Result};

/// The Euler sampler and its position in the schedule.
#[derive(Debug, Clone)]
pub struct FlowMatchEulerDiscrete {
    config: FlowMatchEulerConfig,
    /// The largest and smallest shifted training sigmas (float32 values).
    sigma_max: f64,
    sigma_min: f64,
    /// Float32 timesteps as the model receives them; one more sigma than timesteps (the last
    /// is 0), float32 values.
    schedule: Schedule,
}

impl FlowMatchEulerDiscrete {
    /// A sampler for `config` (as `FlowMatchEulerDiscreteScheduler.from_config`); the schedule is
    /// empty until [`Self::set_timesteps`].
    pub fn new(config: FlowMatchEulerConfig) -> Result<Self> {
        config.check_supported()?;
        // The constructor's float32 tensors: t in T..=1, sigma = t / T, shifted in float32.
        let train_steps = config.num_train_timesteps as f32;
        let shifted = |t: f32| f64::from(shift_sigma_f32(config.shift, t / train_steps));
        let (sigma_max, sigma_min) = (shifted(train_steps), shifted(1.0));
        Ok(Self {
            config,
            sigma_max,
            sigma_min,
            schedule: Schedule::default(),
        })
    }

    pub fn config(&self) -> &FlowMatchEulerConfig {
        &self.config
    }

    /// Builds the schedule of `num_inference_steps` steps; resets the step and begin index.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Error::InvalidInput("num_inference_steps must be at least 1".into()));
        }
        let train_steps = self.config.num_train_timesteps as f64;
        let mut sigmas: Vec<f64> =
            linspace(self.sigma_max * train_steps, self.sigma_min * train_steps, num_inference_steps)
                .into_iter()
                .map(|t| shift_sigma(self.config.shift, t / train_steps))
                .collect();
        if let Some(terminal) = self.config.shift_terminal.filter(|&t| t != 0.0) {
            stretch_to_terminal(&mut sigmas, terminal);
        }
        let sigmas_f32: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        // torch: float32 sigmas * T in float32
        let timesteps = sigmas_f32.iter().map(|&s| (s * train_steps as f32) as f64).collect();
        self.schedule = Schedule::new(timesteps, sigmas_f32.into_iter().map(f64::from).chain(std::iter::once(0.0)).collect());
        Ok(())
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn schedule_mut(&mut self) -> &mut Schedule {
        &mut self.schedule
    }

    fn index_for(&self, timestep: f64) -> Result<usize> {
        self.schedule.find(timestep).ok_or_else(|| {
            Error::InvalidInput(format!("flow-match Euler: timestep {timestep} is not in the schedule"))
        })
    }

    /// One Euler step `sample + (sigma_next - sigma) * model_output`, computed in f32 and
    /// returned in `model_output`'s dtype, as diffusers casts it.
    pub fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        if self.schedule.timesteps().is_empty() {
            return Err(Error::InvalidInput("flow-match Euler: set_timesteps must be called before step".into()));
        }
        if model_output.dims() != sample.dims() {
            return Err(Error::InvalidInput(format!(
                "flow-match Euler step: model output shape {:?} differs from sample shape {:?}",
                model_output.dims(),
                sample.dims()
            )));
        }
        let k = self.schedule.step_position(|| self.index_for(timestep))?;
        let n = self.schedule.timesteps().len();
        if k >= n {
            return Err(Error::InvalidInput(format!("flow-match Euler: step {k} is past the {n}-step schedule")));
        }
        // float32 scalar difference, as the 0-dim float32 tensors in diffusers
        let sigmas = self.schedule.sigmas();
        let dt = (sigmas[k + 1] as f32 - sigmas[k] as f32) as f64;
        let out_dtype = model_output.dtype();
        let prev = weighted_sum(&[(1.0, sample.to_dtype(DType::F32)?), (dt, model_output.to_dtype(DType::F32)?)])?;
        self.schedule.set_step_index(k + 1);
        Ok(prev.to_dtype(out_dtype)?)
    }

    /// The forward process `sigma * noise + (1 - sigma) * sample` at `timestep` (diffusers'
    /// `scale_noise`, sigma chosen like `add_noise`). Returns `sample`'s dtype.
    pub fn scale_noise(&self, sample: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.scale_noise_per_sample(sample, noise, &[timestep])
    }

    /// [`Self::scale_noise`] with one timestep per sample of dimension 0 (or one for all): each
    /// sample gets the sigma diffusers' `scale_noise` picks for its timestep (every sample the
    /// same position once a begin index is set, as diffusers repeats it).
    pub fn scale_noise_per_sample(&self, sample: &Tensor, noise: &Tensor, timesteps: &[f64]) -> Result<Tensor> {
        if self.schedule.timesteps().is_empty() {
            return Err(Error::InvalidInput("flow-match Euler: set_timesteps must be called before scale_noise".into()));
        }
        let sigmas = timesteps.iter().map(|&t| self.noise_sigma(t)).collect::<Result<Vec<_>>>()?;
        let dtype = sample.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let noise = noise.to_dtype(DType::F32)?;
        let mixed = per_sample(&sample, &noise, &sigmas, |sigma, sample, noise| {
            weighted_sum(&[(sigma, noise.clone()), (as_f32(1.0 - sigma), sample.clone())])
        })?;
        Ok(mixed.to_dtype(dtype)?)
    }

    /// The sigma `scale_noise` uses for `timestep`.
    fn noise_sigma(&self, timestep: f64) -> Result<f64> {
        let index = self.schedule.noise_position(|| self.index_for(timestep))?;
        self.schedule.sigmas().get(index).copied().ok_or_else(|| {
            Error::InvalidInput(format!("flow-match Euler scale_noise: index {index} outside the schedule"))
        })
    }
}
