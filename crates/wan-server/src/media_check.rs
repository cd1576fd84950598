//! Uploads are checked as media before they are kept, so a bad file is a 400 at upload time
//! instead of a job that fails minutes later: a truncated or corrupt PNG/JPEG/MP4, an image whose
//! header claims 100000x100000 pixels, a video that claims a million frames.
//!
//! Every check reads the header first and refuses over-limit claims before any pixel is
//! allocated (wan-pipeline's media limits); then an image is decoded whole (its size is capped
//! by the image upload limit and the pixel limit) and a video's first frame is decoded, which
//! proves the stream is readable without the cost of the whole file.

use std::path::Path;

use wan_pipeline::media::{self, MediaLimits, ResizeMode};

use crate::upload::MediaKind;

/// The first frame of a video is decoded at this size only to prove it decodes.
const PROBE_FRAME_SIDE: u32 = 16;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum MediaCheckError {
    /// Not usable media: a client error, said as a sentence for the client.
    #[error("the uploaded {kind} cannot be used: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// The stored file could not be read back: a server fault.
    #[error("cannot read the stored upload: {0}")]
    Io(String),
}

/// The media limits for an upload of at most `max_bytes`.
pub fn upload_limits(max_bytes: u64) -> MediaLimits {
    MediaLimits { max_bytes, ..MediaLimits::default() }
}

/// Checks the stored upload at `path` (already typed as `kind` from its first bytes). Blocking:
/// call it on a blocking thread.
pub fn check_upload(path: &Path, kind: MediaKind, limits: &MediaLimits) -> Result<(), MediaCheckError> {
    let result = match kind {
        MediaKind::Image => media::read_image(path, limits).map(drop),
        MediaKind::Video => {
            media::read_video(path, PROBE_FRAME_SIDE, PROBE_FRAME_SIDE, 1, ResizeMode::Stretch, limits).map(drop)
        }
    };
    result.map_err(|e| classify(kind.as_str(), e))
}

/// Checks an image held in memory (a base64 `image_start`). Blocking, as [`check_upload`].
pub fn check_image_bytes(bytes: &[u8], limits: &MediaLimits) -> Result<(), MediaCheckError> {
    media::read_image_bytes(bytes, limits).map(drop).map_err(|e| classify("image", e))
}

/// An i/o error is the server's; anything else is the file's, said without the "media error:"
/// prefix (the client knows it is about media) and without server paths.
fn classify(kind: &'static str, e: wan_pipeline::Error) -> MediaCheckError {
    match e {
        wan_pipeline::Error::Io { source, .. } => MediaCheckError::Io(source.to_string()),
        wan_pipeline::Error::Media(reason) | wan_pipeline::Error::InvalidInput(reason) => MediaCheckError::Invalid { kind, reason },
        other => MediaCheckError::Invalid { kind, reason: other.to_string() },
    }
}
