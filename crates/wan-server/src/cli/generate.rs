//! `wan-server generate`: one video from the command line, without the server.
//!
//! `--model` is a local diffusers directory or a hub repo id already in the Hugging Face cache.
//! `--image` makes it image-to-video, `--video` (with `--strength`) video-to-video. A progress bar
//! shows step, total and ETA; the mp4 is written under a temporary name and renamed when complete.
//! At the end it prints where the time went, one `key=value` line per stage on stderr
//! (`load_s`, `text_encode_s`, `prepare_s`, `steps_s`, `vae_decode_s`, `encode_mp4_s`), which
//! `scripts/bench-e2e.sh` reads, and the process's peak RSS (`peak_rss_mib`).
//!
//! The prompts are encoded first and the text encoder dropped before the DiT and the VAE load:
//! the 5.7B-parameter UMT5-XXL and the DiT are never in memory together.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use wan_pipeline::media::{self, MediaLimits, Mp4Writer, ResizeMode};
use wan_pipeline::pipeline::{draw_seed, encode_prompt_with, generate_with, Conditioning, Control, GenerationParams, ModelDtypes, WanModels};
use wan_pipeline::text_encoder::WanTextEncoder;

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
    /// Wan2.2 A14B: the guidance of the low-noise expert's steps (default: --guidance).
    #[arg(long)]
    pub guidance_2: Option<f64>,
    /// Overrides the scheduler's flow shift.
    #[arg(long)]
    pub shift: Option<f64>,
    /// -1 draws a random seed (printed).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// f32 or bf16: the DiT's dtype, and every other component's unless set below.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// The text encoder's dtype (f32, bf16, f16), e.g. bf16 to halve the UMT5-XXL's memory.
    #[arg(long, env = "WAN_TEXT_ENCODER_DTYPE")]
    pub text_encoder_dtype: Option<String>,
    /// The VAE's dtype (f32, bf16, f16); diffusers recommends f32 with a bf16 DiT.
    #[arg(long)]
    pub vae_dtype: Option<String>,
    /// bf16 | fp8: how the DiT blocks' Linears are held (fp8: float8 e4m3fn, widened to the
    /// DiT's dtype for each call, as diffusers' layerwise casting; about half a bf16 DiT).
    #[arg(long, env = "WAN_WEIGHTS", default_value = "bf16")]
    pub weights: String,
    /// auto | native | generic: the native CPU kernels, or candle's ops (what a GPU runs).
    #[arg(long, env = "WAN_KERNELS", default_value = "auto")]
    pub kernels: String,
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
    let dtypes = ModelDtypes::from_names(&args.dtype, args.text_encoder_dtype.as_deref(), args.vae_dtype.as_deref(), &args.weights)?;
    let kernels = args.kernels.parse::<wan_pipeline::backend::KernelChoice>()?;
    wan_pipeline::backend::set_kernel_choice(kernels);
    let device = args.device.parse::<wan_pipeline::device::DeviceChoice>()?.open()?;
    wan_pipeline::backend::check_choice(kernels, &device)?;
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
        guidance_scale_2: args.guidance_2,
        shift: args.shift,
        seed,
        max_sequence_length: 512,
    };
    params.check(16)?;

    eprintln!("loading {} ...", model_dir.display());
    eprintln!("kernels: {}", wan_pipeline::backend::describe(&device));
    wan_pipeline::pipeline::check_complete(&model_dir)?;
    let text_load = Instant::now();
    let text_encoder = WanTextEncoder::load(&model_dir, dtypes.text_encoder, &device)?;
    let mut load_s = text_load.elapsed().as_secs_f64();
    let text_started = Instant::now();
    let embeddings = encode_prompt_with(&text_encoder, &params)?;
    let text_encode_s = text_started.elapsed().as_secs_f64();
    drop(text_encoder);
    let rest_load = Instant::now();
    let models = WanModels::load_without_text_encoder(&model_dir, dtypes, &device)?;
    load_s += rest_load.elapsed().as_secs_f64();
    eprintln!("seed {seed}");

    let tmp = args.out.with_extension("mp4.part");
    let mut writer = Mp4Writer::create(&tmp, args.width as u32, args.height as u32, args.fps)?;
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] elapsed {elapsed} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = generate_with(
        &models,
        &params,
        &conditioning,
        Some(embeddings),
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
            let finishing = Instant::now();
            writer.finish()?;
            let t = video.times;
            let encode_mp4_s = (t.frames_out + finishing.elapsed()).as_secs_f64();
            eprintln!("load_s={load_s:.3}");
            eprintln!("text_encode_s={text_encode_s:.3}");
            eprintln!("prepare_s={:.3}", t.prepare_rest.as_secs_f64());
            eprintln!("steps_s={:.3}", t.steps.as_secs_f64());
            eprintln!("vae_decode_s={:.3}", t.vae_decode.as_secs_f64());
            eprintln!("encode_mp4_s={encode_mp4_s:.3}");
            if let Some(peak) = peak_rss_mib() {
                eprintln!("peak_rss_mib={peak:.0}");
            }
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

/// This process's peak resident memory (`VmHWM`) in MiB; `None` where /proc has no such line.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
