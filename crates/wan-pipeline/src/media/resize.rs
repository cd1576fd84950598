//! Resizing input pictures to the generation size the way diffusers does.
//!
//! diffusers' `VaeImageProcessor.resize` (used by `VideoProcessor.preprocess` for image-to-video and
//! `preprocess_video` for video-to-video) works on PIL images with `resample="lanczos"`. Its default
//! `resize_mode="default"` is a plain `image.resize((width, height))`, ignoring the aspect ratio;
//! `resize_mode="crop"` scales to cover the target and centre-crops. `fast_image_resize`'s
//! convolution filters implement Pillow's, so Lanczos3 here is Pillow's LANCZOS.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::{Error, Result};

/// How a picture is fitted to the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// diffusers' default: resize to exactly (width, height), stretching if the aspect differs.
    #[default]
    Stretch,
    /// diffusers' `resize_mode="crop"`: scale to cover (width, height), then centre-crop.
    Cover,
}

/// Resizes an RGB picture to (width, height) with Pillow's Lanczos filter.
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidInput(format!("target size {width}x{height} has an empty side")));
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Media("cannot resize an empty picture".to_string()));
    }
    match mode {
        ResizeMode::Stretch => lanczos(img, width, height),
        ResizeMode::Cover => cover(img, width, height),
    }
}

/// Scale-to-cover then centre-crop, with diffusers' integer arithmetic (`_resize_and_crop`), so the
/// crop offsets match it to the pixel.
fn cover(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    let (iw, ih) = (img.width() as u64, img.height() as u64);
    let (w, h) = (width as u64, height as u64);
    // The target is wider than the source (w/h > iw/ih): fit the width, overflow the height.
    let (scaled_w, scaled_h) = if w * ih > iw * h {
        (w, (ih * w / iw).max(1))
    } else {
        ((iw * h / ih).max(1), h)
    };
    let scaled = lanczos(img, scaled_w as u32, scaled_h as u32)?;
    let left = (scaled_w / 2).saturating_sub(w / 2) as u32;
    let top = (scaled_h / 2).saturating_sub(h / 2) as u32;
    Ok(image::imageops::crop_imm(&scaled, left, top, width, height).to_image())
}

/// Pillow's resize: the horizontal pass first, then the vertical one, each rounded and clipped to
/// 8 bits. `fast_image_resize` runs the passes the other way round, which differs from Pillow by
/// up to ~20 levels on high-frequency pictures (intermediate clipping), so the passes are split
/// here to keep Pillow's order.
fn lanczos(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if img.dimensions() == (width, height) {
        // Pillow returns a copy without resampling when the size is unchanged.
        return Ok(img.clone());
    }
    if img.width() != width && img.height() != height {
        let horizontal = lanczos_pass(img, width, img.height())?;
        return lanczos_pass(&horizontal, width, height);
    }
    lanczos_pass(img, width, height)
}

/// One resize with the Lanczos3 convolution (a single axis when the other size is unchanged).
fn lanczos_pass(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .map_err(|e| Error::Media(format!("resize source: {e}")))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| Error::Media(format!("resize to {width}x{height}: {e}")))?;
    RgbImage::from_raw(width, height, dst.into_vec())
        .ok_or_else(|| Error::Media("resize produced a buffer of the wrong size".to_string()))
}
