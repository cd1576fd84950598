//! `wan-gpu-check`: the measurements of `scripts/gpu-check.sh`, in one binary that needs nothing
//! but glibc and (built with `cuda`) the CUDA libraries, so it runs on a GPU machine with no Rust
//! toolchain and no FFmpeg.
//!
//! - `parity DIR...`: every fixture under the given roots on the chosen device and dtype (bf16 is
//!   held to `BF16_TOLERANCE`); one line per fixture, then `parity-<dtype>: N passed, ...`.
//! - `forward --transformer DIR`: one DiT forward at a request's size on random inputs, timed
//!   (the text context prepared once, as the denoising loop does); `--attention` picks the fused
//!   kernel or the chunked one.
//! - `job --model DIR`: a whole text-to-video job (text encoder, steps, VAE decode; frames counted,
//!   not encoded), its stage times and the device memory it peaked at.
//!
//! Each prints `key=value` lines that the script's table reads.

mod measure;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wan-gpu-check", about = "Parity, DiT forward time and job memory on a device")]
struct Cli {
    /// auto | cpu | cuda | cuda:N
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// f32 | bf16 | f16
    #[arg(long, global = true, default_value = "bf16")]
    dtype: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every fixture directory under the given roots.
    Parity {
        roots: Vec<PathBuf>,
    },
    /// Times the DiT forward of a transformer directory at a request's size.
    Forward {
        #[arg(long)]
        transformer: PathBuf,
        #[arg(long, default_value_t = 832)]
        width: usize,
        #[arg(long, default_value_t = 480)]
        height: usize,
        #[arg(long, default_value_t = 81)]
        frames: usize,
        /// Timed runs after one warm-up.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// fused (flash attention where built and applicable) | chunked
        #[arg(long, default_value = "fused")]
        attention: String,
    },
    /// Runs a whole text-to-video job and reports its stages and peak device memory.
    Job {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 832)]
        width: usize,
        #[arg(long, default_value_t = 480)]
        height: usize,
        #[arg(long, default_value_t = 81)]
        frames: usize,
        #[arg(long, default_value_t = 2)]
        steps: usize,
        #[arg(long, default_value_t = 5.0)]
        guidance: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let device = cli.device.parse::<wan_pipeline::device::DeviceChoice>()?.open()?;
    let dtype = wan_pipeline::loader::parse_dtype(&cli.dtype)?;
    println!("device={} dtype={}", wan_pipeline::device::describe(&device), cli.dtype);
    match cli.command {
        Command::Parity { roots } => measure::parity(&roots, dtype, &device),
        Command::Forward { transformer, width, height, frames, runs, attention } => {
            measure::forward(&transformer, dtype, &device, [width, height, frames], runs, &attention)
        }
        Command::Job { model, width, height, frames, steps, guidance } => {
            measure::job(&model, dtype, &device, [width, height, frames], steps, guidance)
        }
    }
}
