//! `scheduler/scheduler_config.json` as diffusers writes it, for the two sampler classes we run.
//!
//! Every field has the default of the diffusers constructor, so a config that omits a key behaves
//! as it does in Python. Options that only make sense outside flow matching (VP noise schedules,
//! Karras sigmas, dynamic shifting that needs a per-call `mu`, ...) are parsed but refused by
//! [`UniPcConfig::check_supported`] / [`FlowMatchEulerConfig::check_supported`], so an unsupported
//! checkpoint fails at load time instead of sampling with a silently different schedule.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::loader::read_json;
use crate::{Error, Result};

/// What the model receives from `prediction_type`; Wan is trained for flow prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
    FlowPrediction,
}

/// The B(h) variant of UniPC. diffusers maps the DPM-Solver names onto `bh2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    Bh1,
    #[serde(alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

/// The sigma appended after the last inference step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// The last step denoises completely (sigma 0).
    Zero,
    /// The last step ends at the smallest sigma of the schedule.
    SigmaMin,
}

/// `UniPCMultistepScheduler`'s registered config (diffusers constructor defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub predict_x0: bool,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    /// Step indices whose corrector (UniC) is skipped.
    pub disable_corrector: Vec<usize>,
    /// A second scheduler used as the predictor; only `null` is supported.
    pub solver_p: Option<serde_json::Value>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub final_sigmas_type: FinalSigmasType,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            predict_x0: true,
            solver_type: SolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: "linspace".into(),
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
            sigma_min: None,
            sigma_max: None,
            shift_terminal: None,
        }
    }
}

impl UniPcConfig {
    /// Refuses the options this port does not implement (see the module doc).
    pub fn check_supported(&self) -> Result<()> {
        let refuse = |what: &str| Err(Error::UnsupportedConfig(format!("UniPCMultistepScheduler: {what}")));
        if !self.use_flow_sigmas {
            return refuse("only use_flow_sigmas = true (flow matching) is supported");
        }
        if self.prediction_type != PredictionType::FlowPrediction {
            return refuse("only prediction_type = \"flow_prediction\" is supported");
        }
        if !self.predict_x0 {
            return refuse("predict_x0 = false cannot be used with flow_prediction");
        }
        if self.thresholding {
            return refuse("thresholding is not supported");
        }
        if self.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("solver_p is not supported");
        }
        if self.use_dynamic_shifting {
            return refuse("use_dynamic_shifting (a per-call mu) is not supported");
        }
        if self.use_karras_sigmas || self.use_exponential_sigmas || self.use_beta_sigmas {
            return refuse("Karras / exponential / beta sigmas are not supported with flow sigmas");
        }
        if self.solver_order == 0 {
            return refuse("solver_order must be at least 1");
        }
        if self.num_train_timesteps == 0 {
            return refuse("num_train_timesteps must be at least 1");
        }
        check_shift(self.flow_shift)?;
        check_shift_terminal(self.shift_terminal)
    }
}

/// `FlowMatchEulerDiscreteScheduler`'s registered config (diffusers constructor defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlowMatchEulerConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    pub base_shift: Option<f64>,
    pub max_shift: Option<f64>,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub time_shift_type: String,
    pub stochastic_sampling: bool,
}

impl Default for FlowMatchEulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: Some(0.5),
            max_shift: Some(1.15),
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            invert_sigmas: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            time_shift_type: "exponential".into(),
            stochastic_sampling: false,
        }
    }
}

impl FlowMatchEulerConfig {
    /// Refuses the options this port does not implement (see the module doc).
    pub fn check_supported(&self) -> Result<()> {
        let refuse =
            |what: &str| Err(Error::UnsupportedConfig(format!("FlowMatchEulerDiscreteScheduler: {what}")));
        if self.use_dynamic_shifting {
            return refuse("use_dynamic_shifting (a per-call mu) is not supported");
        }
        if self.use_karras_sigmas || self.use_exponential_sigmas || self.use_beta_sigmas {
            return refuse("Karras / exponential / beta sigmas are not supported");
        }
        if self.invert_sigmas {
            return refuse("invert_sigmas (Mochi) is not supported");
        }
        if self.stochastic_sampling {
            return refuse("stochastic_sampling is not supported");
        }
        if self.num_train_timesteps == 0 {
            return refuse("num_train_timesteps must be at least 1");
        }
        check_shift(self.shift)?;
        check_shift_terminal(self.shift_terminal)
    }
}

/// A shift of 0 or below turns the shifted sigmas negative or infinite.
pub(crate) fn check_shift(shift: f64) -> Result<()> {
    if shift.is_finite() && shift > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("scheduler shift must be a positive number, got {shift}")))
    }
}

/// `shift_terminal` divides by `1 - shift_terminal`; diffusers treats 0 like "not set".
fn check_shift_terminal(shift_terminal: Option<f64>) -> Result<()> {
    match shift_terminal {
        Some(t) if t != 0.0 && !(t.is_finite() && t < 1.0) => {
            Err(Error::UnsupportedConfig(format!("shift_terminal must be below 1, got {t}")))
        }
        _ => Ok(()),
    }
}

/// The scheduler config of a model directory, by the class it names.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    UniPc(UniPcConfig),
    FlowMatchEuler(FlowMatchEulerConfig),
}

#[derive(Deserialize)]
struct ClassName {
    #[serde(rename = "_class_name")]
    class_name: String,
}

impl SchedulerConfig {
    /// The path diffusers loads a pipeline's scheduler config from.
    pub fn path_in(model_dir: &Path) -> PathBuf {
        model_dir.join("scheduler").join("scheduler_config.json")
    }

    /// Reads `model_dir/scheduler/scheduler_config.json` and parses it as the class its
    /// `_class_name` names.
    pub fn from_model_dir(model_dir: &Path) -> Result<Self> {
        let path = Self::path_in(model_dir);
        if !path.is_file() {
            return Err(Error::MissingModelFile {
                path: model_dir.to_path_buf(),
                what: "scheduler/scheduler_config.json".into(),
            });
        }
        let json: serde_json::Value = read_json(&path)?;
        Self::from_json(json).map_err(|e| match e {
            Error::UnsupportedConfig(what) => Error::UnsupportedConfig(format!("{}: {what}", path.display())),
            other => other,
        })
    }

    /// Parses a config object by its `_class_name`.
    pub fn from_json(json: serde_json::Value) -> Result<Self> {
        let parse_err = |e: serde_json::Error| Error::UnsupportedConfig(format!("invalid scheduler config: {e}"));
        let ClassName { class_name } = serde_json::from_value(json.clone()).map_err(parse_err)?;
        match class_name.as_str() {
            "UniPCMultistepScheduler" => Ok(Self::UniPc(serde_json::from_value(json).map_err(parse_err)?)),
            "FlowMatchEulerDiscreteScheduler" => {
                Ok(Self::FlowMatchEuler(serde_json::from_value(json).map_err(parse_err)?))
            }
            other => Err(Error::UnsupportedConfig(format!(
                "scheduler class {other:?} (supported: UniPCMultistepScheduler, FlowMatchEulerDiscreteScheduler)"
            ))),
        }
    }
}
