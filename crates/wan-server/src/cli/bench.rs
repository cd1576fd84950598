//! `wan-server bench FIXTURE_DIR [--runs N] [--dtype f32|bf16]`: times one fixture's computation.
//!
//! The models are loaded once, the computation runs once as a warm-up and then `runs` times; the
//! line printed gives the median, min and max wall time, the error against the fixture's expected
//! outputs (of the last run) and the process's peak resident memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wan_pipeline::parity::{compare, prepare, Fixture, RunOptions};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A fixture directory (holding manifest.json).
    pub fixture_dir: PathBuf,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Floating-point dtype of the weights and activations.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Peak resident set size of this process in MiB (VmHWM from /proc; 0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0.0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1, got 0");
    }
    let fixture = Fixture::load(&args.fixture_dir)
        .with_context(|| format!("loading fixture {}", args.fixture_dir.display()))?;
    let opts = RunOptions { dtype: wan_pipeline::loader::parse_dtype(&args.dtype)?, device: wan_pipeline::loader::default_device() };
    let Some(mut computation) = prepare(&fixture, &opts)? else {
        bail!("fixture kind {} is not implemented yet", fixture.kind);
    };
    computation()?; // warm-up
    let mut times = Vec::with_capacity(args.runs);
    let mut last = None;
    for _ in 0..args.runs {
        let t = Instant::now();
        let out = computation()?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    let report = match last {
        Some(out) => compare(&fixture, &out)?,
        None => bail!("no run completed"),
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "bench {}: median={:.4} s min={:.4} s max={:.4} s max_abs_err={:.3e} peak_rss_mib={:.0}",
        fixture.name,
        median,
        times[0],
        times[times.len() - 1],
        report.max_abs_err,
        peak_rss_mib()
    );
    Ok(())
}
