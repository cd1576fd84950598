//! `wan-server`: the HTTP server and the command-line tool in one binary.

use anyhow::Result;
use clap::{Parser, Subcommand};
use wan_server::cli;

#[derive(Parser)]
#[command(name = "wan-server", version, about = "Wan video generation: local HTTP server and command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time one fixture's computation (after a warm-up) and print one line of figures.
    Bench(cli::bench::BenchArgs),
    /// Generate one video (text-, image- or video-to-video) to an mp4 file.
    Generate(cli::generate::GenerateArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => cli::bench::run(&args),
        Command::Generate(args) => cli::generate::run(&args),
    }
}
