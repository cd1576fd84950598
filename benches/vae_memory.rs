//! Peak memory of VAE decoding against the frame count (issue 3).
//!
//! Goal: decoding 81 frames must peak at no more than 1.3x the memory of decoding 9 frames at the
//! same size. Each measurement runs in a child process (this same binary, told what to do by the
//! `WAN_VAE_MEM_CHILD` variable) so that every peak (`VmHWM` from /proc) is its own.
//!
//! Run: `cargo bench --bench vae_memory` (uses the tiny VAE of `../shared/models/wan-tiny-t2v`;
//! `WAN_VAE_DIR` overrides it, `WAN_VAE_MEM_SIZE=HxW` the frame size, default 240x416).
//! The streaming decode (frames handed out chunk by chunk, as the pipeline does when writing an
//! mp4) is measured against the goal; the collecting `decode` is printed for comparison.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wan_pipeline::vae::AutoencoderKLWan;

const CHILD_VAR: &str = "WAN_VAE_MEM_CHILD";
/// 9 and 81 video frames: 3 and 21 latent frames.
const LATENT_FRAMES: [usize; 2] = [3, 21];
const GOAL_RATIO: f64 = 1.3;

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

fn vae_dir() -> PathBuf {
    std::env::var_os("WAN_VAE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/wan-tiny-t2v/vae"))
}

fn frame_size() -> (usize, usize) {
    std::env::var("WAN_VAE_MEM_SIZE")
        .ok()
        .and_then(|s| {
            let (h, w) = s.split_once('x')?;
            Some((h.parse().ok()?, w.parse().ok()?))
        })
        .unwrap_or((240, 416))
}

/// Child: decode `latent_frames` latent frames and print `peak_kib base_kib seconds frames`.
fn child(spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (mode, frames) = spec.split_once(':').ok_or("child spec is MODE:FRAMES")?;
    let latent_frames: usize = frames.parse()?;
    let (h, w) = frame_size();
    let device = Device::Cpu;
    let vae = AutoencoderKLWan::load(&vae_dir(), DType::F32, &device)?;
    let s = vae.config.scale_factor_spatial;
    let z = Tensor::randn(0f32, 1f32, (1, vae.config.z_dim, latent_frames, h / s, w / s), &device)?;
    let z = vae.denormalize_latents(&z)?;
    let base = status_kib("VmRSS:");
    let started = Instant::now();
    let mut decoded = 0usize;
    match mode {
        "stream" => vae.decode_streaming(&z, &mut |chunk| {
            decoded += chunk.dim(2)?;
            Ok(())
        })?,
        "collect" => decoded = vae.decode(&z)?.dim(2)?,
        other => return Err(format!("unknown mode {other}").into()),
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{} {} {secs:.3} {decoded}", status_kib("VmHWM:"), base);
    Ok(())
}

struct Measurement {
    peak_mib: f64,
    base_mib: f64,
    secs: f64,
    frames: usize,
}

fn measure(mode: &str, latent_frames: usize) -> Result<Measurement, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?).env(CHILD_VAR, format!("{mode}:{latent_frames}")).output()?;
    if !out.status.success() {
        return Err(format!("child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 4 {
        return Err(format!("unexpected child output {text:?}").into());
    }
    Ok(Measurement {
        peak_mib: fields[0].parse::<f64>()? / 1024.0,
        base_mib: fields[1].parse::<f64>()? / 1024.0,
        secs: fields[2].parse()?,
        frames: fields[3].parse()?,
    })
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        return match child(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let (h, w) = frame_size();
    println!("vae_memory: tiny VAE {} at {h}x{w}, f32, CPU", vae_dir().display());
    let mut ok = true;
    for mode in ["stream", "collect"] {
        let mut peaks = Vec::new();
        for f in LATENT_FRAMES {
            match measure(mode, f) {
                Ok(m) => {
                    println!(
                        "  {mode:7} {:3} frames: peak {:8.1} MiB (before decode {:7.1} MiB, decode added {:7.1} MiB) in {:.2} s",
                        m.frames,
                        m.peak_mib,
                        m.base_mib,
                        m.peak_mib - m.base_mib,
                        m.secs
                    );
                    peaks.push(m.peak_mib);
                }
                Err(e) => {
                    eprintln!("  {mode} {f} latent frames: {e}");
                    ok = false;
                }
            }
        }
        if let [small, large] = peaks[..] {
            let ratio = large / small;
            let verdict = if mode == "stream" {
                if ratio <= GOAL_RATIO {
                    "meets the goal"
                } else {
                    ok = false;
                    "MISSES the goal"
                }
            } else {
                "for comparison"
            };
            println!("  {mode:7} peak(81) / peak(9) = {ratio:.3} (goal <= {GOAL_RATIO}): {verdict}");
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
