//! The model behind the job manager: two slots (text/video-to-video and image-to-video), each empty,
//! loading, loaded or failed, implementing `wan_jobs::Generator` by routing each job to its slot.
//!
//! Loading goes through [`PipelineFactory`], so the slot logic (readiness, routing, reload) is the
//! same for the real wan-pipeline models and for the test doubles in tests/.
//!
//! The real factory, over wan-pipeline's t2v / i2v / v2v pipelines, is
//! [`crate::wan_adapter::WanPipelineFactory`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use wan_jobs::{Control, GenerationError, GenerationMode, GenerationOutcome, Generator, InvalidParam, JobParams, JobSpec, Readiness, StepProgress};

/// Which jobs a model serves, from its `model_index.json` / transformer config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Text-to-video and video-to-video.
    T2v,
    /// Image-to-video.
    I2v,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::T2v => "t2v",
            Role::I2v => "i2v",
        }
    }
}

/// A loaded model that can run jobs of its role.
pub trait LoadedPipeline: Send + Sync {
    fn generate(
        &self,
        job: &JobSpec,
        output_tmp: &Path,
        progress: &mut dyn FnMut(StepProgress) -> Control,
    ) -> Result<GenerationOutcome, GenerationError>;

    /// The model's own checks of a request (supported sizes, ...).
    fn check(&self, _params: &JobParams) -> Result<(), InvalidParam> {
        Ok(())
    }
}

/// Loads a complete diffusers Wan pipeline directory. Called on a blocking thread.
pub trait PipelineFactory: Send + Sync + 'static {
    fn load(&self, dir: &Path, role: Role) -> Result<Box<dyn LoadedPipeline>, String>;
    /// The CUDA device the models run on, `None` on the CPU (for `/api/v1/model/info`).
    fn gpu_device_id(&self) -> Option<u32> {
        None
    }
}

/// State of one slot, as `/health` and `/api/v1/models` report it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SlotState {
    Empty,
    Loading { model_id: String },
    Loaded { model_id: String, dir: PathBuf },
    Failed { model_id: String, reason: String },
}

enum Slot {
    Empty,
    Loading { model_id: String },
    Loaded { model_id: String, dir: PathBuf, pipeline: Arc<dyn LoadedPipeline> },
    Failed { model_id: String, reason: String },
}

impl Slot {
    fn state(&self) -> SlotState {
        match self {
            Slot::Empty => SlotState::Empty,
            Slot::Loading { model_id } => SlotState::Loading { model_id: model_id.clone() },
            Slot::Loaded { model_id, dir, .. } => SlotState::Loaded { model_id: model_id.clone(), dir: dir.clone() },
            Slot::Failed { model_id, reason } => SlotState::Failed { model_id: model_id.clone(), reason: reason.clone() },
        }
    }
}

/// The server's generator: the two model slots and the factory that fills them.
pub struct ModelSlots {
    factory: Arc<dyn PipelineFactory>,
    t2v: RwLock<Slot>,
    i2v: RwLock<Slot>,
}

const HOW_TO_LOAD: &str = "start the server with --model DIR (or run `wan-server init-demo-model models/demo` and use --model models/demo), or POST /api/v1/models/load";

impl ModelSlots {
    pub fn new(factory: Arc<dyn PipelineFactory>) -> Self {
        ModelSlots { factory, t2v: RwLock::new(Slot::Empty), i2v: RwLock::new(Slot::Empty) }
    }

    /// The CUDA device the models run on, `None` on the CPU.
    pub fn gpu_device_id(&self) -> Option<u32> {
        self.factory.gpu_device_id()
    }

    fn slot(&self, role: Role) -> &RwLock<Slot> {
        match role {
            Role::T2v => &self.t2v,
            Role::I2v => &self.i2v,
        }
    }

    fn set(&self, role: Role, slot: Slot) {
        match self.slot(role).write() {
            Ok(mut g) => *g = slot,
            Err(poisoned) => *poisoned.into_inner() = slot,
        }
    }

    pub fn state(&self, role: Role) -> SlotState {
        match self.slot(role).read() {
            Ok(g) => g.state(),
            Err(poisoned) => poisoned.into_inner().state(),
        }
    }

    fn pipeline(&self, role: Role) -> Result<Arc<dyn LoadedPipeline>, String> {
        let guard = match self.slot(role).read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*guard {
            Slot::Loaded { pipeline, .. } => Ok(pipeline.clone()),
            Slot::Loading { model_id } => Err(format!("the {} model {model_id} is still loading; retry shortly", role.as_str())),
            Slot::Failed { model_id, reason } => Err(format!("loading the {} model {model_id} failed: {reason}; {HOW_TO_LOAD}", role.as_str())),
            Slot::Empty => Err(format!("no {} model is loaded; {HOW_TO_LOAD}", role.as_str())),
        }
    }

    /// Marks the slot loading; false when it is already loading (no second load is started).
    pub fn begin_load(&self, role: Role, model_id: &str) -> bool {
        let mut guard = match self.slot(role).write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if matches!(&*guard, Slot::Loading { .. }) {
            return false;
        }
        *guard = Slot::Loading { model_id: model_id.to_string() };
        true
    }

    /// Loads `dir` into the slot (blocking; call on a blocking thread after `begin_load`).
    pub fn finish_load(&self, role: Role, model_id: &str, dir: &Path) -> Result<(), String> {
        match self.factory.load(dir, role) {
            Ok(p) => {
                self.set(role, Slot::Loaded { model_id: model_id.to_string(), dir: dir.to_path_buf(), pipeline: Arc::from(p) });
                tracing::info!(model = model_id, role = role.as_str(), "model loaded");
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(model = model_id, role = role.as_str(), %reason, "model load failed");
                self.set(role, Slot::Failed { model_id: model_id.to_string(), reason: reason.clone() });
                Err(reason)
            }
        }
    }

    /// The 503 reason when no model of `role` can serve.
    pub fn require(&self, role: Role) -> Result<(), String> {
        self.pipeline(role).map(|_| ())
    }

    fn role_of(params: &JobParams) -> Role {
        match params.mode {
            GenerationMode::ImageToVideo { .. } => Role::I2v,
            GenerationMode::TextToVideo | GenerationMode::VideoToVideo { .. } => Role::T2v,
        }
    }
}

impl Generator for ModelSlots {
    fn generate(
        &self,
        job: &JobSpec,
        output_tmp: &Path,
        progress: &mut dyn FnMut(StepProgress) -> Control,
    ) -> Result<GenerationOutcome, GenerationError> {
        let pipeline = self.pipeline(Self::role_of(&job.params)).map_err(GenerationError::Failed)?;
        pipeline.generate(job, output_tmp, progress)
    }

    /// Ready when any model is loaded: the job's own slot is checked at admission by `check`.
    fn ready(&self) -> Readiness {
        match (self.pipeline(Role::T2v), self.pipeline(Role::I2v)) {
            (Ok(_), _) | (_, Ok(_)) => Readiness::Ready,
            (Err(reason), _) => Readiness::NotReady(reason),
        }
    }

    fn check(&self, params: &JobParams) -> Result<(), InvalidParam> {
        // A missing model is a 503 the server answers before submitting (`require`); here only
        // the loaded model's own checks apply.
        match self.pipeline(Self::role_of(params)) {
            Ok(p) => p.check(params),
            Err(_) => Ok(()),
        }
    }
}
