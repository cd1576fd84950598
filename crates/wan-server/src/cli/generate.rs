//! `wan-server generate`: one video from the command line, without the server.
//!
//! `--model` is a local diffusers directory or a hub repo id already in the Hugging Face cache.
//! `--image` makes it image-to-video, `--video` (with `--strength`) video-to-video. A progress bar
//! shows step, total and ETA; the mp4 is written under a temporary name and renamed when complete.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use wan_pipeline::media::{self, MediaLimits, Mp4Writer, ResizeMode};
use wan_pipeline::pipeline::{draw_seed, generate, Conditioning, Control, GenerationParams, WanModels};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A local diffusers model directory, or a hub repo id (org/name) in the Hugging Face cache.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Image-to-video: the first frame.
    #[arg(long, conflicts_with = "video")]
    pub image: Option<PathBuf>,
    /// Video-to-video: the input video.
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Video-to-video: how much of the schedule to re-run (0..=1).
    #[arg(long, default_value_t = 0.8)]
    pub strength: f64,
    #[arg(long, default_value_t = 81)]
    pub frames: usize,
    #[arg(long, default_value_t = 16)]
    pub fps: u32,
    #[arg(long, default_value_t = 832)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Overrides the scheduler's flow shift.
    #[arg(long)]
    pub shift: Option<f64>,
    /// -1 draws a random seed (printed).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long, env = "WAN_DEVICE", default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let seed = match args.seed {
        -1 => draw_seed(),
        s if (0..=u32::MAX as i64).contains(&s) => s as u64,
        s => bail!("--seed must be -1 or within 0..=4294967295, got {s}"),
    };
    let model_dir = wan_pipeline::hub_cache::resolve_model(&args.model)?;
    let dtype = wan_pipeline::loader::parse_dtype(&args.dtype)?;
    let device = args.device.parse::<wan_pipeline::device::DeviceChoice>()?.open()?;
    let limits = MediaLimits::default();
    let conditioning = match (&args.image, &args.video) {
        (Some(image), None) => Conditioning::Image(media::read_image(image, &limits).with_context(|| format!("reading {}", image.display()))?),
        (None, Some(video)) => {
            let frames = media::read_video(video, args.width as u32, args.height as u32, args.frames, ResizeMode::Stretch, &limits)
                .with_context(|| format!("reading {}", video.display()))?
                .frames;
            Conditioning::Video { frames, strength: args.strength }
        }
        (None, None) => Conditioning::Text,
        (Some(_), Some(_)) => bail!("give --image or --video, not both"),
    };
    let params = GenerationParams {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        num_frames: match &conditioning {
            Conditioning::Video { frames, .. } => frames.len(),
            _ => args.frames,
        },
        num_inference_steps: args.steps,
        guidance_scale: args.guidance,
        shift: args.shift,
        seed,
        max_sequence_length: 512,
    };
    params.check(16)?;

    eprintln!("loading {} ...", model_dir.display());
    let models = WanModels::load(&model_dir, dtype, &device)?;
    eprintln!("seed {seed}");

    let tmp = args.out.with_extension("mp4.part");
    let mut writer = Mp4Writer::create(&tmp, args.width as u32, args.height as u32, args.fps)?;
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] elapsed {elapsed} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = generate(
        &models,
        &params,
        &conditioning,
        &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
            Control::Continue
        },
        &mut |frame| writer.push_frame(&frame),
    );
    bar.finish();
    match result {
        Ok(video) => {
            writer.finish()?;
            std::fs::rename(&tmp, &args.out).with_context(|| format!("renaming to {}", args.out.display()))?;
            println!(
                "wrote {} ({} frames, {}x{}, {} fps, seed {})",
                args.out.display(),
                video.frames_written,
                video.width,
                video.height,
                args.fps,
                video.seed
            );
            Ok(())
        }
        Err(e) => {
            drop(writer);
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}
