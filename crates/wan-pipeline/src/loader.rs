//! Reading one component of a diffusers model directory: its `config.json` and its weights.
//!
//! A component directory (`transformer/`, `vae/`, `text_encoder/`, ...) holds either one
//! `*.safetensors` file or several shards listed by a `*.safetensors.index.json`. The weights are
//! memory-mapped and converted to the requested dtype tensor by tensor when a layer asks for them,
//! so no second full copy of the checkpoint is ever held.

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

/// The safetensors files of one component: the shards named by an index if there is one,
/// otherwise the single `*.safetensors` file in the directory.
pub fn safetensors_files(component_dir: &Path) -> Result<Vec<PathBuf>> {
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
    if let Some(index_path) = indexes.first() {
        let index: ShardIndex = read_json(index_path)?;
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        let mut files = Vec::with_capacity(shards.len());
        for shard in shards {
            // Shard names come from a file on disk: refuse anything that is not a plain file name.
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(Error::MissingModelFile {
                    path: index_path.clone(),
                    what: format!("shard name {shard:?} is not a plain file name"),
                });
            }
            let path = component_dir.join(shard);
            if !path.is_file() {
                return Err(Error::MissingModelFile { path: component_dir.to_path_buf(), what: shard.clone() });
            }
            files.push(path);
        }
        return Ok(files);
    }
    match singles.len() {
        0 => Err(Error::MissingModelFile { path: component_dir.to_path_buf(), what: "*.safetensors".into() }),
        1 => Ok(singles),
        _ => Err(Error::MissingModelFile {
            path: component_dir.to_path_buf(),
            what: "an *.safetensors.index.json for the several *.safetensors files".into(),
        }),
    }
}

/// A `VarBuilder` over the memory-mapped weights of one component, converting to `dtype`.
pub fn var_builder(component_dir: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let files = safetensors_files(component_dir)?;
    // SAFETY: the files are mapped read-only; like every mmap user we rely on nobody truncating
    // the model files while the server runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
    Ok(vb)
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

    #[test]
    fn finds_single_file_and_rejects_missing_dir() {
        let dir = std::env::temp_dir().join(format!("wan-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(safetensors_files(&dir).is_err());
        std::fs::write(dir.join("model.safetensors"), b"x").unwrap();
        assert_eq!(safetensors_files(&dir).unwrap(), vec![dir.join("model.safetensors")]);
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            br#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        // The index names shards that do not exist: that is an incomplete model, not a panic.
        assert!(matches!(safetensors_files(&dir), Err(Error::MissingModelFile { .. })));
        std::fs::write(dir.join("model-00001-of-00002.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("model-00002-of-00002.safetensors"), b"x").unwrap();
        assert_eq!(safetensors_files(&dir).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
