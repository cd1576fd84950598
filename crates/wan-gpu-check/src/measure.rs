//! The three measurements of the GPU check, each printing `key=value` lines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use wan_pipeline::memory::{estimate, JobShape, WeightBytes};
use wan_pipeline::parity::{compare, compare_half_precision, discover, prepare, Fixture, RunOptions, BF16_TOLERANCE};
use wan_pipeline::pipeline::{self, Conditioning, Control, GenerationParams, WanModels};
use wan_pipeline::transformer::WanTransformer3DModel;

/// The least free device memory seen so far: sampled between steps and decoded frames, so it
/// misses peaks inside a step (the script's `nvidia-smi` poll catches those).
struct MemoryWatch<'a> {
    device: &'a Device,
    min_free: Option<u64>,
    total: Option<u64>,
}

impl<'a> MemoryWatch<'a> {
    fn new(device: &'a Device) -> Self {
        let mut watch = MemoryWatch { device, min_free: None, total: None };
        watch.sample();
        watch
    }

    fn sample(&mut self) {
        if let Some(info) = wan_pipeline::device::memory_info(self.device) {
            self.min_free = Some(self.min_free.map_or(info.free, |m| m.min(info.free)));
            self.total = Some(info.total);
        }
    }

    /// Device memory in use at the sampled peak (on the CPU: the machine's, not this process's).
    fn peak_used(&self) -> Option<u64> {
        Some(self.total? - self.min_free?)
    }
}

pub fn parity(roots: &[PathBuf], dtype: DType, device: &Device) -> Result<()> {
    let opts = RunOptions { dtype, device: device.clone() };
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut worst = 0f64;
    for root in roots {
        for dir in discover(root).with_context(|| format!("reading fixtures at {}", root.display()))? {
            let fixture = match Fixture::load(&dir) {
                Ok(f) => f,
                Err(e) => {
                    println!("fixture {}: FAIL cannot load: {e}", dir.display());
                    failed += 1;
                    continue;
                }
            };
            let started = Instant::now();
            let result = prepare(&fixture, &opts).and_then(|c| match c {
                None => Ok(None),
                Some(mut run) => run()
                    .and_then(|out| match dtype {
                        DType::F32 => compare(&fixture, &out),
                        _ => compare_half_precision(&fixture, &out, BF16_TOLERANCE),
                    })
                    .map(Some),
            });
            let secs = started.elapsed().as_secs_f64();
            match result {
                Ok(None) => {
                    println!("fixture {} ({}): skipped", fixture.name, fixture.kind);
                    skipped += 1;
                }
                Ok(Some(report)) => {
                    worst = worst.max(report.max_abs_err);
                    let verdict = if report.passed() { "ok" } else { "FAIL" };
                    println!("fixture {} ({}): {verdict} max_abs_err={:.3e} [{secs:.2} s]", fixture.name, fixture.kind, report.max_abs_err);
                    for m in &report.mismatches {
                        println!("    {}: {}", m.tensor, m.detail);
                    }
                    if report.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
                Err(e) => {
                    println!("fixture {} ({}): FAIL error: {e}", fixture.name, fixture.kind);
                    failed += 1;
                }
            }
        }
    }
    println!("parity_passed={passed} parity_failed={failed} parity_skipped={skipped} parity_max_abs_err={worst:.3e}");
    if failed > 0 {
        bail!("{failed} fixtures failed");
    }
    Ok(())
}

pub fn forward(dir: &Path, dtype: DType, device: &Device, [width, height, frames]: [usize; 3], runs: usize, attention: &str) -> Result<()> {
    match attention {
        "fused" => wan_pipeline::transformer::attention::set_fused_attention(true),
        "chunked" => wan_pipeline::transformer::attention::set_fused_attention(false),
        other => bail!("--attention must be fused or chunked, got {other:?}"),
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let loaded = Instant::now();
    let model = WanTransformer3DModel::load(dir, dtype, device)?;
    let load_s = loaded.elapsed().as_secs_f64();
    let cfg = model.config.clone();
    // The Wan2.1 VAE's compression: 4x in time, 8x in space.
    let latent_frames = (frames.max(1) - 1) / 4 + 1;
    let shape = (1, cfg.in_channels, latent_frames, height / 8, width / 8);
    let [pt, ph, pw] = cfg.patch_size;
    let tokens = latent_frames / pt * (height / 8 / ph) * (width / 8 / pw);
    let latents = Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(dtype)?;
    let timestep = Tensor::new(&[500f32], device)?;
    // A prompt of 60 real tokens, zero rows after it, as the text encoder hands it over.
    let text = Tensor::randn(0f32, 1.0, (1, 60, cfg.text_dim), device)?;
    let text = Tensor::cat(&[&text, &Tensor::zeros((1, 452, cfg.text_dim), DType::F32, device)?], 1)?.to_dtype(dtype)?;
    let context = model.prepare_context(&text, None)?;
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        device.synchronize()?;
        let t = Instant::now();
        let out = model.forward_with_context(&latents, &timestep, &context, None)?;
        device.synchronize()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "forward_attention={attention} forward_tokens={tokens} forward_load_s={load_s:.2} forward_median_s={:.4} forward_min_s={:.4} forward_max_s={:.4}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}

pub fn job(dir: &Path, dtype: DType, device: &Device, [width, height, frames]: [usize; 3], steps: usize, guidance: f64) -> Result<()> {
    let mut watch = MemoryWatch::new(device);
    let started = Instant::now();
    let models = WanModels::load(dir, dtype, device)?;
    device.synchronize()?;
    let load_s = started.elapsed().as_secs_f64();
    watch.sample();
    let weights = WeightBytes::of_dir(dir, models.kind, dtype)?;
    let mut params = GenerationParams::new("A red fox running through fresh snow at dawn, cinematic");
    params.negative_prompt = Some("blurry, low quality".into());
    (params.width, params.height, params.num_frames) = (width, height, frames);
    (params.num_inference_steps, params.guidance_scale, params.seed) = (steps, guidance, 42);
    let expected = estimate(&models, weights, JobShape::of(&params, false));

    let noise = pipeline::gaussian_noise(params.seed, &pipeline::noise_shape(&models, &params, &Conditioning::Text), device)?;
    let t = Instant::now();
    let mut prepared = pipeline::prepare(&models, &params, &Conditioning::Text, &noise)?;
    device.synchronize()?;
    let text_s = t.elapsed().as_secs_f64();
    watch.sample();

    let t = Instant::now();
    let latents = pipeline::denoise_prepared(
        &models,
        &mut prepared,
        pipeline::stages::Guidance::of(&params),
        &mut |_| {
            watch.sample();
            Control::Continue
        },
        None,
    )?;
    device.synchronize()?;
    let steps_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let z = models.vae.denormalize_latents(&latents)?.to_dtype(dtype)?;
    let mut decoded = 0usize;
    models.vae.decode_streaming(&z, &mut |chunk| {
        decoded += chunk.dim(2)?;
        watch.sample();
        Ok(())
    })?;
    device.synchronize()?;
    let decode_s = t.elapsed().as_secs_f64();
    let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
    let peak = watch.peak_used().map_or("unknown".to_string(), mib);
    println!(
        "job_size={width}x{height}x{frames} job_steps={steps} job_load_s={load_s:.2} job_text_s={text_s:.3} job_steps_s={steps_s:.3} job_decode_s={decode_s:.3} job_frames={decoded} job_weights_mib={} job_sampled_peak_mib={peak} job_estimate_mib={}",
        mib(weights.total()),
        mib(expected.peak()),
    );
    println!("job_estimate: {expected}");
    Ok(())
}
