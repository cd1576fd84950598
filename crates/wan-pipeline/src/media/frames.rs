//! Decoded video tensors -> RGB8 frames, with no FFmpeg: the pipeline hands frames to its caller
//! through this, whether or not the build can write an mp4.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::{Error, Result};

/// Converts an `(F, H, W, 3)` tensor of values in [0, 1] (any float dtype, any device) to RGB8.
///
/// Values are clamped, scaled by 255 and truncated, as diffusers' `export_to_video` does
/// (`(frame * 255).astype(np.uint8)`), so the bytes match the reference's.
pub fn tensor_to_frames(frames: &Tensor) -> Result<Vec<RgbImage>> {
    let (f, h, w, c) = frames.dims4()?;
    if c != 3 {
        return Err(Error::InvalidInput(format!(
            "expected (frames, height, width, 3) video, got {:?}",
            frames.shape()
        )));
    }
    let bytes = frames
        .to_dtype(DType::F32)?
        .clamp(0f32, 1f32)?
        .affine(255.0, 0.0)?
        .floor()?
        .to_dtype(DType::U8)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let frame_len = h * w * 3;
    (0..f)
        .map(|i| {
            RgbImage::from_raw(w as u32, h as u32, bytes[i * frame_len..(i + 1) * frame_len].to_vec())
                .ok_or_else(|| Error::InvalidInput("frame tensor has the wrong size".to_string()))
        })
        .collect()
}
