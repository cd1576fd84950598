//! CLIP image preprocessing as transformers' `CLIPImageProcessor` does it with its PIL backend:
//! resize (shortest edge, Pillow resampling on `u8`), centre crop, rescale, normalise.
//!
//! Every step follows the Python arithmetic so that `pixel_values` come out bit-identical:
//! the resize is Pillow's fixed-point resampler ([`super::resample`]), the crop offsets use
//! Python's floor division, the rescale multiplies in f64 and rounds to f32 (numpy's
//! `astype(float64) * scale` then `astype(float32)`), and normalisation runs in f32 with the
//! mean and std rounded to f32, as numpy does.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::resample::{resize_rgb8, Filter};
use crate::loader::read_json;
use crate::{Error, Result};

/// `size` of the processor config: either the shortest edge or an exact height and width.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ResizeSize {
    #[serde(default)]
    pub shortest_edge: Option<usize>,
    #[serde(default)]
    pub height: Option<usize>,
    #[serde(default)]
    pub width: Option<usize>,
}

/// `crop_size` of the processor config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CropSize {
    pub height: usize,
    pub width: usize,
}

/// `image_processor/preprocessor_config.json`, with `CLIPImageProcessor`'s defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessorConfig {
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "default_size")]
    pub size: ResizeSize,
    /// Pillow's filter code; 3 = BICUBIC.
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    #[serde(default = "default_crop_size")]
    pub crop_size: CropSize,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "default_mean")]
    pub image_mean: Vec<f64>,
    #[serde(default = "default_std")]
    pub image_std: Vec<f64>,
}

fn yes() -> bool {
    true
}
fn default_size() -> ResizeSize {
    ResizeSize { shortest_edge: Some(224), height: None, width: None }
}
fn default_resample() -> u32 {
    3
}
fn default_crop_size() -> CropSize {
    CropSize { height: 224, width: 224 }
}
fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
/// OpenAI CLIP's normalisation (transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`).
fn default_mean() -> Vec<f64> {
    vec![0.48145466, 0.4578275, 0.40821073]
}
fn default_std() -> Vec<f64> {
    vec![0.26862954, 0.26130258, 0.27577711]
}

/// An 8-bit RGB image as a packed buffer, the form every step before the rescale works on.
struct Rgb8 {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
}

/// The validated preprocessing of one model.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ImageProcessorConfig,
    filter: Filter,
}

impl ImageProcessor {
    /// Reads `dir/preprocessor_config.json` (the pipeline's `image_processor/` directory).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Err(Error::MissingModelFile { path: dir.to_path_buf(), what: "preprocessor_config.json".into() });
        }
        Self::new(read_json(&path)?)
    }

    pub fn new(config: ImageProcessorConfig) -> Result<Self> {
        let bad = |what: String| Err(Error::InvalidInput(format!("image processor config: {what}")));
        if config.do_normalize && (config.image_mean.len() != 3 || config.image_std.len() != 3) {
            return bad(format!(
                "image_mean and image_std need 3 values, got {} and {}",
                config.image_mean.len(),
                config.image_std.len()
            ));
        }
        if config.do_center_crop && (config.crop_size.height == 0 || config.crop_size.width == 0) {
            return bad("crop_size must be positive".into());
        }
        if config.do_resize {
            match (&config.size.shortest_edge, &config.size.height, &config.size.width) {
                (Some(s), _, _) if *s > 0 => {}
                (None, Some(h), Some(w)) if *h > 0 && *w > 0 => {}
                _ => {
                    return bad(format!(
                        "size must hold a positive shortest_edge or height and width, got {:?}",
                        config.size
                    ))
                }
            }
        }
        let filter = Filter::from_pil_code(config.resample)?;
        Ok(Self { config, filter })
    }

    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// RGB `u8` image -> `pixel_values` (1, 3, H, W) f32 on `device`.
    pub fn preprocess(&self, image: &image::RgbImage, device: &Device) -> Result<Tensor> {
        let (width, height) = (image.width() as usize, image.height() as usize);
        if width == 0 || height == 0 {
            return Err(Error::InvalidInput(format!("image is {width}x{height}")));
        }
        let mut img = Rgb8 { pixels: image.as_raw().clone(), width, height };
        if self.config.do_resize {
            let (out_h, out_w) = self.resize_target(height, width);
            if (out_h, out_w) != (height, width) {
                let pixels = resize_rgb8(&img.pixels, width, height, out_w, out_h, self.filter)?;
                img = Rgb8 { pixels, width: out_w, height: out_h };
            }
        }
        if self.config.do_center_crop {
            img = center_crop(&img, self.config.crop_size.height, self.config.crop_size.width);
        }
        let values = self.to_planar_f32(&img);
        Ok(Tensor::from_vec(values, (1, 3, img.height, img.width), device)?)
    }

    /// transformers' `get_resize_output_image_size(default_to_square=False)`: the shortest edge
    /// becomes `shortest_edge`, the other `int(shortest_edge * long / short)` (Python's true
    /// division of integers, then truncation). Returns (height, width).
    fn resize_target(&self, height: usize, width: usize) -> (usize, usize) {
        match self.config.size.shortest_edge {
            Some(target) => {
                let (short, long) = if width <= height { (width, height) } else { (height, width) };
                let new_long = ((target * long) as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, target)
                } else {
                    (target, new_long)
                }
            }
            // `new` checked that height and width are both there when shortest_edge is not.
            None => (self.config.size.height.unwrap_or(height), self.config.size.width.unwrap_or(width)),
        }
    }

    /// HWC `u8` -> CHW f32 with the rescale and normalisation of the config.
    fn to_planar_f32(&self, img: &Rgb8) -> Vec<f32> {
        let plane = img.width * img.height;
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            // numpy builds the mean/std arrays in the image's dtype (f32) before subtracting.
            let mean = self.config.image_mean.get(c).copied().unwrap_or(0.0) as f32;
            let std = self.config.image_std.get(c).copied().unwrap_or(1.0) as f32;
            for (i, o) in out[c * plane..(c + 1) * plane].iter_mut().enumerate() {
                let byte = img.pixels[i * 3 + c];
                let mut v = if self.config.do_rescale {
                    (byte as f64 * self.config.rescale_factor) as f32
                } else {
                    byte as f32
                };
                if self.config.do_normalize {
                    v = (v - mean) / std;
                }
                *o = v;
            }
        }
        out
    }
}

