//! The models the server knows: diffusers Wan pipelines in the hub cache and directories under
//! `models/`, each with whether every file it needs is present, its size and its role.
//!
//! "Complete" is judged from the files on disk, never from a record of a download: the hub cache
//! only links a file into `snapshots/` once it is fully written, so a pipeline whose every needed
//! file is present can be loaded, and one with any file missing cannot.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::generator::Role;

/// Why a model reference cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {0} not found: give a directory, a name under the models directory, or a hub repo id that was downloaded (POST /api/v1/models/download)")]
    NotFound(String),
    #[error("model {id} is not a Wan diffusers pipeline: {reason}")]
    NotWan { id: String, reason: String },
    #[error("model {id} is incomplete: {missing} is missing (download it again to finish it)")]
    Incomplete { id: String, missing: String },
}

/// What `model_index.json` says about a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineIndex {
    pub class_name: String,
    /// Component directories with the class each holds.
    pub components: Vec<(String, String)>,
}

impl PipelineIndex {
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("model_index.json is not JSON: {e}"))?;
        let obj = v.as_object().ok_or("model_index.json is not an object")?;
        let class_name = obj.get("_class_name").and_then(Value::as_str).ok_or("model_index.json has no _class_name")?.to_string();
        let mut components = Vec::new();
        for (name, entry) in obj {
            if name.starts_with('_') {
                continue;
            }
            // A component is `[library, class]`; `[null, null]` marks an absent optional one.
            if let Some([_, Value::String(class)]) = entry.as_array().map(Vec::as_slice) {
                components.push((name.clone(), class.clone()));
            }
        }
        Ok(PipelineIndex { class_name, components })
    }

    /// t2v / i2v from the pipeline class; `None` when it is no Wan pipeline.
    pub fn role(&self) -> Option<Role> {
        match self.class_name.as_str() {
            "WanImageToVideoPipeline" => Some(Role::I2v),
            "WanPipeline" | "WanVideoToVideoPipeline" => Some(Role::T2v),
            _ => None,
        }
    }
}

/// Components whose class holds no weights (tokenizers, schedulers, processors).
fn holds_weights(class: &str) -> bool {
    !["Tokenizer", "TokenizerFast", "Scheduler", "Processor", "FeatureExtractor"].iter().any(|s| class.ends_with(s))
}

/// A `.safetensors` name that is no variant (`x.fp16.safetensors`) of the main weights.
fn is_main_safetensors(file: &str) -> bool {
    file.strip_suffix(".safetensors").is_some_and(|stem| !stem.contains('.'))
}

/// Whether a repo file (relative path) is one a diffusers pipeline needs, given its components.
pub fn is_needed_file(path: &str, index: Option<&PipelineIndex>) -> bool {
    if path == "model_index.json" {
        return true;
    }
    let Some((dir, file)) = path.split_once('/') else {
        // A repo with no model_index.json: its top-level configs and main weights.
        return index.is_none() && (file_is_config(path) || is_main_safetensors(path));
    };
    if file.contains('/') {
        return false;
    }
    match index {
        Some(idx) if !idx.components.iter().any(|(c, _)| c == dir) => false,
        _ => file_is_config(file) || is_main_safetensors(file) || file.ends_with(".safetensors.index.json") || file.ends_with(".model") || file.ends_with(".txt"),
    }
}

fn file_is_config(file: &str) -> bool {
    file.ends_with(".json")
}

