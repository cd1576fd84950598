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

    #[error("fixture error: {0}")]
    Fixture(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
