//! The schedule both samplers keep, and their position in it: timesteps, sigmas, the index of
//! the next step and the optional begin index, with diffusers' rules for where a step (or the
//! noising of a sample) reads its sigma.

use super::tables::index_for_timestep;
use crate::Result;

#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// The timesteps as the model receives them.
    timesteps: Vec<f64>,
    /// One more sigma than timesteps; the last is the final sigma.
    sigmas: Vec<f64>,
    /// The position of the next step, once a step has run.
    step_index: Option<usize>,
    /// Where the first step starts, when set; otherwise it looks its timestep up.
    begin_index: Option<usize>,
}

impl Schedule {
    /// A schedule at its start: no step run, no begin index.
    pub(super) fn new(timesteps: Vec<f64>, sigmas: Vec<f64>) -> Self {
        Self { timesteps, sigmas, step_index: None, begin_index: None }
    }

    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    pub fn begin_index(&self) -> Option<usize> {
        self.begin_index
    }

    /// Makes the first step start at schedule position `i` instead of looking its timestep up.
    pub fn set_begin_index(&mut self, i: usize) {
        self.begin_index = Some(i);
    }

    pub(super) fn set_step_index(&mut self, i: usize) {
        self.step_index = Some(i);
    }

    /// diffusers' `index_for_timestep` on these timesteps.
    pub(super) fn find(&self, timestep: f64) -> Option<usize> {
        index_for_timestep(&self.timesteps, timestep)
    }

    /// Where a step starts: the current position once a step has run; before that the begin
    /// index, or else `lookup()` (the sampler's search for the step's timestep).
    pub(super) fn step_position(&self, lookup: impl FnOnce() -> Result<usize>) -> Result<usize> {
        match (self.step_index, self.begin_index) {
            (Some(k), _) => Ok(k),
            (None, Some(begin)) => Ok(begin),
            (None, None) => lookup(),
        }
    }

    /// The position whose sigma noises a sample (diffusers' `add_noise` / `scale_noise`): looked
    /// up when no begin index is set; otherwise the current step, or the begin index before the
    /// first step.
    pub(super) fn noise_position(&self, lookup: impl FnOnce() -> Result<usize>) -> Result<usize> {
        match (self.begin_index, self.step_index) {
            (None, _) => lookup(),
            (Some(_), Some(step)) => Ok(step),
            (Some(begin), None) => Ok(begin),
        }
    }
}
