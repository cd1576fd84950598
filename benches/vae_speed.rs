//! Speed of a VAE decode on the CPU: the native kernels (packed conv, fused channel norm) against
//! candle's ops (the generic path, the code a GPU runs), alternating in one run.
//!
//! Run: `cargo bench --bench vae_speed`. `WAN_VAE_DIR` is the VAE directory (default: the full-size
//! random VAE of scripts/bench-e2e.sh's model, `~/.cache/wan-server/bench/wan21-t2v-1.3b-random/vae`,
//! else the tiny one of `../shared/models/wan-tiny-t2v`); `WAN_VAE_SIZE=HxW` the frame size
//! (default 192x320), `WAN_VAE_LATENT_FRAMES` the latent frames (default 3: 9 video frames),
//! `WAN_VAE_ROUNDS` the rounds (default 2), `WAN_VAE_PATHS=native` (or `generic`) one path only (to
//! profile it). Prints the CPU, each round and the medians.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wan_pipeline::backend::{set_kernel_choice, KernelChoice};
use wan_pipeline::vae::AutoencoderKLWan;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn vae_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WAN_VAE_DIR") {
        return PathBuf::from(dir);
    }
    let big = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/wan-server/bench/wan21-t2v-1.3b-random/vae"))
        .filter(|d| d.join("config.json").is_file());
    big.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/wan-tiny-t2v/vae"))
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':'])).unwrap_or("?");
    let bf16 = if info.contains("avx512_bf16") { "AVX-512 BF16" } else if info.contains("avx512f") { "AVX-512F" } else if info.contains("avx2") { "AVX2 only" } else { "no AVX2" };
    format!("{model} ({bf16}, {} threads)", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (h, w) = std::env::var("WAN_VAE_SIZE")
        .ok()
        .and_then(|s| {
            let (h, w) = s.split_once('x')?;
            Some((h.parse().ok()?, w.parse().ok()?))
        })
        .unwrap_or((192usize, 320usize));
    let latent_frames: usize = env_or("WAN_VAE_LATENT_FRAMES", 3);
    let rounds: usize = env_or("WAN_VAE_ROUNDS", 2).max(1);
    let paths = std::env::var("WAN_VAE_PATHS").unwrap_or_default();
    let (run_native, run_generic) = (paths != "generic", paths != "native");
    let dir = vae_dir();
    let device = Device::Cpu;
    // A packed weight is laid out for the backend of the moment it loads: one VAE per path.
    set_kernel_choice(KernelChoice::Native);
    let native = AutoencoderKLWan::load(&dir, DType::F32, &device)?;
    set_kernel_choice(KernelChoice::Generic);
    let generic = AutoencoderKLWan::load(&dir, DType::F32, &device)?;
    let s = native.config.scale_factor_spatial;
    let z = Tensor::randn(0f32, 1f32, (1, native.config.z_dim, latent_frames, h / s, w / s), &device)?;
    let z = native.denormalize_latents(&z)?;
    println!("vae_speed: {} f32, decode {latent_frames} latent frames to {h}x{w}, CPU {}", dir.display(), cpu());
    let (mut t_native, mut t_generic) = (Vec::new(), Vec::new());
    let mut max_diff = 0f32;
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        let a = if run_native {
            set_kernel_choice(KernelChoice::Native);
            let started = Instant::now();
            let a = native.decode(&z)?;
            t_native.push(started.elapsed().as_secs_f64());
            line += &format!(" native {:.2} s", started.elapsed().as_secs_f64());
            Some(a)
        } else {
            None
        };
        if run_generic {
            set_kernel_choice(KernelChoice::Generic);
            let started = Instant::now();
            let b = generic.decode(&z)?;
            t_generic.push(started.elapsed().as_secs_f64());
            line += &format!(" generic {:.2} s", started.elapsed().as_secs_f64());
            if let Some(a) = a {
                max_diff = max_diff.max((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
            }
        }
        println!("{line}");
    }
    if !(run_native && run_generic) {
        return Ok(());
    }
    let (n, g) = (median(&mut t_native), median(&mut t_generic));
    println!("median: native {n:.2} s, generic {g:.2} s, native/generic {:.2}x; largest |native - generic| {max_diff:.2e}", n / g);
    Ok(())
}