/// The first needed file missing from a pipeline directory, if any.
pub fn first_missing(dir: &Path) -> Result<Option<String>, String> {
    let index_path = dir.join("model_index.json");
    let Ok(text) = std::fs::read_to_string(&index_path) else { return Ok(Some("model_index.json".into())) };
    let index = PipelineIndex::parse(&text)?;
    for (comp, class) in &index.components {
        let cdir = dir.join(comp);
        if !cdir.is_dir() {
            return Ok(Some(format!("{comp}/")));
        }
        let required: &[&str] = if class.ends_with("Tokenizer") || class.ends_with("TokenizerFast") {
            &["tokenizer_config.json"]
        } else if class.ends_with("Scheduler") {
            &["scheduler_config.json"]
        } else if class.ends_with("Processor") || class.ends_with("FeatureExtractor") {
            &["preprocessor_config.json"]
        } else {
            &["config.json"]
        };
        for f in required {
            if !cdir.join(f).exists() {
                return Ok(Some(format!("{comp}/{f}")));
            }
        }
        if class.ends_with("Tokenizer") || class.ends_with("TokenizerFast") {
            if !cdir.join("tokenizer.json").exists() && !cdir.join("spiece.model").exists() {
                return Ok(Some(format!("{comp}/tokenizer.json")));
            }
        }
        if holds_weights(class) {
            if let Some(missing) = missing_weights(&cdir)? {
                return Ok(Some(format!("{comp}/{missing}")));
            }
        }
    }
    Ok(None)
}

/// The weights of one component: every shard its index names, or one main `.safetensors`.
fn missing_weights(cdir: &Path) -> Result<Option<String>, String> {
    let entries: Vec<String> = std::fs::read_dir(cdir)
        .map_err(|e| format!("cannot read {}: {e}", cdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(index_file) = entries.iter().find(|f| f.ends_with(".safetensors.index.json")) {
        let p = cdir.join(index_file);
        let Ok(text) = std::fs::read_to_string(&p) else { return Ok(Some(index_file.clone())) };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
        let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| format!("{} has no weight_map", p.display()))?;
        for shard in map.values().filter_map(Value::as_str) {
            if shard.contains('/') || !cdir.join(shard).exists() {
                return Ok(Some(shard.to_string()));
            }
        }
        return Ok(None);
    }
    if entries.iter().any(|f| is_main_safetensors(f) && cdir.join(f).exists()) {
        Ok(None)
    } else {
        Ok(Some("*.safetensors".into()))
    }
}

/// Bytes of every file under `dir` (following the hub cache's symlinks to blobs).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => dir_size(&p),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        })
        .sum()
}

/// One model found on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundModel {
    /// `org/name` for a hub repo, the directory name for a local model.
    pub id: String,
    pub provider: &'static str,
    /// The directory holding it (hub cache root or models directory).
    pub cache_dir: PathBuf,
    /// The pipeline directory (a hub snapshot or the local directory).
    pub dir: PathBuf,
    pub complete: bool,
    pub size_bytes: u64,
    pub role: Option<Role>,
}

fn describe(id: String, provider: &'static str, cache_dir: &Path, dir: PathBuf) -> FoundModel {
    let complete = matches!(first_missing(&dir), Ok(None));
    let role = std::fs::read_to_string(dir.join("model_index.json")).ok().and_then(|t| PipelineIndex::parse(&t).ok()).and_then(|i| i.role());
    FoundModel { id, provider, cache_dir: cache_dir.to_path_buf(), size_bytes: dir_size(&dir), complete, role, dir }
}

/// The snapshot directory a hub cache ref points at, if the ref exists.
pub fn hub_snapshot(cache_dir: &Path, repo_id: &str, revision: &str) -> Option<PathBuf> {
    let repo_dir = wan_pipeline::hub_cache::repo_cache_dir(cache_dir, repo_id);
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    if commit.is_empty() || commit.contains('/') || commit.contains("..") {
        return None;
    }
    Some(repo_dir.join("snapshots").join(commit))
}

