//! Size limits every media input is checked against before it is decoded in full.

use crate::{Error, Result};

/// Upper bounds for one media input. Each check runs on facts read from the file header, so a
/// hostile file is refused before its pixels are allocated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Widest picture, in pixels.
    pub max_width: u32,
    /// Tallest picture, in pixels.
    pub max_height: u32,
    /// Largest picture area (width x height), in pixels.
    pub max_pixels: u64,
    /// Most frames a video may declare.
    pub max_frames: u64,
    /// Longest video, in seconds.
    pub max_duration_s: f64,
}

impl Default for MediaLimits {
    /// Generous for real inputs (8K stills, 10-minute 4K clips), far below what would exhaust memory:
    /// the decoder keeps only the frames asked for, so the frame and duration caps bound time, and
    /// the pixel cap bounds the one full-size frame held at once (8192 x 8192 RGB = 192 MiB).
    fn default() -> Self {
        MediaLimits {
            max_bytes: 512 * 1024 * 1024,
            max_width: 8192,
            max_height: 8192,
            max_pixels: 8192 * 8192,
            max_frames: 36_000,
            max_duration_s: 600.0,
        }
    }
}

impl MediaLimits {
    /// Refuses a file larger than `max_bytes`.
    pub fn check_bytes(&self, bytes: u64) -> Result<()> {
        if bytes > self.max_bytes {
            return Err(exceeded("file size", bytes, "bytes", self.max_bytes));
        }
        Ok(())
    }

    /// Refuses a picture wider, taller or larger in area than allowed, or with a zero side.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::Media(format!("picture has an empty side: {width}x{height}")));
        }
        if width > self.max_width {
            return Err(exceeded("width", width as u64, "pixels", self.max_width as u64));
        }
        if height > self.max_height {
            return Err(exceeded("height", height as u64, "pixels", self.max_height as u64));
        }
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(exceeded(
                &format!("picture area ({width}x{height})"),
                pixels,
                "pixels",
                self.max_pixels,
            ));
        }
        Ok(())
    }

    /// Refuses a video that declares more frames than allowed.
    pub fn check_frames(&self, frames: u64) -> Result<()> {
        if frames > self.max_frames {
            return Err(exceeded("frame count", frames, "frames", self.max_frames));
        }
        Ok(())
    }

    /// Refuses a video longer than allowed (or with a duration that is not a number).
    pub fn check_duration(&self, seconds: f64) -> Result<()> {
        if !seconds.is_finite() || seconds > self.max_duration_s {
            return Err(Error::Media(format!(
                "duration {seconds:.3} s exceeds the limit of {} s",
                self.max_duration_s
            )));
        }
        Ok(())
    }
}

fn exceeded(what: &str, found: u64, unit: &str, limit: u64) -> Error {
    Error::Media(format!("{what} {found} {unit} exceeds the limit of {limit} {unit}"))
}