/// transformers' numpy `center_crop`: offsets `(size - crop) // 2` (floor division); an image
/// smaller than the crop is first centred on a zero canvas (offset rounded up), as Python does.
fn center_crop(img: &Rgb8, crop_h: usize, crop_w: usize) -> Rgb8 {
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    let mut top = (h - ch).div_euclid(2);
    let mut left = (w - cw).div_euclid(2);
    // Zero padding that centres a too-small image: ceil((new - old) / 2).
    let (new_h, new_w) = (ch.max(h), cw.max(w));
    let pad_top = (new_h - h + 1) / 2;
    let pad_left = (new_w - w + 1) / 2;
    top += pad_top;
    left += pad_left;
    let mut out = vec![0u8; crop_h * crop_w * 3];
    for y in 0..ch {
        // Row in padded-canvas coordinates, then in source coordinates.
        let src_y = top + y - pad_top;
        if src_y < 0 || src_y >= h {
            continue;
        }
        for x in 0..cw {
            let src_x = left + x - pad_left;
            if src_x < 0 || src_x >= w {
                continue;
            }
            let s = ((src_y * w + src_x) * 3) as usize;
            let d = ((y * cw + x) * 3) as usize;
            out[d..d + 3].copy_from_slice(&img.pixels[s..s + 3]);
        }
    }
    Rgb8 { pixels: out, width: crop_w, height: crop_h }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(json: &str) -> ImageProcessor {
        ImageProcessor::new(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn shortest_edge_target_truncates_the_long_side() {
        let p = processor(r#"{"size": {"shortest_edge": 32}}"#);
        // 64 * 32 / 48 = 42.67 -> 42; 56 * 32 / 40 = 44.8 -> 44.
        assert_eq!(p.resize_target(48, 64), (32, 42));
        assert_eq!(p.resize_target(56, 40), (44, 32));
        assert_eq!(p.resize_target(32, 32), (32, 32));
        assert_eq!(p.resize_target(100, 99), (((32 * 100) as f64 / 99.0) as usize, 32));
    }

    #[test]
    fn center_crop_takes_the_floor_offset_and_pads_small_images() {
        let (w, h) = (5usize, 4usize);
        let pixels: Vec<u8> = (0..w * h).flat_map(|i| [i as u8; 3]).collect();
        let img = Rgb8 { pixels, width: w, height: h };
        // (4 - 3) // 2 = 0 rows, (5 - 2) // 2 = 1 column.
        let crop = center_crop(&img, 3, 2);
        let firsts: Vec<u8> = crop.pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(firsts, vec![1, 2, 6, 7, 11, 12]);
        // 6x7 crop of 4x5: padding top 1, left 1, zeros around the image.
        let padded = center_crop(&img, 6, 7);
        let at = |y: usize, x: usize| padded.pixels[(y * 7 + x) * 3];
        assert_eq!(at(0, 0), 0);
        assert_eq!(at(1, 2), 1);
        assert_eq!(at(4, 5), 19);
        assert_eq!(at(5, 6), 0);
    }

    #[test]
    fn rejects_bad_configs_and_empty_images() {
        let bad = |json: &str| ImageProcessor::new(serde_json::from_str(json).unwrap()).is_err();
        assert!(bad(r#"{"image_mean": [0.5, 0.5]}"#));
        assert!(bad(r#"{"resample": 0}"#));
        assert!(bad(r#"{"size": {"height": 10}}"#));
        assert!(bad(r#"{"crop_size": {"height": 0, "width": 3}}"#));
        let p = processor("{}");
        assert!(p.preprocess(&image::RgbImage::new(0, 5), &Device::Cpu).is_err());
    }

    #[test]
    fn without_resize_pixels_are_only_rescaled_and_normalised() {
        let p = processor(r#"{"size": {"shortest_edge": 4}, "crop_size": {"height": 4, "width": 4}}"#);
        let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 200]));
        let pv = p.preprocess(&img, &Device::Cpu).unwrap();
        assert_eq!(pv.dims(), &[1, 3, 4, 4]);
        let v = pv.get(0).unwrap().get(0).unwrap().get(1).unwrap().get(3).unwrap().to_scalar::<f32>().unwrap();
        let expected = ((180.0f64 / 255.0) as f32 - 0.48145466f32) / 0.26862954f32;
        assert_eq!(v, expected);
    }
}
