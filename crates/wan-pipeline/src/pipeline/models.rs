//! A loaded Wan pipeline directory: every component the pipelines need, loaded once.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::fp8::WeightStorage;
use crate::image_encoder::ClipImageEncoder;
use crate::loader::read_json;
use crate::text_encoder::{Umt5Config, WanTextEncoder};
use crate::transformer::WanTransformer3DModel;
use crate::vae::AutoencoderKLWan;
use crate::{Error, Result};

/// What a pipeline directory can do, from its `model_index.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// `WanPipeline` (also serves video-to-video: `WanVideoToVideoPipeline` loads the same files).
    T2v,
    /// `WanImageToVideoPipeline`.
    I2v,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::T2v => "t2v",
            ModelKind::I2v => "i2v",
        }
    }
}

#[derive(Deserialize)]
struct ModelIndex {
    #[serde(rename = "_class_name")]
    class_name: String,
    /// Wan2.2 A14B: the fraction of the training timesteps above which the high-noise expert
    /// (`transformer`) runs, the low-noise one (`transformer_2`) below.
    #[serde(default)]
    boundary_ratio: Option<f64>,
    /// `["diffusers", "WanTransformer3DModel"]`, or `[null, null]` / absent for one transformer.
    #[serde(default)]
    transformer_2: Option<serde_json::Value>,
    /// `[null, null]` in Wan2.2 image-to-video (no CLIP); absent means "as the class has it".
    #[serde(default)]
    image_encoder: Option<serde_json::Value>,
}

/// Whether a `model_index.json` entry names a component (`["lib", "Class"]`, not `[null, null]`).
fn names_component(entry: &Option<serde_json::Value>) -> bool {
    match entry {
        Some(serde_json::Value::Array(parts)) => parts.first().is_some_and(|p| !p.is_null()),
        Some(serde_json::Value::Null) | None => false,
        Some(_) => true,
    }
}

/// The components a pipeline directory's `model_index.json` says it has beyond Wan2.1's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineLayout {
    pub kind: ModelKind,
    /// Wan2.2 A14B's second (low-noise) expert, and where the experts switch.
    pub boundary_ratio: Option<f64>,
    pub has_transformer_2: bool,
    /// Wan2.1 image-to-video has a CLIP image encoder; Wan2.2's has none.
    pub has_image_encoder: bool,
}

/// Reads `model_index.json` for the kind and the optional components.
pub fn read_layout(model_dir: &Path) -> Result<PipelineLayout> {
    let index = read_index(model_dir)?;
    let kind = kind_of(&index, model_dir)?;
    let has_transformer_2 = names_component(&index.transformer_2);
    let has_image_encoder = kind == ModelKind::I2v && (index.image_encoder.is_none() || names_component(&index.image_encoder));
    if has_transformer_2 != index.boundary_ratio.is_some() {
        return Err(Error::InvalidInput(format!(
            "{}: model_index.json has {} but {}: two experts need both transformer_2 and boundary_ratio",
            model_dir.display(),
            if has_transformer_2 { "transformer_2" } else { "boundary_ratio" },
            if has_transformer_2 { "no boundary_ratio" } else { "no transformer_2" },
        )));
    }
    if let Some(ratio) = index.boundary_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::InvalidInput(format!("{}: boundary_ratio must be within 0..=1, got {ratio}", model_dir.display())));
        }
    }
    Ok(PipelineLayout { kind, boundary_ratio: index.boundary_ratio, has_transformer_2, has_image_encoder })
}

/// Reads `model_index.json` and says which kind of Wan pipeline the directory holds.
/// Anything that is not a Wan diffusers pipeline is an error that says so.
pub fn detect_kind(model_dir: &Path) -> Result<ModelKind> {
    kind_of(&read_index(model_dir)?, model_dir)
}

fn read_index(model_dir: &Path) -> Result<ModelIndex> {
    let path = model_dir.join("model_index.json");
    if !path.is_file() {
        return Err(Error::MissingModelFile { path: model_dir.to_path_buf(), what: "model_index.json".into() });
    }
    read_json(&path)
}

fn kind_of(index: &ModelIndex, model_dir: &Path) -> Result<ModelKind> {
    match index.class_name.as_str() {
        "WanPipeline" | "WanVideoToVideoPipeline" => Ok(ModelKind::T2v),
        "WanImageToVideoPipeline" => Ok(ModelKind::I2v),
        other => Err(Error::InvalidInput(format!(
            "{} is a {other} directory, not a Wan diffusers pipeline (WanPipeline or WanImageToVideoPipeline)",
            model_dir.display()
        ))),
    }
}

