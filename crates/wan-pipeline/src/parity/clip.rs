//! Fixture kind `clip_image_encoder`: for every input image `{name}_uint8` (H, W, 3), the
//! preprocessed `{name}_pixel_values`, the penultimate hidden state `{name}_image_embeds` and the
//! `{name}_last_hidden_state` (debug) of the CLIP vision encoder.

use candle_core::DType;

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::image_encoder::ClipImageEncoder;
use crate::{Error, Result};

pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let encoder = ClipImageEncoder::load_all_layers(&fixture.model_dir, opts.dtype, &opts.device)?;
    let mut images = Vec::new();
    let mut names: Vec<&String> = fixture.inputs.keys().collect();
    names.sort();
    for key in names {
        let Some(name) = key.strip_suffix("_uint8") else { continue };
        images.push((name.to_string(), to_rgb_image(fixture, key)?));
    }
    if images.is_empty() {
        return Err(Error::Fixture(format!("{}: no *_uint8 input images", fixture.name)));
    }
    Ok(Some(Box::new(move || {
        let mut out = Outputs::new();
        for (name, image) in &images {
            let pixel_values = encoder.preprocess(image)?;
            let image_embeds = encoder.encode(&pixel_values)?;
            let last = encoder.last_hidden_state(&image_embeds)?;
            out.insert(format!("{name}_pixel_values"), pixel_values);
            out.insert(format!("{name}_image_embeds"), image_embeds);
            out.insert(format!("{name}_last_hidden_state"), last);
        }
        Ok(out)
    })))
}

/// An (H, W, 3) `u8` input tensor as an RGB image.
fn to_rgb_image(fixture: &Fixture, key: &str) -> Result<image::RgbImage> {
    let t = fixture.input(key)?;
    let bad =
        || Error::Fixture(format!("{}: {key} is {:?} {:?}, expected (H, W, 3) u8", fixture.name, t.dims(), t.dtype()));
    let (h, w, c) = t.dims3().map_err(|_| bad())?;
    if c != 3 || t.dtype() != DType::U8 {
        return Err(bad());
    }
    let pixels: Vec<u8> = t.flatten_all()?.to_vec1()?;
    image::RgbImage::from_raw(w as u32, h as u32, pixels).ok_or_else(bad)
}
