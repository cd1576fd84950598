//! Reading an input image (PNG, JPEG, WebP) into RGB8, limits checked from the header first.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use super::limits::MediaLimits;
use super::probe::{check_jpeg_complete, image_crate_limits, require_image, sniff, MediaKind};
use super::resize::{resize_rgb, ResizeMode};
use crate::{Error, Result};

/// Reads an image file into RGB8 at its own size.
///
/// The EXIF orientation is applied and alpha is dropped, as diffusers' `load_image` does
/// (`ImageOps.exif_transpose`, then `convert("RGB")`).
pub fn read_image(path: &Path, limits: &MediaLimits) -> Result<RgbImage> {
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    limits.check_bytes(size)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_image_bytes(&bytes, limits)
}

/// Reads an image held in memory into RGB8 at its own size (see [`read_image`]).
pub fn read_image_bytes(bytes: &[u8], limits: &MediaLimits) -> Result<RgbImage> {
    limits.check_bytes(bytes.len() as u64)?;
    let kind = require_image(sniff(bytes))?;
    let format = kind
        .image_format()
        .ok_or_else(|| Error::Media(format!("{kind:?} has no image decoder")))?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image_crate_limits(limits));
    if kind == MediaKind::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Media(format!("cannot read the {kind:?} header: {e}")))?;
    let (width, height) = decoder.dimensions();
    limits.check_dimensions(width, height)?;
    // A missing or unreadable EXIF block is not an error: the picture is used as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Media(format!("cannot decode the {kind:?} image: {e}")))?;
    picture.apply_orientation(orientation);
    Ok(picture.into_rgb8())
}

/// Reads an image file and fits it to (width, height); `ResizeMode::Stretch` is diffusers' default.
pub fn read_image_resized(
    path: &Path,
    width: u32,
    height: u32,
    mode: ResizeMode,
    limits: &MediaLimits,
) -> Result<RgbImage> {
    let picture = read_image(path, limits)?;
    resize_rgb(&picture, width, height, mode)
}