/// Checks that every file a Wan pipeline of this directory's kind needs is present (configs,
/// tokenizer, and every weight shard an index names), without reading any weights.
pub fn check_complete(model_dir: &Path) -> Result<ModelKind> {
    Ok(check_complete_layout(model_dir)?.kind)
}

/// [`check_complete`], returning the whole layout it checked against.
pub fn check_complete_layout(model_dir: &Path) -> Result<PipelineLayout> {
    let layout = read_layout(model_dir)?;
    let mut files = vec!["tokenizer/tokenizer.json", "scheduler/scheduler_config.json"];
    let mut components = vec!["text_encoder", "transformer", "vae"];
    if layout.has_image_encoder {
        files.push("image_processor/preprocessor_config.json");
        components.push("image_encoder");
    }
    if layout.has_transformer_2 {
        components.push("transformer_2");
    }
    for file in files {
        if !model_dir.join(file).is_file() {
            return Err(Error::MissingModelFile { path: model_dir.to_path_buf(), what: file.into() });
        }
    }
    for component in components {
        let dir = model_dir.join(component);
        if !dir.join("config.json").is_file() {
            return Err(Error::MissingModelFile { path: model_dir.to_path_buf(), what: format!("{component}/config.json") });
        }
        crate::loader::safetensors_files(&dir)?;
    }
    Ok(layout)
}

/// The dtype each component computes in. The DiT's is the pipeline's (`dtype`); the others may
/// differ: users with little memory keep the 5.7B-parameter text encoder in bf16 while the DiT
/// runs in f32 on a CPU without bf16 arithmetic, and diffusers' docs recommend the VAE in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDtypes {
    pub transformer: DType,
    pub text_encoder: DType,
    pub vae: DType,
    pub image_encoder: DType,
    /// How the DiT blocks' Linears are held (`--weights fp8`: e4m3fn, computed in `transformer`).
    pub transformer_weights: WeightStorage,
}

impl ModelDtypes {
    /// Every component in `dtype`, the weights in it too.
    pub fn uniform(dtype: DType) -> Self {
        Self { transformer: dtype, text_encoder: dtype, vae: dtype, image_encoder: dtype, transformer_weights: WeightStorage::Compute }
    }

    /// From the command line's names: `dtype` for the DiT and every component not named, the
    /// text encoder's and the VAE's when given, and `weights` (`bf16` or `fp8`).
    pub fn from_names(dtype: &str, text_encoder: Option<&str>, vae: Option<&str>, weights: &str) -> Result<Self> {
        let dtype = crate::loader::parse_dtype(dtype)?;
        let component = |name: Option<&str>| name.map(crate::loader::parse_dtype).transpose();
        Ok(ModelDtypes {
            text_encoder: component(text_encoder)?.unwrap_or(dtype),
            vae: component(vae)?.unwrap_or(dtype),
            transformer_weights: WeightStorage::parse(weights)?,
            ..ModelDtypes::uniform(dtype)
        })
    }
}

/// Every component of one pipeline directory, on one device.
pub struct WanModels {
    pub dir: PathBuf,
    pub kind: ModelKind,
    /// The DiT's dtype (`dtypes.transformer`); the latents enter the DiT in it.
    pub dtype: DType,
    pub dtypes: ModelDtypes,
    pub device: Device,
    /// `None` when the pipeline was loaded without it ([`WanModels::load_without_text_encoder`]):
    /// its jobs then bring their prompt embeddings (see `pipeline::generate_with`).
    pub text_encoder: Option<WanTextEncoder>,
    /// The text encoder's config, known whether or not its weights are loaded.
    pub text_config: Umt5Config,
    pub transformer: WanTransformer3DModel,
    /// Wan2.2 A14B: the low-noise expert, run for the timesteps below `boundary_ratio` of the
    /// training schedule (`transformer` runs the others).
    pub transformer_2: Option<WanTransformer3DModel>,
    pub boundary_ratio: Option<f64>,
    pub vae: AutoencoderKLWan,
    /// Present for image-to-video models.
    pub image_encoder: Option<ClipImageEncoder>,
}

