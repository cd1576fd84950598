//! `wan-server plan`: the memory a job would need, from the model's configs and safetensors
//! headers alone (no weight is read), and whether it fits a budget.
//!
//! The same estimate the server refuses jobs with at admission (`--vram-budget`): the weights
//! per component at their load dtypes, each stage's working set, and the peak, which counts the
//! text encoder only while it encodes unless it is kept between jobs.

use anyhow::Result;
use wan_pipeline::memory::{self, human_bytes, JobShape, ModelShapes, WeightBytes};
use wan_pipeline::pipeline::{check_complete, ModelDtypes};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// A local diffusers model directory, or a hub repo id (org/name) in the Hugging Face cache.
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value_t = 832)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    #[arg(long, default_value_t = 81)]
    pub frames: usize,
    /// Guidance above 1 encodes and runs a negative prompt too.
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// The job encodes an input with the VAE (image- or video-to-video).
    #[arg(long)]
    pub encodes_input: bool,
    /// The DiT's dtype (f32 on the CPU, bf16 on a GPU), and every other component's unless set.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long)]
    pub text_encoder_dtype: Option<String>,
    #[arg(long)]
    pub vae_dtype: Option<String>,
    /// bf16 | fp8: how the DiT blocks' Linears are held.
    #[arg(long, default_value = "bf16")]
    pub weights: String,
    /// The text encoder stays loaded between jobs (`serve --keep-text-encoder`).
    #[arg(long)]
    pub keep_text_encoder: bool,
    /// The memory to fit in (e.g. 24GiB); without it, only the plan is printed.
    #[arg(long)]
    pub vram: Option<String>,
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let model_dir = wan_pipeline::hub_cache::resolve_model(&args.model)?;
    let kind = check_complete(&model_dir)?;
    let dtypes = ModelDtypes::from_names(&args.dtype, args.text_encoder_dtype.as_deref(), args.vae_dtype.as_deref(), &args.weights)?;
    let weights = WeightBytes::of_dir_with(&model_dir, kind, dtypes)?;
    let shapes = ModelShapes::of_dir(&model_dir, dtypes, args.keep_text_encoder)?;
    let job = JobShape {
        width: args.width,
        height: args.height,
        num_frames: args.frames,
        guidance: args.guidance > 1.0,
        encodes_input: args.encodes_input,
    };
    let estimate = memory::estimate_shapes(&shapes, weights, job);
    println!("plan for {} ({}), {}x{}, {} frames", model_dir.display(), kind.as_str(), args.width, args.height, args.frames);
    println!("weights (DiT {:?}, blocks' Linears {}):", dtypes.transformer, dtypes.transformer_weights.as_str());
    println!("  text_encoder   {:>10}  ({:?}, {})", human_bytes(weights.text_encoder), dtypes.text_encoder,
        if args.keep_text_encoder { "kept between jobs" } else { "loaded for the encoding only" });
    if weights.image_encoder > 0 {
        println!("  image_encoder  {:>10}  ({:?})", human_bytes(weights.image_encoder), dtypes.image_encoder);
    }
    println!("  transformer    {:>10}", human_bytes(weights.transformer));
    println!("  vae            {:>10}  ({:?})", human_bytes(weights.vae), dtypes.vae);
    println!("working sets:");
    println!("  text encode    {:>10}", human_bytes(estimate.text_encode));
    println!("  denoise step   {:>10}", human_bytes(estimate.denoise_step));
    if estimate.vae_encode > 0 {
        println!("  vae encode     {:>10}", human_bytes(estimate.vae_encode));
    }
    println!("  vae decode     {:>10}", human_bytes(estimate.vae_decode));
    println!("peak             {:>10}  ({} bytes)", human_bytes(estimate.peak()), estimate.peak());
    if let Some(vram) = &args.vram {
        let budget = memory::parse_bytes(vram)?;
        let verdict = if estimate.peak() <= budget { "fits" } else { "does not fit" };
        println!("{verdict} in {} ({} bytes)", human_bytes(budget), budget);
    }
    Ok(())
}
