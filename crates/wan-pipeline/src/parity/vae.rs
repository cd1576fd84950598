//! Fixture kinds `vae_encode` and `vae_decode`: `AutoencoderKLWan` of the fixture's model.
//!
//! encode: `video` -> `mean`, `logvar`, `std`, `mode`, `latents_normalized`.
//! decode: normalised `latents` -> `latents_denormalized`, `video` (clamped to [-1, 1]) and
//! `frames` (`(video / 2 + 0.5).clamp(0, 1)` laid out `(B, F, H, W, 3)`, as diffusers'
//! `postprocess_video(.., "np")`).

use candle_core::{DType, Tensor};

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::vae::AutoencoderKLWan;
use crate::Result;

fn load_vae(fixture: &Fixture, opts: &RunOptions) -> Result<AutoencoderKLWan> {
    AutoencoderKLWan::load(&fixture.model_dir.join("vae"), opts.dtype, &opts.device)
}

pub fn prepare_encode(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let vae = load_vae(fixture, opts)?;
    let video = fixture.input("video")?.to_device(&opts.device)?;
    Ok(Some(Box::new(move || {
        let dist = vae.encode(&video)?;
        let mut out = Outputs::new();
        out.insert("latents_normalized".into(), vae.normalize_latents(dist.mode())?);
        out.insert("std".into(), dist.std()?);
        out.insert("mode".into(), dist.mode().clone());
        out.insert("mean".into(), dist.mean);
        out.insert("logvar".into(), dist.logvar);
        Ok(out)
    })))
}

pub fn prepare_decode(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let vae = load_vae(fixture, opts)?;
    let latents = fixture.input("latents")?.to_device(&opts.device)?;
    Ok(Some(Box::new(move || {
        let z = vae.denormalize_latents(&latents)?;
        let video = vae.decode(&z)?;
        let mut out = Outputs::new();
        out.insert("frames".into(), postprocess_frames(&video)?);
        out.insert("video".into(), video);
        out.insert("latents_denormalized".into(), z);
        Ok(out)
    })))
}

/// `(B, 3, F, H, W)` in [-1, 1] -> `(B, F, H, W, 3)` in [0, 1], f32.
fn postprocess_frames(video: &Tensor) -> Result<Tensor> {
    let frames = ((video.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0.0, 1.0)?;
    Ok(frames.permute((0, 2, 3, 4, 1))?.contiguous()?)
}
