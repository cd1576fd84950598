//! One-time FFmpeg set-up and the guard every FFmpeg call of this module runs under.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use ffmpeg_next as ffmpeg;

use crate::{Error, Result};

/// Initialises FFmpeg once per process and quiets its logging to errors only, so that a bad upload
/// produces one `Error::Media`, not pages of demuxer warnings on the server's stderr.
pub(crate) fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(|e| Error::Media(format!("cannot initialise FFmpeg: {e}")))
}

/// Runs `work` (which calls into ffmpeg-next) and turns a panic inside it into `Error::Media`.
///
/// ffmpeg-next asserts on some states a corrupt stream can produce (unknown pixel formats, absent
/// planes); a request must never take the worker thread down with it.
pub(crate) fn guarded<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    init()?;
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".to_string());
            Err(Error::Media(format!("{what}: FFmpeg failed ({reason})")))
        }
    }
}

/// Wraps an FFmpeg error with what was being done.
pub(crate) fn av_error(what: &str, err: ffmpeg::Error) -> Error {
    Error::Media(format!("{what}: {err}"))
}
