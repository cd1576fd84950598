//! Fixture kinds `pipeline_t2v`, `pipeline_i2v` and `pipeline_v2v`: the pipelines end to end with
//! the reference's initial latents (t2v, i2v) or noise (v2v), every stage's output compared.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde_json::Value;

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::pipeline::{self, stages, Conditioning, Control, GenerationParams, Trace, WanModels};
use crate::{Error, Result};

fn field_usize(f: &Fixture, key: &str) -> Result<usize> {
    f.call_field(key)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| Error::Fixture(format!("{}: call.{key} is not an integer", f.name)))
}

fn field_f64(f: &Fixture, key: &str) -> Result<f64> {
    f.call_field(key)?.as_f64().ok_or_else(|| Error::Fixture(format!("{}: call.{key} is not a number", f.name)))
}

fn field_opt_string(f: &Fixture, key: &str) -> Option<String> {
    f.call.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn load_png(f: &Fixture, name: &str) -> Result<RgbImage> {
    let path = f.file(name);
    Ok(image::open(&path).map_err(|e| Error::Fixture(format!("{}: {e}", path.display())))?.to_rgb8())
}

fn params_from_call(f: &Fixture, num_frames: usize) -> Result<GenerationParams> {
    let mut p = GenerationParams::new(field_opt_string(f, "prompt").unwrap_or_default());
    p.negative_prompt = field_opt_string(f, "negative_prompt");
    p.height = field_usize(f, "height")?;
    p.width = field_usize(f, "width")?;
    p.num_frames = num_frames;
    p.num_inference_steps = field_usize(f, "num_inference_steps")?;
    p.guidance_scale = field_f64(f, "guidance_scale")?;
    p.guidance_scale_2 = f.call.get("guidance_scale_2").and_then(Value::as_f64);
    p.max_sequence_length = field_usize(f, "max_sequence_length")?;
    Ok(p)
}

fn stack(name: &str, tensors: &[Tensor]) -> Result<Tensor> {
    if tensors.is_empty() {
        return Err(Error::Fixture(format!("no {name} recorded")));
    }
    Ok(Tensor::stack(tensors, 0)?)
}

fn i64_tensor(values: &[f64]) -> Result<Tensor> {
    let v: Vec<i64> = values.iter().map(|&t| t as i64).collect();
    Ok(Tensor::new(v, &Device::Cpu)?)
}

/// Runs a prepared pipeline and collects the outputs every pipeline fixture has.
fn run_common(models: &WanModels, params: &GenerationParams, conditioning: &Conditioning, noise: &Tensor) -> Result<(Outputs, pipeline::Prepared)> {
    let mut prepared = pipeline::prepare(models, params, conditioning, noise)?;
    let mut trace = Trace::default();
    let latents_start = prepared.latents.clone();
    let latents = pipeline::denoise_prepared(models, &mut prepared, stages::Guidance::of(params), &mut |_| Control::Continue, Some(&mut trace))?;
    let video = stages::decode(models, &latents)?;
    let frames = stages::video_to_unit_frames(&video)?;
    let sigmas: Vec<f32> = prepared.scheduler.sigmas().iter().map(|&s| s as f32).collect();
    let mut out = Outputs::new();
    out.insert("latents_final".into(), latents);
    out.insert("frames".into(), frames);
    out.insert("prompt_embeds".into(), prepared.prompt_embeds.to_dtype(DType::F32)?);
    if let Some(neg) = &prepared.negative_prompt_embeds {
        out.insert("negative_prompt_embeds".into(), neg.to_dtype(DType::F32)?);
    }
    out.insert("sigmas".into(), Tensor::new(sigmas, &Device::Cpu)?);
    out.insert("noise_pred_cond".into(), stack("noise_pred_cond", &trace.noise_pred_cond)?);
    if !trace.noise_pred_uncond.is_empty() {
        out.insert("noise_pred_uncond".into(), stack("noise_pred_uncond", &trace.noise_pred_uncond)?);
    }
    out.insert("timesteps_run".into(), i64_tensor(&trace.timesteps_run)?);
    if models.transformer_2.is_some() {
        out.insert("expert".into(), Tensor::new(trace.expert.clone(), &Device::Cpu)?);
    }
    out.insert("step_latents".into(), stack("step_latents", &trace.step_latents)?);
    out.insert("latents_start".into(), latents_start);
    Ok((out, prepared))
}

pub fn prepare_t2v(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let models = WanModels::load(&fixture.model_dir, opts.dtype, &opts.device)?;
    let params = params_from_call(fixture, field_usize(fixture, "num_frames")?)?;
    let latents = fixture.input("latents")?.clone();
    Ok(Some(Box::new(move || {
        let (mut out, _) = run_common(&models, &params, &Conditioning::Text, &latents)?;
        out.remove("latents_start");
        Ok(out)
    })))
}

pub fn prepare_i2v(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let models = WanModels::load(&fixture.model_dir, opts.dtype, &opts.device)?;
    let params = params_from_call(fixture, field_usize(fixture, "num_frames")?)?;
    let image_name = field_opt_string(fixture, "image").unwrap_or_else(|| "image.png".into());
    let conditioning = Conditioning::Image(load_png(fixture, &image_name)?);
    let latents = fixture.input("latents")?.clone();
    Ok(Some(Box::new(move || {
        let (mut out, prepared) = run_common(&models, &params, &conditioning, &latents)?;
        out.remove("latents_start");
        let missing = |what: &str| Error::Fixture(format!("i2v run produced no {what}"));
        // Wan2.2 image-to-video has no CLIP: the fixture then holds neither tensor.
        if let Some(pixels) = prepared.clip_pixel_values {
            out.insert("clip_pixel_values".into(), pixels);
        }
        if let Some(embeds) = prepared.image_embeds {
            out.insert("image_embeds".into(), embeds.to_dtype(DType::F32)?);
        }
        out.insert("image_preprocessed".into(), prepared.preprocessed.ok_or_else(|| missing("image_preprocessed"))?);
        out.insert("condition".into(), prepared.condition.ok_or_else(|| missing("condition"))?);
        Ok(out)
    })))
}

pub fn prepare_v2v(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let models = WanModels::load(&fixture.model_dir, opts.dtype, &opts.device)?;
    let names = super::tokenizer::string_list(fixture, "video")?;
    let frames = names.iter().map(|n| load_png(fixture, n)).collect::<Result<Vec<_>>>()?;
    let strength = field_f64(fixture, "strength")?;
    let params = params_from_call(fixture, frames.len())?;
    let conditioning = Conditioning::Video { frames, strength };
    let noise = fixture.input("noise")?.clone();
    Ok(Some(Box::new(move || {
        let (mut out, prepared) = run_common(&models, &params, &conditioning, &noise)?;
        let missing = |what: &str| Error::Fixture(format!("v2v run produced no {what}"));
        out.insert("video_preprocessed".into(), prepared.preprocessed.ok_or_else(|| missing("video_preprocessed"))?);
        out.insert("init_latents".into(), prepared.init_latents.ok_or_else(|| missing("init_latents"))?);
        let t = prepared.latent_timestep.ok_or_else(|| missing("latent_timestep"))?;
        out.insert("latent_timestep".into(), i64_tensor(&[t])?);
        Ok(out)
    })))
}