/// Every Wan pipeline under the models directory and in the hub cache.
pub fn scan(models_dir: &Path, hub_cache: &Path) -> Vec<FoundModel> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(models_dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let dir = e.path();
            if dir.join("model_index.json").is_file() {
                found.push(describe(e.file_name().to_string_lossy().into_owned(), "local", models_dir, dir));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(hub_cache) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("models--") else { continue };
            let Some((org, repo)) = rest.split_once("--") else { continue };
            let id = format!("{org}/{repo}");
            let Some(dir) = hub_snapshot(hub_cache, &id, "main") else { continue };
            if dir.join("model_index.json").is_file() {
                found.push(describe(id, "huggingface", hub_cache, dir));
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// Finds a model by reference: an existing directory, a name under `models_dir`, or a hub repo
/// id (optionally `@revision`) whose snapshot is in the cache. Paths are only followed when
/// `allow_paths` (the command line); over HTTP a model is a name under `models_dir` or a repo id.
pub fn resolve(reference: &str, models_dir: &Path, hub_cache: &Path, allow_paths: bool) -> Result<FoundModel, ModelError> {
    let as_path = Path::new(reference);
    if allow_paths && as_path.join("model_index.json").is_file() {
        let name = as_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| reference.to_string());
        let parent = as_path.parent().unwrap_or(Path::new("."));
        return Ok(describe(name, "local", parent, as_path.to_path_buf()));
    }
    let is_plain_name = !reference.is_empty() && !reference.contains(['/', '\\']) && reference != "." && reference != "..";
    if is_plain_name && models_dir.join(reference).join("model_index.json").is_file() {
        return Ok(describe(reference.to_string(), "local", models_dir, models_dir.join(reference)));
    }
    let (repo, revision) = reference.split_once('@').unwrap_or((reference, "main"));
    if is_repo_id(repo) {
        if let Some(dir) = hub_snapshot(hub_cache, repo, revision) {
            return Ok(describe(repo.to_string(), "huggingface", hub_cache, dir));
        }
    }
    Err(ModelError::NotFound(reference.to_string()))
}

/// `org/name` with the characters the hub allows.
pub fn is_repo_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty() && p.len() <= 96 && p != "." && p != ".." && !p.starts_with('-') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(s.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}

/// Checks a found model can be loaded for serving: a Wan pipeline, complete. Gives its role.
pub fn check_loadable(model: &FoundModel) -> Result<Role, ModelError> {
    let text = std::fs::read_to_string(model.dir.join("model_index.json"))
        .map_err(|_| ModelError::NotWan { id: model.id.clone(), reason: "it has no model_index.json".into() })?;
    let index = PipelineIndex::parse(&text).map_err(|reason| ModelError::NotWan { id: model.id.clone(), reason })?;
    let role = index.role().ok_or_else(|| ModelError::NotWan {
        id: model.id.clone(),
        reason: format!("its pipeline class is {}, not WanPipeline or WanImageToVideoPipeline", index.class_name),
    })?;
    match first_missing(&model.dir) {
        Ok(None) => Ok(role),
        Ok(Some(missing)) => Err(ModelError::Incomplete { id: model.id.clone(), missing }),
        Err(reason) => Err(ModelError::NotWan { id: model.id.clone(), reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models").join(name)
    }

    #[test]
    fn tiny_models_are_complete_with_their_roles() {
        let t2v = resolve(shared("wan-tiny-t2v").to_str().unwrap(), Path::new("/nonexistent"), Path::new("/nonexistent"), true).unwrap();
        assert!(t2v.complete);
        assert_eq!(check_loadable(&t2v).unwrap(), Role::T2v);
        let i2v = resolve(shared("wan-tiny-i2v").to_str().unwrap(), Path::new("/nonexistent"), Path::new("/nonexistent"), true).unwrap();
        assert_eq!(check_loadable(&i2v).unwrap(), Role::I2v);
        assert!(t2v.size_bytes > 1_000_000);
    }

    #[test]
    fn needed_files_follow_the_components() {
        let idx = PipelineIndex::parse(&std::fs::read_to_string(shared("wan-tiny-t2v").join("model_index.json")).unwrap()).unwrap();
        assert!(is_needed_file("transformer/diffusion_pytorch_model.safetensors", Some(&idx)));
        assert!(is_needed_file("transformer/diffusion_pytorch_model.safetensors.index.json", Some(&idx)));
        assert!(!is_needed_file("transformer/diffusion_pytorch_model.fp16.safetensors", Some(&idx)));
        assert!(!is_needed_file("transformer_2/config.json", Some(&idx)), "null component");
        assert!(!is_needed_file("assets/demo.mp4", Some(&idx)));
        assert!(!is_needed_file("README.md", Some(&idx)));
        assert!(is_needed_file("tokenizer/spiece.model", Some(&idx)));
    }

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"));
        for bad in ["", "a", "a/b/c", "../x", "a/..", "a b/c", "/x"] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }
}
