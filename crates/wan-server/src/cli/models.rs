//! `wan-server models`: the models found in the models directory and the hub cache.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::ServerConfig;
use crate::models::registry;

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[arg(long, env = "WAN_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    #[arg(long, env = "WAN_HUB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(args: &ModelsArgs) -> Result<()> {
    let cache = ServerConfig { hub_cache_dir: args.cache_dir.clone(), ..ServerConfig::default() }.hub_cache_dir();
    let found = registry::scan(&args.models_dir, &cache);
    if found.is_empty() {
        println!("no models in {} or {}", args.models_dir.display(), cache.display());
    }
    for m in found {
        println!(
            "{:<48} {:<11} {:<4} {:>10.1} MiB  {}  {}",
            m.id,
            m.provider,
            m.role.map(|r| r.as_str()).unwrap_or("-"),
            m.size_bytes as f64 / (1024.0 * 1024.0),
            if m.complete { "complete  " } else { "INCOMPLETE" },
            m.dir.display()
        );
    }
    Ok(())
}
