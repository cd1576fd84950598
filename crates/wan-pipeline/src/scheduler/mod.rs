//! Samplers: UniPC multistep and flow-match Euler, configured from scheduler_config.json.
//!
//! [`Scheduler`] is what the pipelines drive: build it from a model directory (optionally with a
//! user-chosen shift, which like diffusers' `from_config(config, flow_shift=...)` rebuilds the
//! scheduler from its config with that one value changed), call `set_timesteps`, then `step` once
//! per timestep. Both samplers follow diffusers to the rounding of their tables (see
//! [`tables`]), so integer timesteps match the Python reference exactly.

pub mod config;
pub mod flow_match_euler;
mod noising;
pub mod schedule;
pub mod tables;
pub mod unipc;

use std::path::Path;

use candle_core::Tensor;

pub use config::{FlowMatchEulerConfig, SchedulerConfig, UniPcConfig};
pub use flow_match_euler::FlowMatchEulerDiscrete;
pub use schedule::Schedule;
pub use unipc::UniPcMultistep;

use crate::Result;

/// A configured sampler of either supported class.
/// (One scheduler lives per generation, so the size difference of the variants is irrelevant.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Scheduler {
    UniPc(UniPcMultistep),
    FlowMatchEuler(FlowMatchEulerDiscrete),
}

impl Scheduler {
    /// Reads model_dir/scheduler/scheduler_config.json, picks the class by `_class_name`;
    /// `shift` overrides flow_shift / shift when given.
    pub fn from_model_dir(model_dir: &Path, shift: Option<f64>) -> Result<Self> {
        Self::from_config(SchedulerConfig::from_model_dir(model_dir)?, shift)
    }

    /// A scheduler from a parsed config; `shift` overrides UniPC's `flow_shift` or Euler's `shift`.
    pub fn from_config(config: SchedulerConfig, shift: Option<f64>) -> Result<Self> {
        if let Some(s) = shift {
            config::check_shift(s)?;
        }
        Ok(match config {
            SchedulerConfig::UniPc(mut c) => {
                if let Some(s) = shift {
                    c.flow_shift = s;
                }
                Self::UniPc(UniPcMultistep::new(c)?)
            }
            SchedulerConfig::FlowMatchEuler(mut c) => {
                if let Some(s) = shift {
                    c.shift = s;
                }
                Self::FlowMatchEuler(FlowMatchEulerDiscrete::new(c)?)
            }
        })
    }

    /// The config this scheduler runs with (shift override included).
    pub fn config(&self) -> SchedulerConfig {
        match self {
            Self::UniPc(s) => SchedulerConfig::UniPc(s.config().clone()),
            Self::FlowMatchEuler(s) => SchedulerConfig::FlowMatchEuler(s.config().clone()),
        }
    }

    /// The shift in use (UniPC `flow_shift`, Euler `shift`).
    pub fn shift(&self) -> f64 {
        match self {
            Self::UniPc(s) => s.config().flow_shift,
            Self::FlowMatchEuler(s) => s.config().shift,
        }
    }

    /// Builds the schedule and resets the sampler state (including the begin index).
    /// The training schedule's length (`num_train_timesteps`, 1000 for Wan).
    pub fn num_train_timesteps(&self) -> usize {
        match self {
            Self::UniPc(s) => s.config().num_train_timesteps,
            Self::FlowMatchEuler(s) => s.config().num_train_timesteps,
        }
    }

    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        match self {
            Self::UniPc(s) => s.set_timesteps(num_inference_steps),
            Self::FlowMatchEuler(s) => s.set_timesteps(num_inference_steps),
        }
    }

    /// The schedule and the position in it.
    pub fn schedule(&self) -> &Schedule {
        match self {
            Self::UniPc(s) => s.schedule(),
            Self::FlowMatchEuler(s) => s.schedule(),
        }
    }

    /// The timesteps as the model receives them (UniPC: integral values; Euler: float32 values).
    pub fn timesteps(&self) -> &[f64] {
        self.schedule().timesteps()
    }

    /// `timesteps().len() + 1` sigmas (float32 values); the last is the final sigma.
    pub fn sigmas(&self) -> &[f64] {
        self.schedule().sigmas()
    }

    /// The standard deviation of the initial noise (1 for flow matching).
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The position of the next `step` in the schedule, once a step has run.
    pub fn step_index(&self) -> Option<usize> {
        self.schedule().step_index()
    }

    /// Makes the first `step` start at schedule position `i`; without it the first step looks its
    /// timestep up in the schedule (WanPipeline sets 0; the i2v / v2v pipelines do not set it).
    pub fn set_begin_index(&mut self, i: usize) {
        match self {
            Self::UniPc(s) => s.schedule_mut().set_begin_index(i),
            Self::FlowMatchEuler(s) => s.schedule_mut().set_begin_index(i),
        }
    }

    /// One denoising step (tensors of any shape, any dtype; math in f32). UniPC returns
    /// `sample`'s dtype, Euler `model_output`'s dtype (each as diffusers does).
    pub fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        match self {
            Self::UniPc(s) => s.step(model_output, timestep, sample),
            Self::FlowMatchEuler(s) => s.step(model_output, timestep, sample),
        }
    }

    /// Noise `original` to `timestep` (UniPC add_noise / Euler scale_noise), in `original`'s dtype.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.add_noise_per_sample(original, noise, &[timestep])
    }

    /// [`Self::add_noise`] with one timestep per sample of dimension 0 (or one for all), as
    /// diffusers takes a (B,) timestep tensor.
    pub fn add_noise_per_sample(&self, original: &Tensor, noise: &Tensor, timesteps: &[f64]) -> Result<Tensor> {
        match self {
            Self::UniPc(s) => s.add_noise_per_sample(original, noise, timesteps),
            Self::FlowMatchEuler(s) => s.scale_noise_per_sample(original, noise, timesteps),
        }
    }

    /// For v2v SDEdit: the timesteps kept by `strength` (diffusers' get_timesteps), i.e. start
    /// part-way, and the index of the first kept one. Call after `set_timesteps`.
    pub fn timesteps_for_strength(&self, strength: f64) -> (Vec<f64>, usize /*t_start*/) {
        tables::timesteps_for_strength(self.timesteps(), strength)
    }
}

/// `sum_i c_i * t_i` in f32 (all tensors f32, same shape), one product rounded per term as
/// torch's scalar-times-tensor expressions are.
pub(crate) fn weighted_sum(terms: &[(f64, Tensor)]) -> Result<Tensor> {
    let scaled = |(c, t): &(f64, Tensor)| -> Result<Tensor> {
        if *c == 1.0 {
            Ok(t.clone())
        } else {
            Ok(t.affine(*c, 0.0)?)
        }
    };
    let mut iter = terms.iter();
    let Some(first) = iter.next() else {
        return Err(crate::Error::InvalidInput("weighted_sum of no terms".into()));
    };
    let mut acc = scaled(first)?;
    for term in iter {
        acc = (acc + scaled(term)?)?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests;
