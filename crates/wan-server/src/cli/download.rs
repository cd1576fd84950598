//! `wan-server download REPO [--revision R]`: fetches a pipeline into the hub cache with a
//! progress line (bytes, rate, ETA) on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::ServerConfig;
use crate::models::hub::{download_repo, Downloads, HubConfig};

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// Hub repo id, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers.
    pub repo: String,
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Hub cache directory (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "WAN_HUB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub fn run(args: &DownloadArgs) -> Result<()> {
    let cache = ServerConfig { hub_cache_dir: args.cache_dir.clone(), ..ServerConfig::default() }.hub_cache_dir();
    let hub = HubConfig::from_env(cache);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let state = Downloads::foreground_state(&args.repo, &args.revision);
        let task = {
            let (hub, repo, rev, state) = (hub.clone(), args.repo.clone(), args.revision.clone(), state.clone());
            tokio::spawn(async move { download_repo(&hub, &repo, &rev, state).await })
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticker.tick().await;
            let p = state.progress();
            let pct = if p.bytes_total > 0 { 100.0 * p.bytes_done as f64 / p.bytes_total as f64 } else { 0.0 };
            let eta = p.eta_seconds.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "-".into());
            eprint!("\r{}: {:5.1}% {:.1}/{:.1} MiB {:.1} MiB/s ETA {}    ", args.repo, pct, mib(p.bytes_done), mib(p.bytes_total), mib(p.rate_bytes_per_s as u64), eta);
            let _ = std::io::stderr().flush();
            if task.is_finished() {
                break;
            }
        }
        eprintln!();
        match task.await? {
            Ok(dir) => {
                println!("{}", dir.display());
                Ok(())
            }
            Err(e) => bail!("{e}"),
        }
    })
}
