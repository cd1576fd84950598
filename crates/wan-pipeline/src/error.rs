//! The one error type of the pipeline crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model, running it, or reading/writing media.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("model directory {path} is incomplete: {what}")]
    MissingModelFile { path: PathBuf, what: String },

    /// A config option this port does not implement (refused at load, never silently ignored).
    #[error("unsupported configuration: {0}")]
    UnsupportedConfig(String),

    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("media error: {0}")]
    Media(String),

    /// A video reached a build without FFmpeg. Present in every build, so callers match on it the
    /// same way whichever features the crate was compiled with.
    #[error("this build has no video support (built without the media-ffmpeg feature): cannot open the {kind:?} video")]
    NoVideoSupport { kind: crate::media::MediaKind },

    #[error("cancelled")]
    Cancelled,

    /// The device asked for (`--device cuda:N`) cannot be used; the message says why.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),

    /// A job does not fit the device's memory (or the configured budget): what was asked, what it
    /// needs, what the device has free. The server stays up; the job fails with this message.
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    #[error("fixture error: {0}")]
    Fixture(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Whether this is a device allocation failure (CUDA's or cuBLAS's out-of-memory), however
    /// deep candle reported it.
    pub fn is_device_out_of_memory(&self) -> bool {
        match self {
            Error::OutOfMemory(_) => true,
            Error::Candle(e) => {
                let text = e.to_string();
                OOM_MARKERS.iter().any(|m| text.contains(m))
            }
            _ => false,
        }
    }
}

/// How CUDA (`cuMemAlloc`), cuBLAS and candle's allocator word an allocation failure.
const OOM_MARKERS: [&str; 3] = ["CUDA_ERROR_OUT_OF_MEMORY", "CUBLAS_STATUS_ALLOC_FAILED", "out of memory"];
