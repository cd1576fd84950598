//! DiT forward timings: `cargo bench --bench transformer`.
//!
//! Always runs the tiny t2v transformer of `../shared/models` (or `$WAN_TINY_MODEL`). With
//! `WAN_BIG_MODEL=/path/to/model_dir` (holding `transformer/`, e.g. the random-weight 1.3B made
//! by scripts/make_big_transformer.py) it also runs that model on a (1, 16, 5, 16, 16) latent
//! (320 tokens) with 512 text rows of which 24 are non-zero, in the dtypes of `WAN_BENCH_DTYPES`
//! (default "f32,bf16"; peak RSS is the process high-water mark, so give one dtype per run to
//! read each one's), and prints the median time, the achieved GFLOP/s and the peak RSS.
//! `WAN_BENCH_RUNS` sets the timed runs (default 3, after one warm-up).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wan_pipeline::transformer::{WanTransformer3DModel, WanTransformerConfig};

/// Peak resident set size of this process in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(str::to_owned))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Multiply-add FLOPs (x2) of one forward with `tokens` latent tokens and `text` text rows.
fn forward_flops(cfg: &WanTransformerConfig, tokens: usize, text: usize) -> f64 {
    let (l, t, d, f) = (tokens as f64, text as f64, cfg.inner_dim() as f64, cfg.ffn_dim as f64);
    let per_block = 2.0
        * (4.0 * l * d * d // self-attention q, k, v, out
            + 2.0 * l * d * d // cross-attention q, out
            + 2.0 * t * d * d // cross-attention k, v
            + 2.0 * l * d * f // feed-forward
            + 2.0 * l * l * d // self-attention scores and values
            + 2.0 * l * t * d); // cross-attention scores and values
    let text_embedder = 2.0 * t * (cfg.text_dim as f64 * d + d * d);
    cfg.num_layers as f64 * per_block + text_embedder
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Case {
    name: String,
    latent: (usize, usize, usize, usize, usize),
    text_len: usize,
    text_valid: usize,
}

fn run(model_dir: &Path, dtype: DType, case: &Case, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let load_start = Instant::now();
    let model = WanTransformer3DModel::load(&model_dir.join("transformer"), dtype, &device)?;
    let load_s = load_start.elapsed().as_secs_f64();
    let cfg = model.config.clone();
    let (b, c, f, h, w) = case.latent;
    let x = Tensor::randn(0f32, 1.0, (b, c, f, h, w), &device)?;
    let valid = Tensor::randn(0f32, 0.2, (b, case.text_valid, cfg.text_dim), &device)?;
    let pad = Tensor::zeros((b, case.text_len - case.text_valid, cfg.text_dim), DType::F32, &device)?;
    let text = Tensor::cat(&[&valid, &pad], 1)?;
    let t = Tensor::new(&[937i64], &device)?.repeat(b)?;
    let image = match cfg.image_dim {
        Some(d) => Some(Tensor::randn(0f32, 1.0, (b, 257, d), &device)?),
        None => None,
    };
    let (x, text) = (x.to_dtype(dtype)?, text.to_dtype(dtype)?);
    model.forward(&x, &t, &text, image.as_ref())?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        model.forward(&x, &t, &text, image.as_ref())?;
        times.push(start.elapsed().as_secs_f64());
    }
    // The same with the context prepared once, as a sampler does across its steps.
    let context = model.prepare_context(&text, image.as_ref())?;
    let mut cached = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        model.forward_with_context(&x, &t, &context, None)?;
        cached.push(start.elapsed().as_secs_f64());
    }
    let tokens = (f / cfg.patch_size[0]) * (h / cfg.patch_size[1]) * (w / cfg.patch_size[2]) * b;
    let dense = forward_flops(&cfg, tokens, case.text_len * b);
    let executed = forward_flops(&cfg, tokens, context.kept_text_rows() * b);
    let (med, med_cached) = (median(times), median(cached));
    println!(
        "{} {dtype:?}: forward median {med:.4} s ({:.1} GFLOP/s of the dense {:.1} GFLOP; {:.1} GFLOP/s executed over {:.1} GFLOP with {} of {} text rows kept), \
         forward with prepared context {med_cached:.4} s, load {load_s:.2} s, peak_rss_mib {:.0}",
        case.name,
        dense / med / 1e9,
        dense / 1e9,
        executed / med / 1e9,
        executed / 1e9,
        context.kept_text_rows(),
        case.text_len,
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::var("WAN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let tiny = std::env::var_os("WAN_TINY_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/wan-tiny-t2v"));
    let tiny_case = Case { name: "tiny-t2v".into(), latent: (1, 16, 3, 6, 8), text_len: 64, text_valid: 11 };
    run(&tiny, DType::F32, &tiny_case, runs.max(10))?;

    if let Some(big) = std::env::var_os("WAN_BIG_MODEL") {
        let dtypes = std::env::var("WAN_BENCH_DTYPES").unwrap_or_else(|_| "f32,bf16".into());
        let case = Case { name: "1.3B".into(), latent: (1, 16, 5, 16, 16), text_len: 512, text_valid: 24 };
        for name in dtypes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let dtype = wan_pipeline::loader::parse_dtype(name)?;
            run(Path::new(&big), dtype, &case, runs)?;
        }
    }
    Ok(())
}
