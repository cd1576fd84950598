//! Fixture kind `scheduler`: the sigma / timestep tables for several (steps, shift), a full
//! step-by-step run with fixed model outputs, a partial run started mid-schedule (v2v-style, no
//! begin index), and add_noise (UniPC) / scale_noise (flow-match Euler).
//!
//! The manifest's `call` names the class and the cases; the scheduler itself is read from the
//! fixture's model directory as the pipelines read it, with each case's shift as an override.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::{Error, Result};

/// One `tables` entry: the schedule of `num_inference_steps` at a shift.
#[derive(Deserialize)]
struct TableCase {
    key: String,
    num_inference_steps: usize,
    /// UniPC names it `flow_shift`, Euler `shift`.
    #[serde(alias = "flow_shift")]
    shift: f64,
}

/// `step_run` / `partial_run`: how the scheduler is set up before stepping.
#[derive(Deserialize)]
struct RunCase {
    num_inference_steps: usize,
    #[serde(default)]
    shift: Option<f64>,
    #[serde(default)]
    set_begin_index: Option<usize>,
    #[serde(default)]
    t_start: usize,
}

/// `add_noise`: the schedule and the position of the timestep noised to.
#[derive(Deserialize)]
struct NoiseCase {
    num_inference_steps: usize,
    timestep_index: usize,
}

/// A run of `step` over `timesteps[t_start..]`, fed the stacked fixture model outputs.
struct StepRun {
    case: RunCase,
    initial: Tensor,
    model_outputs: Tensor,
    /// Output names: `{prefix}_timesteps`, `{prefix}_samples`.
    prefix: &'static str,
}

/// A call of add_noise / scale_noise on a fresh schedule.
struct NoiseRun {
    num_inference_steps: usize,
    shift: Option<f64>,
    timestep_index: usize,
    original: Tensor,
    noise: Tensor,
    /// Output names: `{prefix}_timestep`, `{prefix}_result`.
    prefix: &'static str,
}

struct Plan {
    config: SchedulerConfig,
    /// UniPC's timesteps are int64 tensors, Euler's float32.
    integer_timesteps: bool,
    tables: Vec<TableCase>,
    runs: Vec<StepRun>,
    noise: Option<NoiseRun>,
}

fn field<T: serde::de::DeserializeOwned>(fixture: &Fixture, key: &str) -> Result<Option<T>> {
    match fixture.call.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::Fixture(format!("{}: call.{key}: {e}", fixture.name))),
    }
}

pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let input = |name: &str| -> Result<Tensor> {
        Ok(fixture.input(name)?.to_device(&opts.device)?.to_dtype(opts.dtype)?)
    };
    let config = SchedulerConfig::from_model_dir(&fixture.model_dir)?;
    let integer_timesteps = matches!(config, SchedulerConfig::UniPc(_));
    let tables: Vec<TableCase> = field(fixture, "tables")?.unwrap_or_default();

    let mut runs = Vec::new();
    let mut step_shift = None;
    if let Some(case) = field::<RunCase>(fixture, "step_run")? {
        step_shift = case.shift;
        let (initial, model_outputs) = (input("step_initial_sample")?, input("step_model_outputs")?);
        runs.push(StepRun { case, initial, model_outputs, prefix: "step" });
    }
    if let Some(case) = field::<RunCase>(fixture, "partial_run")? {
        let (initial, model_outputs) = (input("partial_initial_sample")?, input("partial_model_outputs")?);
        runs.push(StepRun { case, initial, model_outputs, prefix: "partial" });
    }

    let noise = if let Some(case) = field::<NoiseCase>(fixture, "add_noise")? {
        Some(NoiseRun {
            num_inference_steps: case.num_inference_steps,
            shift: None,
            timestep_index: case.timestep_index,
            original: input("add_noise_original")?,
            noise: input("add_noise_noise")?,
            prefix: "add_noise",
        })
    } else if fixture.inputs.contains_key("scale_noise_original") {
        // The Euler manifest gives no call entry for scale_noise: its tensor meanings say it
        // noises to timesteps[1] of the step run's schedule.
        let steps = runs.first().map(|r| r.case.num_inference_steps).ok_or_else(|| {
            Error::Fixture(format!("{}: scale_noise needs the step_run schedule", fixture.name))
        })?;
        Some(NoiseRun {
            num_inference_steps: steps,
            shift: step_shift,
            timestep_index: 1,
            original: input("scale_noise_original")?,
            noise: input("scale_noise_noise")?,
            prefix: "scale_noise",
        })
    } else {
        None
    };

    let plan = Plan { config, integer_timesteps, tables, runs, noise };
    Ok(Some(Box::new(move || plan.run())))
}

impl Plan {
    fn scheduler(&self, steps: usize, shift: Option<f64>) -> Result<Scheduler> {
        let mut scheduler = Scheduler::from_config(self.config.clone(), shift)?;
        scheduler.set_timesteps(steps)?;
        Ok(scheduler)
    }

    fn timestep_tensor(&self, values: &[f64]) -> Result<Tensor> {
        Ok(if self.integer_timesteps {
            Tensor::new(values.iter().map(|&t| t as i64).collect::<Vec<_>>(), &Device::Cpu)?
        } else {
            Tensor::new(values.iter().map(|&t| t as f32).collect::<Vec<_>>(), &Device::Cpu)?
        })
    }

    fn run(&self) -> Result<Outputs> {
        let mut out = Outputs::new();
        for table in &self.tables {
            let scheduler = self.scheduler(table.num_inference_steps, Some(table.shift))?;
            out.insert(format!("timesteps_{}", table.key), self.timestep_tensor(scheduler.timesteps())?);
            let sigmas: Vec<f32> = scheduler.sigmas().iter().map(|&s| s as f32).collect();
            out.insert(format!("sigmas_{}", table.key), Tensor::new(sigmas, &Device::Cpu)?);
        }
        for run in &self.runs {
            let mut scheduler = self.scheduler(run.case.num_inference_steps, run.case.shift)?;
            if let Some(i) = run.case.set_begin_index {
                scheduler.set_begin_index(i);
            }
            let timesteps = scheduler.timesteps().get(run.case.t_start..).unwrap_or_default().to_vec();
            let mut sample = run.initial.clone();
            let mut samples = Vec::with_capacity(timesteps.len());
            for (i, &t) in timesteps.iter().enumerate() {
                sample = scheduler.step(&run.model_outputs.get(i)?, t, &sample)?;
                samples.push(sample.clone());
            }
            out.insert(format!("{}_timesteps", run.prefix), self.timestep_tensor(&timesteps)?);
            out.insert(format!("{}_samples", run.prefix), Tensor::stack(&samples, 0)?.to_dtype(DType::F32)?);
        }
        if let Some(noise) = &self.noise {
            let scheduler = self.scheduler(noise.num_inference_steps, noise.shift)?;
            let t = *scheduler.timesteps().get(noise.timestep_index).ok_or_else(|| {
                Error::Fixture(format!("noise timestep index {} outside the schedule", noise.timestep_index))
            })?;
            let result = scheduler.add_noise(&noise.original, &noise.noise, t)?;
            out.insert(format!("{}_timestep", noise.prefix), self.timestep_tensor(&[t])?);
            out.insert(format!("{}_result", noise.prefix), result.to_dtype(DType::F32)?);
        }
        Ok(out)
    }
}
