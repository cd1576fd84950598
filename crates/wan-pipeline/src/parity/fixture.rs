//! One fixture directory: its manifest, its input and expected output tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::loader::read_json;
use crate::{Error, Result};

/// `|actual - expected| <= atol + rtol * |expected|`, elementwise.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    name: String,
    kind: String,
    model: String,
    #[serde(default)]
    call: Value,
    tolerance: Tolerance,
    #[serde(default)]
    tolerance_per_tensor: HashMap<String, Tolerance>,
}

/// A loaded fixture directory.
pub struct Fixture {
    pub name: String,
    pub kind: String,
    pub dir: PathBuf,
    /// The model directory the manifest names, resolved against the fixture directory.
    pub model_dir: PathBuf,
    /// The manifest's `call` object: the arguments of the reference call.
    pub call: Value,
    pub tolerance: Tolerance,
    pub tolerance_per_tensor: HashMap<String, Tolerance>,
    pub inputs: HashMap<String, Tensor>,
    pub expected: HashMap<String, Tensor>,
}

impl Fixture {
    /// Reads `dir/manifest.json`, `dir/inputs.safetensors` and `dir/outputs.safetensors`
    /// (tensors on the CPU, in their stored dtypes).
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
        let load = |file: &str| -> Result<HashMap<String, Tensor>> {
            let path = dir.join(file);
            if !path.is_file() {
                return Ok(HashMap::new());
            }
            Ok(candle_core::safetensors::load(&path, &Device::Cpu)?)
        };
        Ok(Self {
            name: manifest.name,
            kind: manifest.kind,
            dir: dir.to_path_buf(),
            model_dir: dir.join(&manifest.model),
            call: manifest.call,
            tolerance: manifest.tolerance,
            tolerance_per_tensor: manifest.tolerance_per_tensor,
            inputs: load("inputs.safetensors")?,
            expected: load("outputs.safetensors")?,
        })
    }

    /// An input tensor by name.
    pub fn input(&self, name: &str) -> Result<&Tensor> {
        self.inputs
            .get(name)
            .ok_or_else(|| Error::Fixture(format!("{}: no input tensor {name:?}", self.name)))
    }

    /// An expected output tensor by name (for computations that need e.g. a shape from it).
    pub fn expected(&self, name: &str) -> Result<&Tensor> {
        self.expected
            .get(name)
            .ok_or_else(|| Error::Fixture(format!("{}: no expected tensor {name:?}", self.name)))
    }

    /// A field of the manifest's `call` object.
    pub fn call_field(&self, key: &str) -> Result<&Value> {
        self.call
            .get(key)
            .ok_or_else(|| Error::Fixture(format!("{}: manifest call has no {key:?}", self.name)))
    }

    /// The tolerance for one output tensor: its override if the manifest gives one.
    pub fn tolerance_for(&self, tensor: &str) -> Tolerance {
        self.tolerance_per_tensor.get(tensor).copied().unwrap_or(self.tolerance)
    }

    /// A file shipped beside the manifest (a PNG input, say).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Every fixture directory under `root` (a directory holding a `manifest.json`), sorted by name.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let path = entry.path();
        if path.join("manifest.json").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}
