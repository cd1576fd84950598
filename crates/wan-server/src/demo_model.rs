//! A tiny random-weight Wan text-to-video pipeline in the real diffusers layout, so the server can
//! be tried on a machine with no network and no GPU. It produces noise, not pictures.
//!
//! The configs and the tokenizer are those of the tiny test model (committed under
//! `assets/demo-t2v/`, embedded at build time); `weights.json` lists every tensor's name and shape,
//! and the weights are drawn here from a seeded generator (norm scales set to 1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

/// (relative path, contents) of every non-weight file.
const FILES: &[(&str, &str)] = &[
    ("model_index.json", include_str!("../assets/demo-t2v/model_index.json")),
    ("scheduler/scheduler_config.json", include_str!("../assets/demo-t2v/scheduler/scheduler_config.json")),
    ("text_encoder/config.json", include_str!("../assets/demo-t2v/text_encoder/config.json")),
    ("tokenizer/special_tokens_map.json", include_str!("../assets/demo-t2v/tokenizer/special_tokens_map.json")),
    ("tokenizer/tokenizer.json", include_str!("../assets/demo-t2v/tokenizer/tokenizer.json")),
    ("tokenizer/tokenizer_config.json", include_str!("../assets/demo-t2v/tokenizer/tokenizer_config.json")),
    ("transformer/config.json", include_str!("../assets/demo-t2v/transformer/config.json")),
    ("vae/config.json", include_str!("../assets/demo-t2v/vae/config.json")),
];

/// Weight file -> tensor name -> shape.
const WEIGHTS: &str = include_str!("../assets/demo-t2v/weights.json");

#[derive(Debug, thiserror::Error)]
pub enum DemoModelError {
    #[error("{0} exists and is not empty (choose another directory)")]
    NotEmpty(String),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the embedded weight list is invalid: {0}")]
    Manifest(String),
    #[error("cannot serialise {file}: {reason}")]
    Serialize { file: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoModelError + '_ {
    move |source| DemoModelError::Io { path: path.display().to_string(), source }
}

/// Scale tensors (norms) start at 1, biases at 0, the rest small random values.
fn init_value(name: &str, rng: &mut impl Rng) -> f32 {
    let is_scale = name.ends_with("norm.weight") || name.contains("norm_") || name.contains("layer_norm") || name.ends_with(".gamma") || name.ends_with("final_layer_norm.weight");
    if is_scale {
        1.0
    } else if name.ends_with(".bias") {
        0.0
    } else {
        (rng.random::<f32>() * 2.0 - 1.0) * 0.05
    }
}

/// Writes the pipeline into `dir` (created; must be absent or empty). Written under a temporary
/// name beside it and renamed, so a half-written demo model is never found.
pub fn write_demo_model(dir: &Path, seed: u64) -> Result<PathBuf, DemoModelError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(DemoModelError::NotEmpty(dir.display().to_string()));
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".{}.partial-{}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (rel, text) in FILES {
        let p = tmp.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    let manifest: HashMap<String, HashMap<String, Vec<usize>>> = serde_json::from_str(WEIGHTS).map_err(|e| DemoModelError::Manifest(e.to_string()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut files: Vec<_> = manifest.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (file, tensors) in files {
        let mut names: Vec<_> = tensors.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = names
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let bytes = (0..n).flat_map(|_| init_value(&name, &mut rng).to_le_bytes()).collect();
                (name, shape, bytes)
            })
            .collect();
        let views = data
            .iter()
            .map(|(name, shape, bytes)| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DemoModelError::Serialize { file: file.clone(), reason: e.to_string() })?;
        let p = tmp.join(&file);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::tensor::serialize_to_file(views, Some(meta), &p).map_err(|e| DemoModelError::Serialize { file: file.clone(), reason: e.to_string() })?;
    }
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::registry;

    #[test]
    fn demo_model_is_a_complete_t2v_pipeline_with_the_tiny_shapes() {
        let root = std::env::temp_dir().join(format!("wan-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = write_demo_model(&root.join("demo"), 7).unwrap();
        let found = registry::resolve(dir.to_str().unwrap(), Path::new("/nonexistent"), Path::new("/nonexistent"), true).unwrap();
        assert_eq!(registry::check_loadable(&found).unwrap(), crate::generator::Role::T2v);
        let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/wan-tiny-t2v");
        for f in ["transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"] {
            let a = std::fs::read(dir.join(f)).unwrap();
            let b = std::fs::read(shared.join(f)).unwrap();
            let (a, b) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
            let mut na: Vec<_> = a.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect();
            let mut nb: Vec<_> = b.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect();
            na.sort();
            nb.sort();
            assert_eq!(na, nb, "{f}");
        }
        assert!(matches!(write_demo_model(&dir, 7), Err(DemoModelError::NotEmpty(_))));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
