//! A JPEG preview of a generated video's first frame, for the server's preview route.

use std::io::Cursor;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;

use super::limits::MediaLimits;
use super::resize::{resize_rgb, ResizeMode};
use super::video_in::decode_frames;
use crate::{Error, Result};

/// JPEG quality of previews: small files, no visible blocking at thumbnail sizes.
const PREVIEW_QUALITY: u8 = 85;

/// The first frame of the video at `path`, scaled to `width` pixels wide (height keeps the aspect
/// ratio, rounded, at least 1), encoded as JPEG.
pub fn first_frame_jpeg(path: &Path, width: u32) -> Result<Vec<u8>> {
    let limits = MediaLimits::default();
    if width == 0 || width > limits.max_width {
        return Err(Error::InvalidInput(format!(
            "preview width must be 1..={}, got {width}",
            limits.max_width
        )));
    }
    let mut first = None;
    decode_frames(path, 1, &limits, |frame| {
        first = Some(frame);
        Ok(())
    })?;
    let frame = first.ok_or_else(|| Error::Media("the video has no decodable frame".into()))?;
    let height = ((frame.height() as u64 * width as u64 + frame.width() as u64 / 2)
        / frame.width() as u64)
        .clamp(1, limits.max_height as u64) as u32;
    let scaled = resize_rgb(&frame, width, height, ResizeMode::Stretch)?;
    let mut jpeg = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut jpeg, PREVIEW_QUALITY)
        .encode_image(&scaled)
        .map_err(|e| Error::Media(format!("encoding the preview JPEG: {e}")))?;
    Ok(jpeg.into_inner())
}
