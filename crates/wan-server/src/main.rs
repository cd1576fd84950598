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
    /// Serve the HTTP API until SIGINT/SIGTERM.
    Serve(wan_server::config::ServeArgs),
    /// Download a diffusers Wan pipeline from the Hugging Face hub into the hub cache.
    Download(cli::download::DownloadArgs),
    /// List the models in the models directory and the hub cache.
    Models(cli::models::ModelsArgs),
    /// Write a tiny random-weight Wan pipeline (makes noise, for trying the server offline).
    InitDemoModel(cli::init_demo_model::InitDemoModelArgs),
    /// Time one fixture's computation (after a warm-up) and print one line of figures.
    Bench(cli::bench::BenchArgs),
    /// Generate one video (text-, image- or video-to-video) to an mp4 file.
    Generate(cli::generate::GenerateArgs),
    /// Print the memory a job would need (weights per component, each stage's working set, the
    /// peak) from the model's configs alone, and whether it fits --vram.
    Plan(cli::plan::PlanArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        cli::serve::init_logging("text");
    }
    match cli.command {
        Command::Serve(args) => cli::serve::run(&args),
        Command::Download(args) => cli::download::run(&args),
        Command::Models(args) => cli::models::run(&args),
        Command::InitDemoModel(args) => cli::init_demo_model::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Generate(args) => cli::generate::run(&args),
        Command::Plan(args) => cli::plan::run(&args),
    }
}
