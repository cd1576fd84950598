//! Reading one component of a diffusers model directory: its `config.json` and its weights.
//!
//! A component directory (`transformer/`, `vae/`, `text_encoder/`, ...) holds its weights under
//! the standard names diffusers and transformers look for (one `diffusion_pytorch_model` /
//! `model` `.safetensors`, or the shards its `.safetensors.index.json` names); other safetensors
//! files beside them are not part of the component. The weights are read tensor by tensor with
//! positioned reads ([`streaming`]) and converted to the requested dtype as a layer asks for them,
//! so no second full copy of the checkpoint is ever held.

pub mod streaming;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads and parses `dir/file` as JSON.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

/// Reads `component_dir/config.json`.
pub fn read_config<T: DeserializeOwned>(component_dir: &Path) -> Result<T> {
    let path = component_dir.join("config.json");
    if !path.is_file() {
        return Err(Error::MissingModelFile { path: component_dir.to_path_buf(), what: "config.json".into() });
    }
    read_json(&path)
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::HashMap<String, String>,
}

/// The weight files diffusers and transformers look for, by their standard names, in the order
/// they try them. diffusers' `ModelMixin` treats a component as sharded as soon as its index
/// exists; transformers' `PreTrainedModel` takes `model.safetensors` before its index. Any other
/// `*.safetensors` in the directory (a LoRA, a variant, a stray download) is not a weight file.
const STANDARD_WEIGHTS: [(&str, bool); 4] = [
    ("diffusion_pytorch_model.safetensors.index.json", true),
    ("diffusion_pytorch_model.safetensors", false),
    ("model.safetensors", false),
    ("model.safetensors.index.json", true),
];

/// The safetensors files of one component, chosen as diffusers / transformers choose them: the
/// first standard name of [`STANDARD_WEIGHTS`] present (an index brings the shards it names).
/// A directory with none of those names falls back to its only `*.safetensors.index.json`, else
/// its only `*.safetensors` file; several candidates and no standard name is an error that says
/// which names are looked for.
pub fn safetensors_files(component_dir: &Path) -> Result<Vec<PathBuf>> {
    if !component_dir.is_dir() {
        return Err(Error::MissingModelFile { path: component_dir.to_path_buf(), what: "the component directory".into() });
    }
    for (name, is_index) in STANDARD_WEIGHTS {
        let path = component_dir.join(name);
        if path.is_file() {
            return if is_index { shards_of_index(component_dir, &path) } else { Ok(vec![path]) };
        }
    }
    let entries = std::fs::read_dir(component_dir).map_err(|e| Error::io(component_dir, e))?;
    let mut singles = Vec::new();
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(component_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors.index.json") {
            indexes.push(entry.path());
        } else if name.ends_with(".safetensors") {
            singles.push(entry.path());
        }
    }
    indexes.sort();
    singles.sort();
    let standard = "diffusion_pytorch_model.safetensors, model.safetensors or their *.safetensors.index.json";
    match (indexes.as_slice(), singles.as_slice()) {
        ([index], _) => shards_of_index(component_dir, index),
        ([], [single]) => Ok(vec![single.clone()]),
        ([], []) => Err(Error::MissingModelFile { path: component_dir.to_path_buf(), what: format!("weights ({standard})") }),
        _ => Err(Error::MissingModelFile {
            path: component_dir.to_path_buf(),
            what: format!("weights by a standard name ({standard}); found only several other safetensors files"),
        }),
    }
}

/// The shard files an `*.safetensors.index.json` names, each once, in name order; every one must
/// be a plain file name present beside the index.
fn shards_of_index(component_dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>> {
    let index: ShardIndex = read_json(index_path)?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    if shards.is_empty() {
        return Err(Error::MissingModelFile { path: index_path.to_path_buf(), what: "a weight_map naming at least one shard".into() });
    }
    let index_name = index_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut files = Vec::with_capacity(shards.len());
    for shard in shards {
        // Shard names come from a file on disk: refuse anything that is not a plain file name.
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(Error::MissingModelFile {
                path: index_path.to_path_buf(),
                what: format!("shard name {shard:?} is not a plain file name"),
            });
        }
        let path = component_dir.join(shard);
        if !path.is_file() {
            return Err(Error::MissingModelFile {
                path: component_dir.to_path_buf(),
                what: format!("shard {shard} (named by {index_name}) is missing"),
            });
        }
        files.push(path);
    }
    Ok(files)
}

/// A `VarBuilder` over the weights of one component (one file or the shards of an index),
/// converting each tensor to `dtype` as it is read: at most one copy of the component plus one
/// tensor is ever resident (see [`streaming`]).
pub fn var_builder(component_dir: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let files = safetensors_files(component_dir)?;
    let backend = streaming::StreamingSafetensors::open(&files)?;
    Ok(VarBuilder::from_backend(Box::new(backend), dtype, device.clone()))
}

/// The device to run on: the first CUDA device when built with `cuda` and one is present,
/// otherwise the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

/// Parses a dtype name as the command line and config accept it.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::InvalidInput(format!("dtype must be f32, bf16 or f16, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[PathBuf]) -> Vec<String> {
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn finds_single_file_and_rejects_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert!(safetensors_files(&dir.join("absent")).is_err());
        assert!(safetensors_files(dir).is_err());
        std::fs::write(dir.join("model.safetensors"), b"x").unwrap();
        assert_eq!(safetensors_files(dir).unwrap(), vec![dir.join("model.safetensors")]);
    }

    #[test]
    fn a_stray_safetensors_beside_the_standard_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("my-lora.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("diffusion_pytorch_model.fp16.safetensors"), b"x").unwrap();
        assert_eq!(names(&safetensors_files(dir).unwrap()), ["diffusion_pytorch_model.safetensors"]);
    }

    #[test]
    fn a_diffusers_index_names_its_shards_and_wins_over_strays() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(
            dir.join("diffusion_pytorch_model.safetensors.index.json"),
            br#"{"metadata": {}, "weight_map": {"a": "diffusion_pytorch_model-00002-of-00002.safetensors",
                 "b": "diffusion_pytorch_model-00001-of-00002.safetensors", "c": "diffusion_pytorch_model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("diffusion_pytorch_model-00001-of-00002.safetensors"), b"x").unwrap();
        // A missing shard named by the index is an incomplete model, with the shard's name.
        let err = safetensors_files(dir).unwrap_err();
        assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("diffusion_pytorch_model-00002-of-00002.safetensors") && msg.contains("index.json"), "{msg}");
        std::fs::write(dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("unrelated.safetensors"), b"x").unwrap();
        assert_eq!(
            names(&safetensors_files(dir).unwrap()),
            ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
        );
    }

    #[test]
    fn transformers_names_prefer_the_single_file_and_shard_names_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("model.safetensors.index.json"), br#"{"weight_map": {"a": "../evil.safetensors"}}"#).unwrap();
        assert!(safetensors_files(dir).unwrap_err().to_string().contains("plain file name"));
        std::fs::write(dir.join("model.safetensors"), b"x").unwrap();
        assert_eq!(names(&safetensors_files(dir).unwrap()), ["model.safetensors"]);
    }

    #[test]
    fn without_a_standard_name_only_an_unambiguous_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("weights.safetensors"), b"x").unwrap();
        assert_eq!(names(&safetensors_files(dir).unwrap()), ["weights.safetensors"]);
        std::fs::write(dir.join("other.safetensors"), b"x").unwrap();
        let msg = safetensors_files(dir).unwrap_err().to_string();
        assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
    }
}
