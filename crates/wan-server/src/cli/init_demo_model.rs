//! `wan-server init-demo-model DIR`: writes a tiny random-weight Wan pipeline (noise, not pictures).

use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct InitDemoModelArgs {
    /// Directory to create (absent or empty), e.g. models/demo.
    pub dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &InitDemoModelArgs) -> Result<()> {
    let dir = crate::demo_model::write_demo_model(&args.dir, args.seed)?;
    println!("wrote a tiny random-weight Wan pipeline to {} (it generates noise, not pictures)", dir.display());
    Ok(())
}
