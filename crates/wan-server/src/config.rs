//! Server settings, resolved in one order: compiled defaults -> a TOML file -> `WAN_*` environment
//! variables -> command-line flags (clap reads the environment variable of a flag when the flag is
//! absent, so a flag always wins over the environment and both over the file).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the server is configured with. Serialised (minus secrets) by `GET /api/v1/config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Model for text- and video-to-video: a directory (absolute, relative, or a name under
    /// `models_dir`) or a hub repo id `org/name` found in the hub cache.
    pub model: Option<String>,
    /// Model for image-to-video, same forms as `model`.
    pub i2v_model: Option<String>,
    /// Holds the job store; outputs go to `<data_dir>/outputs` unless `outputs_dir` is set.
    pub data_dir: PathBuf,
    pub outputs_dir: Option<PathBuf>,
    /// Local model directories known to the server.
    pub models_dir: PathBuf,
    /// The hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub hub_cache_dir: Option<PathBuf>,
    /// The hub's address (`HF_ENDPOINT` when unset; huggingface.co when neither is).
    pub hub_endpoint: Option<String>,
    /// Jobs pending or processing at once; one more is a 429.
    pub max_concurrent_requests: usize,
    /// Jobs generated at the same time.
    pub workers: usize,
    /// Times a job is started before one more interruption (a crash or kill while it runs)
    /// marks it failed instead of running it again.
    pub max_attempts: u32,
    pub min_steps: i64,
    pub max_steps: i64,
    pub max_frames: i64,
    pub max_fps: i64,
    pub min_size: i64,
    pub max_size: i64,
    /// Largest image upload in bytes.
    pub max_image_bytes: u64,
    /// Largest video upload in bytes.
    pub max_video_bytes: u64,
    /// Largest JSON body in bytes (a base64 `image_start` counts).
    pub max_json_bytes: usize,
    /// Bearer key required on every route but `/health`; `None` = open.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Hosts a `callback_url` may name.
    pub callback_hosts: Vec<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Seconds a graceful shutdown waits for the running step.
    pub shutdown_timeout_s: u64,
    /// Where the models run: `auto` (the first GPU if this build has CUDA and one answers, else
    /// the CPU), `cpu`, `cuda` or `cuda:N` (an error at startup when it cannot be met).
    pub device: String,
    /// The most memory one job may need, weights included (`24GiB`, `8GB`, bytes); a job whose
    /// estimate is larger is refused at admission with the figures. Unset: no budget, only the
    /// device's free memory is checked when a job starts.
    pub vram_budget: Option<String>,
    /// Which kernels run the models: `auto` (the native CPU kernels on the CPU, candle's ops on
    /// a GPU), `native`, or `generic` (candle's ops everywhere: on the CPU, the code a GPU runs).
    pub kernels: String,
    /// The text encoder's dtype (`f32`, `bf16`, `f16`) when it should differ from the DiT's
    /// (f32 on the CPU, bf16 on a GPU): `bf16` halves the 5.7B-parameter UMT5-XXL's memory.
    pub text_encoder_dtype: Option<String>,
    /// How the DiT blocks' Linears are held: `bf16` (the compute dtype) or `fp8` (float8 e4m3fn,
    /// widened for each call: about half the DiT's memory, as diffusers' layerwise casting).
    pub weights: String,
    /// Keep the text encoder loaded between jobs (default: load it for each job's prompts and
    /// release it before the first step).
    pub keep_text_encoder: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            model: None,
            i2v_model: None,
            data_dir: PathBuf::from("data"),
            outputs_dir: None,
            models_dir: PathBuf::from("models"),
            hub_cache_dir: None,
            hub_endpoint: None,
            max_concurrent_requests: 2,
            workers: 1,
            max_attempts: 3,
            min_steps: 25,
            max_steps: 100,
            max_frames: 128,
            max_fps: 60,
            min_size: 16,
            max_size: 1920,
            max_image_bytes: 20 * 1024 * 1024,
            max_video_bytes: 512 * 1024 * 1024,
            max_json_bytes: 32 * 1024 * 1024,
            api_key: None,
            cors_origins: Vec::new(),
            callback_hosts: vec!["127.0.0.1".into(), "localhost".into(), "::1".into()],
            log_format: "text".into(),
            shutdown_timeout_s: 30,
            device: "auto".into(),
            vram_budget: None,
            kernels: "auto".into(),
            text_encoder_dtype: None,
            weights: "bf16".into(),
            keep_text_encoder: false,
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("invalid setting {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// `wan-server serve` flags; each also reads `WAN_<NAME>` from the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings (keys as the flags, with `_` for `-`).
    #[arg(long, env = "WAN_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "WAN_HOST")]
    pub host: Option<String>,
    #[arg(long, env = "WAN_PORT")]
    pub port: Option<u16>,
    /// Text/video-to-video model: a directory, a name under --models-dir, or a hub repo id.
    #[arg(long, env = "WAN_MODEL")]
    pub model: Option<String>,
    /// Image-to-video model (same forms as --model).
    #[arg(long, env = "WAN_I2V_MODEL")]
    pub i2v_model: Option<String>,
    #[arg(long, env = "WAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "WAN_OUTPUTS_DIR")]
    pub outputs_dir: Option<PathBuf>,
    #[arg(long, env = "WAN_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    #[arg(long, env = "WAN_HUB_CACHE_DIR")]
    pub hub_cache_dir: Option<PathBuf>,
    /// The hub's address (default: HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, env = "HF_ENDPOINT")]
    pub hub_endpoint: Option<String>,
    #[arg(long, env = "WAN_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    #[arg(long, env = "WAN_WORKERS")]
    pub workers: Option<usize>,
    /// Starts of one job before a further interruption marks it failed.
    #[arg(long, env = "WAN_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    #[arg(long, env = "WAN_MIN_STEPS")]
    pub min_steps: Option<i64>,
    #[arg(long, env = "WAN_MAX_STEPS")]
    pub max_steps: Option<i64>,
    #[arg(long, env = "WAN_MAX_FRAMES")]
    pub max_frames: Option<i64>,
    #[arg(long, env = "WAN_MAX_FPS")]
    pub max_fps: Option<i64>,
    #[arg(long, env = "WAN_MIN_SIZE")]
    pub min_size: Option<i64>,
    #[arg(long, env = "WAN_MAX_SIZE")]
    pub max_size: Option<i64>,
    #[arg(long, env = "WAN_MAX_IMAGE_BYTES")]
    pub max_image_bytes: Option<u64>,
    #[arg(long, env = "WAN_MAX_VIDEO_BYTES")]
    pub max_video_bytes: Option<u64>,
    #[arg(long, env = "WAN_MAX_JSON_BYTES")]
    pub max_json_bytes: Option<usize>,
    #[arg(long, env = "WAN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Comma-separated CORS origins (empty = CORS off).
    #[arg(long, env = "WAN_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Comma-separated hosts a callback_url may name.
    #[arg(long, env = "WAN_CALLBACK_HOSTS", value_delimiter = ',')]
    pub callback_hosts: Option<Vec<String>>,
    /// `text` or `json`.
    #[arg(long, env = "WAN_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[arg(long, env = "WAN_SHUTDOWN_TIMEOUT_S")]
    pub shutdown_timeout_s: Option<u64>,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long, env = "WAN_DEVICE")]
    pub device: Option<String>,
    /// Most memory one job may need, weights included (e.g. 24GiB); larger jobs get a 400.
    #[arg(long, env = "WAN_VRAM_BUDGET")]
    pub vram_budget: Option<String>,
    /// auto | native | generic: the native CPU kernels, or candle's ops (what a GPU runs).
    #[arg(long, env = "WAN_KERNELS")]
    pub kernels: Option<String>,
    /// f32 | bf16 | f16: the text encoder's dtype, when it should differ from the DiT's.
    #[arg(long, env = "WAN_TEXT_ENCODER_DTYPE")]
    pub text_encoder_dtype: Option<String>,
    /// bf16 | fp8: how the DiT blocks' Linears are held (fp8: e4m3fn, about half the DiT).
    #[arg(long, env = "WAN_WEIGHTS")]
    pub weights: Option<String>,
    /// Keep the text encoder loaded between jobs (default: loaded per job, released before the
    /// first step).
    #[arg(long, env = "WAN_KEEP_TEXT_ENCODER", num_args = 0..=1, default_missing_value = "true")]
    pub keep_text_encoder: Option<bool>,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),*) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl ServerConfig {
    /// Defaults, then the TOML file named by `--config`/`WAN_CONFIG`, then env and flags.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => Self::from_toml_file(path)?,
            None => ServerConfig::default(),
        };
        overlay!(cfg, args, host, port, data_dir, models_dir, max_concurrent_requests, workers, max_attempts, min_steps,
            max_steps, max_frames, max_fps, min_size, max_size, max_image_bytes, max_video_bytes, max_json_bytes,
            cors_origins, callback_hosts, log_format, shutdown_timeout_s, device, kernels, weights, keep_text_encoder);
        if args.vram_budget.is_some() {
            cfg.vram_budget = args.vram_budget.clone();
        }
        if args.text_encoder_dtype.is_some() {
            cfg.text_encoder_dtype = args.text_encoder_dtype.clone();
        }
        if args.model.is_some() {
            cfg.model = args.model.clone();
        }
        if args.i2v_model.is_some() {
            cfg.i2v_model = args.i2v_model.clone();
        }
        if args.outputs_dir.is_some() {
            cfg.outputs_dir = args.outputs_dir.clone();
        }
        if args.hub_cache_dir.is_some() {
            cfg.hub_cache_dir = args.hub_cache_dir.clone();
        }
        if args.hub_endpoint.is_some() {
            cfg.hub_endpoint = args.hub_endpoint.clone();
        }
        if args.api_key.is_some() {
            cfg.api_key = args.api_key.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source: Box::new(source) })
    }

    /// Rejects settings the server cannot run with, naming the setting and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if self.host.parse::<IpAddr>().is_err() && self.host != "localhost" {
            return invalid("host", format!("{:?} is not an IP address", self.host));
        }
        if self.workers == 0 {
            return invalid("workers", "must be at least 1, got 0".into());
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1, got 0".into());
        }
        if self.min_steps < 1 || self.min_steps > self.max_steps {
            return invalid("min_steps", format!("must be 1..=max_steps ({}), got {}", self.max_steps, self.min_steps));
        }
        if self.max_frames < 1 {
            return invalid("max_frames", format!("must be at least 1, got {}", self.max_frames));
        }
        if self.max_fps < 1 {
            return invalid("max_fps", format!("must be at least 1, got {}", self.max_fps));
        }
        if self.min_size < 16 || self.min_size > self.max_size {
            return invalid("min_size", format!("must be 16..=max_size ({}), got {}", self.max_size, self.min_size));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid("log_format", format!("must be text or json, got {:?}", self.log_format));
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return invalid("api_key", "must not be empty when set".into());
        }
        self.device_choice()?;
        self.vram_budget_bytes()?;
        self.kernel_choice()?;
        self.text_encoder_dtype()?;
        self.weight_storage()?;
        Ok(())
    }

    /// The `weights` setting, parsed.
    pub fn weight_storage(&self) -> Result<wan_pipeline::fp8::WeightStorage, ConfigError> {
        wan_pipeline::fp8::WeightStorage::parse(&self.weights)
            .map_err(|e| ConfigError::Invalid { field: "weights", message: e.to_string() })
    }

    /// The `kernels` setting, parsed.
    pub fn kernel_choice(&self) -> Result<wan_pipeline::backend::KernelChoice, ConfigError> {
        self.kernels.parse().map_err(|e: wan_pipeline::Error| ConfigError::Invalid { field: "kernels", message: e.to_string() })
    }

    /// The `text_encoder_dtype` setting, parsed (`None`: the DiT's dtype).
    pub fn text_encoder_dtype(&self) -> Result<Option<candle_core::DType>, ConfigError> {
        self.text_encoder_dtype
            .as_deref()
            .map(wan_pipeline::loader::parse_dtype)
            .transpose()
            .map_err(|e| ConfigError::Invalid { field: "text_encoder_dtype", message: e.to_string() })
    }

    /// The `device` setting, parsed.
    pub fn device_choice(&self) -> Result<wan_pipeline::device::DeviceChoice, ConfigError> {
        self.device.parse().map_err(|e: wan_pipeline::Error| ConfigError::Invalid { field: "device", message: e.to_string() })
    }

    /// The `vram_budget` setting in bytes.
    pub fn vram_budget_bytes(&self) -> Result<Option<u64>, ConfigError> {
        self.vram_budget
            .as_deref()
            .map(wan_pipeline::memory::parse_bytes)
            .transpose()
            .map_err(|e| ConfigError::Invalid { field: "vram_budget", message: e.to_string() })
    }

    pub fn outputs_dir(&self) -> PathBuf {
        self.outputs_dir.clone().unwrap_or_else(|| self.data_dir.join("outputs"))
    }

    /// Where uploads are kept until their job has used them.
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// The hub cache: this setting, else `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub` (the layout Python's huggingface_hub uses).
    pub fn hub_cache_dir(&self) -> PathBuf {
        match &self.hub_cache_dir {
            Some(dir) => dir.clone(),
            None => wan_pipeline::hub_cache::hub_cache_dir(),
        }
    }

    /// The job manager's limits from these settings (the rest keep API.md's defaults).
    pub fn limits(&self) -> wan_jobs::Limits {
        let mut limits = wan_jobs::Limits::default();
        limits.num_frames.max = self.max_frames;
        limits.fps.max = self.max_fps;
        limits.width = wan_jobs::Bounds::new(self.min_size, self.max_size);
        limits.height = wan_jobs::Bounds::new(self.min_size, self.max_size);
        limits.num_inference_steps = wan_jobs::Bounds::new(self.min_steps, self.max_steps);
        limits.default_num_inference_steps = limits.default_num_inference_steps.clamp(self.min_steps, self.max_steps);
        limits.default_num_frames = limits.default_num_frames.min(self.max_frames);
        limits.callback_hosts = self.callback_hosts.clone();
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_override_defaults() {
        let dir = std::env::temp_dir().join(format!("wan-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "port = 9000\nmax_steps = 60\nworkers = 2\n").unwrap();
        let args = ServeArgs { config: Some(file), port: Some(9100), ..Default::default() };
        let cfg = ServerConfig::resolve(&args).unwrap();
        assert_eq!(cfg.port, 9100, "flag wins over the file");
        assert_eq!(cfg.max_steps, 60, "file wins over the default");
        assert_eq!(cfg.workers, 2);
        assert_eq!(cfg.host, "127.0.0.1");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("wan-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "prot = 1\n").unwrap();
        let args = ServeArgs { config: Some(file), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Parse { .. })));
        let args = ServeArgs { workers: Some(0), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "workers", .. })));
        let args = ServeArgs { max_attempts: Some(0), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "max_attempts", .. })));
        let args = ServeArgs { device: Some("gpu".into()), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "device", .. })));
        let args = ServeArgs { vram_budget: Some("lots".into()), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "vram_budget", .. })));
        let args = ServeArgs { kernels: Some("fastest".into()), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "kernels", .. })));
        let args = ServeArgs { text_encoder_dtype: Some("int4".into()), ..Default::default() };
        assert!(matches!(ServerConfig::resolve(&args), Err(ConfigError::Invalid { field: "text_encoder_dtype", .. })));
        let args = ServeArgs { kernels: Some("generic".into()), text_encoder_dtype: Some("bf16".into()), ..Default::default() };
        let cfg = ServerConfig::resolve(&args).unwrap();
        assert_eq!(cfg.kernel_choice().unwrap(), wan_pipeline::backend::KernelChoice::Generic);
        assert_eq!(cfg.text_encoder_dtype().unwrap(), Some(candle_core::DType::BF16));
        let args = ServeArgs { vram_budget: Some("8GiB".into()), device: Some("cpu".into()), ..Default::default() };
        assert_eq!(ServerConfig::resolve(&args).unwrap().vram_budget_bytes().unwrap(), Some(8 << 30));
        let args = ServeArgs { max_attempts: Some(50), ..Default::default() };
        assert_eq!(ServerConfig::resolve(&args).unwrap().max_attempts, 50);
        let args = ServeArgs { weights: Some("int4".into()), ..Default::default() };
        let err = ServerConfig::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("weights") && err.contains("int4"), "{err}");
        let args = ServeArgs { weights: Some("fp8".into()), keep_text_encoder: Some(true), ..Default::default() };
        let cfg = ServerConfig::resolve(&args).unwrap();
        assert_eq!(cfg.weight_storage().unwrap(), wan_pipeline::fp8::WeightStorage::Fp8E4m3);
        assert!(cfg.keep_text_encoder);
        let cfg = ServerConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(cfg.weight_storage().unwrap(), wan_pipeline::fp8::WeightStorage::Compute);
        assert!(!cfg.keep_text_encoder, "the text encoder is released between jobs by default");
    }
}