impl WanModels {
    /// Loads a diffusers Wan pipeline directory, every component in `dtype` on `device`
    /// (read tensor by tensor, never memory-mapped; see `loader`). Fails before loading anything
    /// if a component is missing.
    pub fn load(model_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(model_dir, ModelDtypes::uniform(dtype), device)
    }

    /// [`WanModels::load`] with a dtype per component.
    pub fn load_with(model_dir: &Path, dtypes: ModelDtypes, device: &Device) -> Result<Self> {
        Self::load_components(model_dir, dtypes, device, true)
    }

    /// Every component but the text encoder. A one-shot job (the `generate` command) encodes
    /// its prompts first, drops the text encoder, then loads the rest this way, so the 5.7B
    /// encoder and the DiT are never in memory together: the peak is the larger of the two,
    /// not their sum.
    pub fn load_without_text_encoder(model_dir: &Path, dtypes: ModelDtypes, device: &Device) -> Result<Self> {
        Self::load_components(model_dir, dtypes, device, false)
    }

    fn load_components(model_dir: &Path, dtypes: ModelDtypes, device: &Device, with_text_encoder: bool) -> Result<Self> {
        let layout = check_complete_layout(model_dir)?;
        let kind = layout.kind;
        let text_config = WanTextEncoder::read_config(model_dir)?;
        let text_encoder =
            if with_text_encoder { Some(WanTextEncoder::load(model_dir, dtypes.text_encoder, device)?) } else { None };
        let transformer =
            WanTransformer3DModel::load_stored(&model_dir.join("transformer"), dtypes.transformer, dtypes.transformer_weights, device)?;
        let transformer_2 = match layout.has_transformer_2 {
            true => Some(WanTransformer3DModel::load_stored(
                &model_dir.join("transformer_2"),
                dtypes.transformer,
                dtypes.transformer_weights,
                device,
            )?),
            false => None,
        };
        let vae = AutoencoderKLWan::load(&model_dir.join("vae"), dtypes.vae, device)?;
        let image_encoder = match layout.has_image_encoder {
            true => Some(ClipImageEncoder::load(model_dir, dtypes.image_encoder, device)?),
            false => None,
        };
        Ok(Self {
            dir: model_dir.to_path_buf(),
            kind,
            dtype: dtypes.transformer,
            dtypes,
            device: device.clone(),
            text_encoder,
            text_config,
            transformer,
            transformer_2,
            boundary_ratio: layout.boundary_ratio,
            vae,
            image_encoder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_models() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models")
    }

    #[test]
    fn tiny_models_are_complete_and_of_their_kind() {
        assert_eq!(check_complete(&shared_models().join("wan-tiny-t2v")).unwrap(), ModelKind::T2v);
        assert_eq!(check_complete(&shared_models().join("wan-tiny-i2v")).unwrap(), ModelKind::I2v);
    }

    #[test]
    fn without_its_text_encoder_a_pipeline_needs_the_jobs_embeddings() {
        let dir = shared_models().join("wan-tiny-t2v");
        let models = WanModels::load_without_text_encoder(&dir, ModelDtypes::uniform(DType::F32), &Device::Cpu).unwrap();
        assert!(models.text_encoder.is_none());
        assert_eq!(models.text_config.d_model, WanTextEncoder::read_config(&dir).unwrap().d_model);
        let params = crate::pipeline::GenerationParams::new("a fox");
        let err = crate::pipeline::stages::encode_prompt(&models, &params).unwrap_err().to_string();
        assert!(err.contains("without its text encoder"), "{err}");
        // The same embeddings, computed beforehand by the encoder alone, are what a job brings.
        let encoder = WanTextEncoder::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let embeddings = crate::pipeline::encode_prompt_with(&encoder, &params).unwrap();
        assert_eq!(embeddings.negative.is_some(), params.do_classifier_free_guidance());
    }

    #[test]
    fn a_directory_that_is_not_a_wan_pipeline_is_refused() {
        let err = check_complete(&shared_models().join("scheduler-flow-match-euler")).unwrap_err();
        assert!(err.to_string().contains("model_index.json"), "{err}");
        let dir = std::env::temp_dir().join(format!("wan-notwan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model_index.json"), r#"{"_class_name": "StableDiffusionPipeline"}"#).unwrap();
        let err = check_complete(&dir).unwrap_err().to_string();
        assert!(err.contains("StableDiffusionPipeline") && err.contains("not a Wan"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
