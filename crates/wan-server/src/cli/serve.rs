//! `wan-server serve [flags]`: the HTTP server until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Result;

use crate::config::{ServeArgs, ServerConfig};
use crate::wan_adapter::WanPipelineFactory;

pub fn run(args: &ServeArgs) -> Result<()> {
    let config = ServerConfig::resolve(args)?;
    init_logging(&config.log_format);
    wan_pipeline::backend::set_kernel_choice(config.kernel_choice()?);
    let factory = WanPipelineFactory::new(config.device_choice()?, config.vram_budget_bytes()?)?
        .with_text_encoder_dtype(config.text_encoder_dtype()?)
        .with_weights(config.weight_storage()?)
        .with_text_encoder_kept(config.keep_text_encoder);
    actix_web::rt::System::new().block_on(crate::server::run(config, Arc::new(factory)))?;
    Ok(())
}

/// Text or JSON logs on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
